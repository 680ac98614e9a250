"""Atomic file writes: a reader (or a crash) never sees a half-written file,
and the previous version stays intact until the new one is complete. The
files get the permissions ``open()`` would give them (``0o666`` minus the
umask, or the mode of the file they replace).

:func:`staged_folder` does the same for a whole folder of outputs (an
export), and :func:`check_torch_file` is the cheap test that a checkpoint
file is complete before anything loads it."""
import contextlib
import json
import os
import os.path as osp
import shutil
import stat
import tempfile
import zipfile
from typing import Any, Iterable, Iterator

#: Suffix of the temporary files beside a file being written. A process
#: killed while writing leaves one behind (``.<name>.<random>.partial``):
#: never a file anything reads, safe to delete.
PARTIAL_SUFFIX = '.partial'


def umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: str) -> int:
    """The mode ``open(path, 'w')`` leaves ``path`` with: that of the file it
    replaces, else ``0o666`` minus the umask."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~umask()


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write to; on success it is
    renamed to ``path``, on failure removed (``path`` is left as it was).

    A ``path`` that is a symbolic link keeps the link: the file it points
    to is replaced."""
    path = osp.realpath(path)
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    mode = new_file_mode(path)
    fd, tmp = tempfile.mkstemp(
        prefix='.' + osp.basename(path) + '.',
        suffix=PARTIAL_SUFFIX,
        dir=folder)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'w', **kwargs) -> Iterator:
    """``open(path, mode)`` for writing, atomically: the file object writes
    to a temporary file, flushed to disk and renamed to ``path`` when the
    ``with`` block ends without an error."""
    if mode not in ('w', 'wt', 'wb'):
        raise ValueError(f"atomic_open: mode {mode!r}; accepted: 'w', 'wt', "
                         "'wb'")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    with atomic_open(path, 'w') as f:
        f.write(text)


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


@contextlib.contextmanager
def staged_folder(path: str, replaces: Iterable[str] = ()) -> Iterator[str]:
    """Yield an empty staging folder beside ``path`` to write a whole set
    of files into; when the ``with`` block ends without an error the
    staging folder replaces ``path`` (two renames: the old folder is
    moved aside, the new one moved in, then the old one deleted), on an
    error it is deleted and ``path`` is left as it was. Either way no
    staging folder is left behind. A ``path`` that is a symbolic link keeps
    the link: the folder it points to is replaced.

    Args:
        path (str): the folder to write.
        replaces (Iterable[str]): the names of the entries an existing
            ``path`` may hold (what an earlier run wrote); a folder holding
            anything else is refused, never deleted.

    Raises:
        ConfigError: ``path`` is not a folder, or holds entries outside
            ``replaces``.
        WorkDirError: ``path`` cannot be written (permissions, a missing or
            read-only file system, a full disk).
    """
    from ..errors import PSENetError, WorkDirError
    check_output_folder(path, replaces)
    target = osp.realpath(path)
    staging = _make_staging(path, target)
    try:
        yield staging
        _swap_in(staging, target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, PSENetError):
            raise WorkDirError(
                f'writing output folder {path!r} failed: '
                f'{describe_os_error(error)}; its previous contents are '
                'unchanged') from None
        raise


def check_output_folder(path: str, replaces: Iterable[str] = ()) -> None:
    """Check, before any work and without creating anything, that
    :func:`staged_folder` can write ``path``: it is new, empty or holds only
    ``replaces``, and its nearest existing parent folder is writable.

    Raises:
        ConfigError: ``path`` is not a folder, or holds other entries.
        WorkDirError: ``path`` cannot be written.
    """
    from ..errors import ConfigError
    target = osp.realpath(path)
    if osp.exists(target) and not osp.isdir(target):
        raise ConfigError(f'output folder {path!r} exists and is not a '
                          'folder')
    if osp.isdir(target):
        foreign = sorted(set(os.listdir(target)) - set(replaces))
        if foreign:
            raise ConfigError(
                f'output folder {path!r} holds entries that this tool did '
                f'not write ({", ".join(foreign[:5])}'
                f'{" ..." if len(foreign) > 5 else ""}); the folder is '
                'replaced as a whole, so it must be new, empty or an '
                'earlier output of the same kind: choose another folder')
    ancestor = nearest_existing_folder(osp.dirname(target),
                                       f'output folder {path!r}')
    _make_staging(path, osp.join(ancestor, osp.basename(target)), probe=True)


