"""Write training checkpoints atomically; resume only from complete ones.

Upstream defects (mmengine 0.10):

* ``mmengine/runner/checkpoint.py``, ``save_checkpoint``, writes
  ``epoch_N.pth`` in place (``LocalBackend.put``: ``open(path, 'wb')``
  then one write): a process killed while saving (SIGKILL, out of memory,
  a pre-empted job) leaves a truncated ``epoch_N.pth``.
* ``mmengine/hooks/checkpoint_hook.py``, ``CheckpointHook.
  _save_checkpoint_with_step``, writes ``last_checkpoint`` with
  ``open(path, 'w')``, which empties it first; a kill there leaves it
  empty or holding half a path. It also deletes the oldest checkpoint
  (``max_keep_ckpts``) *before* saving the new one: with
  ``max_keep_ckpts=1`` a kill during the save leaves no checkpoint at all,
  and ``last_checkpoint`` names the deleted one.
* ``Runner.load_or_resume`` then resumes from an empty path or from a
  truncated or missing file, and fails with a traceback from deep inside
  torch (``PytorchStreamReader failed reading zip archive``).

The fix:

* ``LocalBackend.put``/``put_text`` (what ``save_checkpoint``, ``dump`` and
  the logger hook write local files with) write a temporary file in the
  same folder, flush it to disk and rename it over the target
  (:func:`psenet_plugin.structures.io.atomic_open`). Targets that exist
  and are not regular files (``/dev/null``, a FIFO) are written as before.
* ``open`` inside ``mmengine.hooks.checkpoint_hook`` (used there only for
  ``last_checkpoint``) writes the same way.
* ``CheckpointHook._save_checkpoint_with_step`` deletes the checkpoints
  that ``max_keep_ckpts`` drops only after the new checkpoint and
  ``last_checkpoint`` are written (``_save_best_checkpoint`` likewise: the
  previous best checkpoint goes once the new one is saved).
* Resuming (``find_latest_checkpoint`` as the Runner calls it, and
  ``Runner.resume``) refuses an empty ``last_checkpoint``, one naming a
  missing file, and a missing, empty or truncated checkpoint with one
  :class:`~psenet_plugin.errors.CorruptFileError` naming the file.

A kill at any moment now leaves the previous checkpoint and
``last_checkpoint`` whole (and at worst a hidden ``.<name>.*.partial``
file, never read, safe to delete).
"""
import builtins
import os.path as osp

from mmengine.fileio.backends.local_backend import LocalBackend
from mmengine.hooks import checkpoint_hook
from mmengine.runner import runner as runner_module

_upstream_put = LocalBackend.put
_upstream_put_text = LocalBackend.put_text
_Hook = checkpoint_hook.CheckpointHook
_upstream_save_with_step = _Hook._save_checkpoint_with_step
_upstream_save_best = _Hook._save_best_checkpoint
_upstream_find_latest = runner_module.find_latest_checkpoint
_upstream_resume = runner_module.Runner.resume


def _writes_in_place(filepath) -> bool:
    """Targets that a rename would not update: existing non-regular files."""
    path = str(filepath)
    return osp.exists(path) and not osp.isfile(path)


def put(self, obj: bytes, filepath) -> None:
    """``LocalBackend.put``, through a temporary file and a rename."""
    if _writes_in_place(filepath):
        return _upstream_put(self, obj, filepath)
    from ..structures.io import atomic_open
    with atomic_open(str(filepath), 'wb') as f:
        f.write(obj)


def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
    """``LocalBackend.put_text``, through a temporary file and a rename."""
    if _writes_in_place(filepath):
        return _upstream_put_text(self, obj, filepath, encoding)
    from ..structures.io import atomic_open
    with atomic_open(str(filepath), 'w', encoding=encoding) as f:
        f.write(obj)


def _hook_open(file, mode='r', *args, **kwargs):
    """``open`` as ``checkpoint_hook`` sees it: atomic for plain writes."""
    if mode in ('w', 'wt', 'wb') and not args and not _writes_in_place(file):
        from ..structures.io import atomic_open
        return atomic_open(str(file), mode, **kwargs)
    return builtins.open(file, mode, *args, **kwargs)


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` wait for :meth:`commit`;
    everything else is the wrapped backend's."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self._pending = []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def remove(self, path) -> None:
        self._pending.append((self._backend.remove, path))

    def rmtree(self, path) -> None:
        self._pending.append((self._backend.rmtree, path))

    def commit(self, keep) -> None:
        """Delete what was asked for, except the paths in ``keep``."""
        for remove, path in self._pending:
            if path not in keep:
                remove(path)
        self._pending = []


def _saved_paths(hook) -> set:
    """The checkpoints the hook points to now (latest and best)."""
    paths = {getattr(hook, 'last_ckpt', None),
             getattr(hook, 'best_ckpt_path', None)}
    paths.update((getattr(hook, 'best_ckpt_path_dict', None) or {}).values())
    return paths


def _deferring_removals(upstream):
    """``upstream`` (a CheckpointHook method that deletes old checkpoints,
    then saves), deleting only after the save (and ``last_checkpoint``)."""

    def method(self, *args, **kwargs):
        backend = getattr(self, 'file_backend', None)
        if backend is None:
            return upstream(self, *args, **kwargs)
        deferred = _DeferredRemoval(backend)
        self.file_backend = deferred
        try:
            result = upstream(self, *args, **kwargs)
        finally:
            self.file_backend = backend
        deferred.commit(_saved_paths(self))
        return result

    method.__name__ = upstream.__name__
    method.__doc__ = upstream.__doc__
    method.__wrapped__ = upstream
    return method


def _is_local(path: str) -> bool:
    return '://' not in path


def find_latest_checkpoint(path: str):
    """mmengine's ``find_latest_checkpoint``, refusing an empty
    ``last_checkpoint`` or one that names a missing local file."""
    from ..errors import CorruptFileError
    last = _upstream_find_latest(path)
    if last is None:
        return None
    save_file = osp.join(path, 'last_checkpoint')
    hint = ('resume from a checkpoint file of the work dir with --resume '
            'PATH (or delete last_checkpoint to start over)')
    if not last:
        raise CorruptFileError(
            f'{save_file} is empty; it should name the checkpoint to resume '
            f'from; {hint}')
    if _is_local(last) and not osp.isfile(last):
        raise CorruptFileError(f'{save_file} names {last!r}, which does not '
                               f'exist; {hint}')
    return last


def resume(self, filename: str, *args, **kwargs):
    """``Runner.resume`` from a complete checkpoint only."""
    if isinstance(filename, str) and _is_local(filename):
        from ..structures.io import check_torch_file
        check_torch_file(filename, 'checkpoint to resume from')
    return _upstream_resume(self, filename, *args, **kwargs)


resume.__wrapped__ = _upstream_resume


def apply() -> None:
    LocalBackend.put = put
    LocalBackend.put_text = put_text
    checkpoint_hook.open = _hook_open
    _Hook._save_checkpoint_with_step = _deferring_removals(
        _upstream_save_with_step)
    _Hook._save_best_checkpoint = _deferring_removals(_upstream_save_best)
    runner_module.find_latest_checkpoint = find_latest_checkpoint
    runner_module.Runner.resume = resume