def nearest_existing_folder(folder: str, what: str) -> str:
    """The nearest existing folder at or above ``folder`` (where the
    missing ones will be made).

    Raises:
        WorkDirError: the nearest existing path is a file (``what`` names
            the output in the message).
    """
    from ..errors import WorkDirError
    while not osp.exists(folder) and osp.dirname(folder) != folder:
        folder = osp.dirname(folder)
    if not osp.isdir(folder):
        raise WorkDirError(f'{what} cannot be written: {folder!r} is a '
                           'file, not a folder')
    return folder


def _make_staging(path: str, target: str, probe: bool = False) -> str:
    """An empty folder beside ``target``, with the mode ``target`` has (or
    a new folder would get); with ``probe``, made and removed at once."""
    from ..errors import WorkDirError
    parent, name = osp.split(target)
    nearest_existing_folder(parent, f'output folder {path!r}')
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(
            prefix=f'.{name}.', suffix='.staging', dir=parent)
        if probe:
            os.rmdir(staging)
            return staging
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except OSError:
            mode = 0o777 & ~umask()
        os.chmod(staging, mode)
    except OSError as error:
        raise WorkDirError(f'output folder {path!r} cannot be written: '
                           f'{describe_os_error(error)}') from None
    return staging


def describe_os_error(error: OSError) -> str:
    """``'No space left on device (/path)'``: an OSError in a line."""
    reason = error.strerror or str(error)
    name = error.filename
    return f'{reason} ({name})' if name else reason


def _swap_in(staging: str, target: str) -> None:
    """Move ``staging`` to ``target``, replacing a folder there."""
    if not osp.exists(target):
        os.rename(staging, target)
        return
    parent, name = osp.split(target)
    old = tempfile.mkdtemp(prefix=f'.{name}.', suffix='.old', dir=parent)
    os.rename(target, old)  # onto the empty folder just made
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_torch_file(path: str, what: str = 'checkpoint') -> None:
    """Raise unless ``path`` is a complete file of ``torch.save`` (a zip
    archive with its central directory, which is written last: a
    truncated file has none). Files of torch's legacy format (a pickle)
    are let through. Reads a few bytes, not the file.

    Raises:
        CorruptFileError: the file is missing, empty or truncated, or not
            a torch file.
    """
    from ..errors import CorruptFileError
    if not osp.isfile(path):
        raise CorruptFileError(f'{what} {path!r} does not exist')
    size = osp.getsize(path)
    if size == 0:
        raise CorruptFileError(f'{what} {path!r} is empty (0 bytes); '
                               'accepted: a file written by torch.save')
    with open(path, 'rb') as f:
        head = f.read(4)
    if head == b'PK\x03\x04':
        if zipfile.is_zipfile(path):
            return
        raise CorruptFileError(
            f'{what} {path!r} is truncated ({size} bytes, the end of its zip '
            'archive is missing: was its writing interrupted?); accepted: a '
            'complete file written by torch.save')
    if head[:1] == b'\x80':  # torch's legacy (pickle) format
        return
    raise CorruptFileError(f'{what} {path!r} is not a torch checkpoint '
                           '(neither a zip archive nor a pickle); accepted: '
                           'a file written by torch.save')


def load_torch_file(path: str,
                    accepted: str = 'a checkpoint written by tools/train.py'):
    """``torch.load`` of ``path`` on the CPU (``weights_only``), one error
    line for a file that cannot be read.

    Raises:
        CorruptFileError: truncated, or not a torch checkpoint; the message
            names the file and ``accepted``.
    """
    import torch

    from ..errors import CorruptFileError
    try:
        return torch.load(path, map_location='cpu')
    except Exception as error:
        raise CorruptFileError(
            f'checkpoint {path!r} cannot be read ({first_sentence(error)}): '
            'is it truncated (a copy or a save that did not finish) or not '
            f'a torch checkpoint? accepted: {accepted}') from error


def first_sentence(error: BaseException) -> str:
    """``Type: first sentence of the first line`` of an error."""
    text = str(error).strip().splitlines()
    first = text[0].split('. ')[0][:200] if text else ''
    return f'{type(error).__name__}: {first}'
