"""What the command-line tools share: config loading with clear errors, the
mmpretrain/mmrazor conventions for CLI options, and one-line error output.

The tools in ``tools/`` follow mmpretrain's ``tools/train.py`` and
``tools/test.py``: a config path, ``--work-dir``, ``--resume``, ``--amp``,
``--cfg-options``, ``--launcher``; the work dir defaults to
``work_dirs/<config name>``.
"""
import argparse
import contextlib
import datetime
import difflib
import errno
import glob
import inspect
import json
import os
import os.path as osp
import re
import sys
from copy import deepcopy
from typing import Callable, Iterator, Optional

from mmengine.config import Config, ConfigDict, DictAction

from .datasets.checks import check_dataset_files, check_datasets_prepared
from .errors import (ConfigError, CorruptFileError, DataError, PSENetError,
                     WorkDirError)

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction`` that refuses an item without ``=`` with
    one clear error (mmengine's fails unpacking it, with a traceback)."""

    def __call__(self, parser, namespace, values, option_string=None):
        option = option_string or '--cfg-options'
        for item in values or ():
            if '=' not in item or item.startswith('='):
                raise ConfigError(
                    f'{option} {item!r}: each item is key=value, e.g. '
                    'train_cfg.max_epochs=2 or model.num_subnets=4 (lists '
                    'as key="[a,b]", no spaces)')
            try:
                super().__call__(parser, namespace, [item], option_string)
            except (RecursionError, AssertionError, ValueError) as error:
                raise ConfigError(
                    f'{option} {item!r}: the value cannot be parsed; '
                    'accepted: a number, a string, True/False/None, or a '
                    'list/tuple as "[a,b]"/"(a,b)" (no spaces, no dicts: '
                    'set a dict key by key, e.g. '
                    'train_cfg.constraints_range.params="(0.5,0.6)")'
                ) from error


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--work-dir``, ``--cfg-options``, ``--launcher`` and
    ``--local-rank``, as in mmpretrain's tools."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=CfgOptionsAction,
        help='override settings of the config: key=value pairs, e.g. '
        'train_cfg.max_epochs=2 or model.num_subnets=4; lists as '
        'key="[a,b]" (quotes needed, no spaces)')
    parser.add_argument(
        '--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch (torch >= 2) passes --local-rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def merge_cfg_options(cfg: Config, options: Optional[dict]) -> None:
    """Merge ``--cfg-options`` into ``cfg``; a key that cannot be set (a
    dict key below a value that is not a dict, a list index out of range)
    is one :class:`ConfigError`."""
    if not options:
        return
    try:
        cfg.merge_from_dict(options)
    except (TypeError, KeyError, AttributeError) as error:
        text = _one_line(error).strip('"')
        text = text.split(' You may set `_delete_')[0]
        raise ConfigError(f'--cfg-options: {text}') from error


def _config_suggestions(path: str) -> str:
    here = osp.dirname(osp.dirname(osp.abspath(__file__)))
    known = [
        osp.relpath(p, here)
        for p in glob.glob(osp.join(here, 'configs', '**', '*.py'),
                           recursive=True) if '_base_' not in p
    ]
    close = difflib.get_close_matches(path, known, n=3, cutoff=0.5)
    if close:
        return ' Did you mean: ' + ', '.join(close) + '?'
    return ' The configs shipped with psenet_plugin are under configs/.'


def load_config(path: str) -> Config:
    """Load a config file.

    Raises:
        ConfigError: the file does not exist or is not a Python/YAML/JSON
            config.
    """
    if not osp.isfile(path):
        raise ConfigError(f'config file {path!r} does not exist.' +
                          _config_suggestions(path))
    if osp.splitext(path)[1] not in ('.py', '.yml', '.yaml', '.json'):
        raise ConfigError(f'config file {path!r}: accepted extensions are '
                          '.py, .yml, .yaml and .json')
    try:
        return Config.fromfile(path)
    except PSENetError:
        raise
    except SyntaxError as error:
        # mmengine wraps the parser's error; the original names the line.
        cause = error.__cause__ or error.__context__ or error
        if not isinstance(cause, SyntaxError):
            cause = error
        where = f'{cause.filename or path}, line {cause.lineno}' \
            if cause.lineno else (cause.filename or path)
        raise ConfigError(
            f'config file {path!r} is not valid Python: {cause.msg} '
            f'({where}); a config is a Python file of key = value '
            'assignments') from error
    except (NameError, KeyError, AttributeError, ImportError,
            FileNotFoundError, ValueError, TypeError) as error:
        raise ConfigError(
            f'config file {path!r} cannot be loaded: '
            f'{type(error).__name__}: {_one_line(error)}') from error


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines()]
    return ' '.join(line for line in lines if line)[:500]


def check_checkpoint(path: str) -> None:
    """The CHECKPOINT argument of a tool must be an existing file."""
    if not osp.isfile(path):
        raise ConfigError(f'checkpoint {path!r} does not exist')


def read_checkpoint(path: str) -> dict:
    """The state dict of the checkpoint at ``path`` (``weights_only``
    loading, on the CPU).

    Raises:
        CorruptFileError: the file is truncated, not a torch checkpoint, or
            holds no state dict.
    """
    import torch

    from .structures.io import load_torch_file
    checkpoint = load_torch_file(path)
    state = checkpoint.get('state_dict', checkpoint) \
        if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise CorruptFileError(
            f'checkpoint {path!r} holds no state dict of tensors; '
            'accepted: a checkpoint written by tools/train.py')
    return {re.sub(r'^module\.', '', k): v for k, v in state.items()}


def check_checkpoint_fits(model,
                          path: str,
                          config_path: str,
                          state: Optional[dict] = None) -> None:
    """Refuse a checkpoint that does not hold ``model``'s weights:
    mmengine's ``load_from`` loads non-strictly, so a checkpoint of another
    model (a plain mmpretrain classifier, a supernet of another width)
    would otherwise only log warnings and leave the model at its random
    initialisation.

    Args:
        model (nn.Module): the model the checkpoint is for (a wrapper is
            unwrapped).
        path (str): the checkpoint.
        config_path (str): the config, for the message.
        state (dict, optional): the checkpoint's state dict, if read
            already (:func:`read_checkpoint`).

    Raises:
        CorruptFileError: the checkpoint cannot be read.
        ConfigError: it lacks weights of ``model`` or holds them in other
            shapes; the message names the first one.
    """
    from mmengine.model import is_model_wrapper
    if is_model_wrapper(model):
        model = model.module
    if state is None:
        state = read_checkpoint(path)
    expected = model.state_dict()
    for key, value in expected.items():
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            raise ConfigError(
                f'checkpoint {path!r} does not fit the model of '
                f'{config_path}: {key!r} has shape '
                f'{tuple(state[key].shape)} in the checkpoint and '
                f'{tuple(value.shape)} in the model (trained with another '
                'width, e.g. widen_factor, or another number of classes?); '
                'accepted: a checkpoint trained from this config')
    missing = [k for k in expected if k not in state]
    if missing:
        hint = ''
        if any(k.startswith(('backbone.', 'head.', 'neck.')) for k in state) \
                and any(k.startswith('architecture.') for k in expected):
            hint = (' (its keys have no "architecture." prefix: a plain '
                    'mmpretrain classifier, not a supernet?)')
        elif any(k.startswith('architecture.') for k in state) and \
                not any(k.startswith('architecture.') for k in expected):
            hint = (' (its keys start with "architecture.": a supernet '
                    'checkpoint? export the subnet first, tools/export.py)')
        raise ConfigError(
            f'checkpoint {path!r} does not fit the model of {config_path}: '
            f'{len(missing)} of the model\'s {len(expected)} weights are '
            f'missing from it, e.g. {missing[0]!r}{hint}; accepted: a '
            'checkpoint trained from this config (tools/train.py)')


def set_work_dir(cfg: Config, config_path: str,
                 work_dir: Optional[str]) -> None:
    """CLI > config file > ``work_dirs/<config name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])


def set_launcher(cfg: Config, launcher: str, local_rank: int = 0) -> None:
    """Record the launcher. Without a GPU, distributed runs use the gloo
    backend, and DDP wraps the model without ``device_ids`` (mmengine's
    Runner passes ``device_ids=[LOCAL_RANK]`` by default, which torch's DDP
    rejects for a CPU model)."""
    import torch
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)
    cfg.launcher = launcher
    if launcher != 'none' and not torch.cuda.is_available():
        env_cfg = cfg.setdefault('env_cfg', ConfigDict())
        env_cfg.setdefault('dist_cfg', ConfigDict())
        env_cfg.dist_cfg.backend = 'gloo'
        if cfg.get('model_wrapper_cfg') is None:
            cfg.model_wrapper_cfg = ConfigDict(
                type='MMDistributedDataParallel',
                broadcast_buffers=False,
                find_unused_parameters=cfg.get('find_unused_parameters',
                                               False))
        cfg.model_wrapper_cfg.device_ids = None


def set_amp(cfg: Config) -> None:
    """Switch the optimizer wrapper to mmengine's ``AmpOptimWrapper``."""
    import torch
    if not torch.cuda.is_available():
        raise ConfigError('--amp needs a GPU: mmengine\'s AmpOptimWrapper '
                          'trains on gpu, npu, mlu or musa devices only')
    if cfg.get('optim_wrapper') is None:
        raise ConfigError('--amp needs an `optim_wrapper` in the config; '
                          'this config has none (is it a training config?)')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume`` alone: the latest checkpoint of the work dir;
    ``--resume PATH``: that checkpoint."""
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        if not osp.isfile(resume):
            raise ConfigError(f'--resume {resume!r}: no such checkpoint file')
        cfg.resume = True
        cfg.load_from = resume


def set_dataloader_defaults(cfg: Config, no_pin_memory: bool = False,
                            no_persistent_workers: bool = False) -> None:
    """mmpretrain's dataloader defaults (pinned memory on GPU machines,
    persistent workers), under what the config says, minus the combination
    torch rejects (persistent workers with ``num_workers=0``). Call it after
    ``--cfg-options`` are merged."""
    import torch
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(field, None)
        if loader is None:
            continue
        merged = ConfigDict(
            pin_memory=torch.cuda.is_available(),
            persistent_workers=True,
            collate_fn=dict(type='default_collate'))
        merged.update(deepcopy(loader))
        if no_pin_memory:
            merged.pin_memory = False
        if no_persistent_workers or not merged.get('num_workers', 0):
            merged.persistent_workers = False
        cfg[field] = merged


def check_config(cfg: Config, run: str = 'train') -> None:
    """Checks that name the config key at fault before mmengine builds
    anything; ``run`` (``'train'``, ``'test'``, ``'search'``) says which
    dataloaders the run reads: their folders exist, every image an
    annotation file lists exists and its label is below the model's
    ``num_classes``."""
    check_datasets_prepared(cfg, run)
    check_dataset_files(cfg, run)
    from .models.psenet import check_sync_bn
    check_sync_bn(cfg)


# building

_UNEXPECTED = re.compile(
    r"(?P<cls>[\w.]+)\.__init__\(\) got an unexpected keyword argument "
    r"'(?P<key>\w+)'")
_MISSING = re.compile(r"(?P<cls>[\w.]+)\.__init__\(\) missing \d+ required "
                      r"(?:positional|keyword-only) arguments?: (?P<keys>.*)")
_UNREGISTERED = re.compile(r"(?P<type>\S+) is not in the (?P<reg>\S+) "
                           r"registry")


def _built_class(error: BaseException):
    """The class mmengine's registry was building when ``error`` rose
    (``obj_cls`` of the innermost ``build_from_cfg`` frame), or None."""
    found, tb = None, error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == 'build_from_cfg' and \
                'obj_cls' in tb.tb_frame.f_locals:
            found = tb.tb_frame.f_locals['obj_cls']
        tb = tb.tb_next
    return found


def _config_key(node, cls_name: str, key: str, path: str = '') -> Optional[
        str]:
    """The config path of ``key`` in a dict of type ``cls_name``."""
    if isinstance(node, dict):
        kind = node.get('type')
        name = kind.__name__ if inspect.isclass(kind) else str(kind or '')
        if name.split('.')[-1] == cls_name and key in node:
            return f'{path}.{key}' if path else key
        for child_key, child in node.items():
            found = _config_key(child, cls_name, key,
                                f'{path}.{child_key}' if path else child_key)
            if found:
                return found
    elif isinstance(node, (list, tuple)):
        for i, child in enumerate(node):
            found = _config_key(child, cls_name, key, f'{path}[{i}]')
            if found:
                return found
    return None


def translate_build_error(error: BaseException, cfg) -> Optional[ConfigError]:
    """A :class:`ConfigError` naming the config key for an error mmengine's
    registry raises on a config typo (an unknown or missing argument, an
    unregistered type), or None for any other error."""
    text = str(error)
    match = _UNEXPECTED.search(text) if isinstance(error, TypeError) \
        else None
    if match:
        cls_name, key = match['cls'].split('.')[-1], match['key']
        accepted = []
        cls = _built_class(error)
        if cls is not None and inspect.isclass(cls):
            accepted = [
                name for name, p in
                inspect.signature(cls.__init__).parameters.items()
                if name != 'self' and p.kind not in (p.VAR_POSITIONAL,
                                                     p.VAR_KEYWORD)
            ]
        where = _config_key(cfg.to_dict() if hasattr(cfg, 'to_dict') else
                            cfg, cls_name, key) or key
        close = difflib.get_close_matches(key, accepted, n=1)
        return ConfigError(
            f'{where}: {cls_name} has no argument {key!r}' +
            (f'; did you mean {close[0]!r}?' if close else '') +
            (f' accepted: {", ".join(accepted)}' if accepted else ''))
    match = _MISSING.search(text) if isinstance(error, TypeError) else None
    if match:
        return ConfigError(f'{match["cls"].split(".")[-1]} needs '
                           f'{match["keys"]} in its config dict')
    match = _UNREGISTERED.search(text) if isinstance(error, KeyError) \
        else None
    if match:
        return ConfigError(
            f'type={match["type"]!r} is not in the {match["reg"]} registry:'
            ' a typo, or a module not imported (custom_imports)?')
    return None


def build_runner(cfg: Config):
    """``Runner.from_cfg`` (or the config's ``runner_type``), with config
    typos reported as one :class:`ConfigError` naming the key."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    try:
        if 'runner_type' not in cfg:
            return Runner.from_cfg(cfg)
        return RUNNERS.build(cfg)
    except (TypeError, KeyError) as error:
        translated = translate_build_error(error, cfg)
        if translated is None:
            raise
        raise translated from error


_UNREADABLE_IMAGE = re.compile(r'failed to load image: (\S+)')


@contextlib.contextmanager
def data_errors() -> Iterator[None]:
    """Report an image that cannot be decoded (truncated, not an image) as
    one :class:`DataError` naming the file, instead of mmcv's assertion
    deep inside a dataloader worker."""
    try:
        yield
    except Exception as error:
        # A worker's error quotes its traceback (the assert's source line
        # too): the path is in the last match.
        paths = [
            path for path in _UNREADABLE_IMAGE.findall(str(error))
            if not path.startswith('{')
        ]
        if not paths:
            raise
        raise DataError(
            f'image {paths[-1]} cannot be decoded (truncated, or not an '
            'image file): replace or delete it (and its line in the '
            'annotation file); the checkpoints written so far are kept'
        ) from error


# the work dir

LOCK_NAME = '.psenet_work_dir.lock'


def _global_rank(launcher: str) -> int:
    if launcher == 'none':
        return 0
    for name in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK'):
        if os.environ.get(name, '').isdigit():
            return int(os.environ[name])
    return 0


def _lock_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or '{}')
        return (f'process {info["pid"]} ({info.get("command", "?")}, '
                f'started {info.get("started", "?")})')
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 'another process (its lock file is being written)'


@contextlib.contextmanager
def work_dir_lock(work_dir: str, launcher: str = 'none') -> Iterator[None]:
    """Hold ``<work_dir>/.psenet_work_dir.lock`` while a training or search
    runs, so that a second one in the same work dir is refused instead of
    interleaving its checkpoints or search state with the first's.

    The lock is an ``fcntl.flock`` on a file that holds the PID, the command
    and the start time; the kernel releases it when the process ends, so a
    lock file left by a killed process is taken over. Only the global rank
    0 of a distributed run takes it.

    Raises:
        WorkDirError: the work dir cannot be created or written, or another
            process holds its lock (named by PID, command and start time).
    """
    if _global_rank(launcher) != 0:
        yield
        return
    import fcntl
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as error:
        raise WorkDirError(
            f'work dir {work_dir!r} cannot be created ({error.strerror}); '
            'accepted: a folder you can write to (--work-dir, or the '
            "config's work_dir)") from error
    path = osp.join(work_dir, LOCK_NAME)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise WorkDirError(
                f'work dir {work_dir!r} is not writable ({error.strerror}); '
                'accepted: a folder you can write to (--work-dir, or the '
                "config's work_dir)") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise WorkDirError(
                f'work dir {work_dir} is in use by {holder}; wait for it to '
                'end, or use another --work-dir')
        except OSError as error:  # a file system without flock
            os.close(fd)
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP,
                                   errno.ENOSYS):
                raise
            print(f'warning: work dir {work_dir} cannot be locked '
                  f'({error.strerror}): nothing stops a second run in it',
                  file=sys.stderr)
            yield
            return
        # The file may have been removed (and recreated) by the previous
        # holder between our open and our lock: lock the current one.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                dict(
                    pid=os.getpid(),
                    command=' '.join([osp.basename(sys.argv[0])] +
                                     sys.argv[1:2]),
                    started=datetime.datetime.now().isoformat(
                        sep=' ', timespec='seconds'))).encode())
        yield
    finally:
        try:
            os.remove(path)
        except OSError:
            pass
        os.close(fd)


def _quiet_opencv() -> None:
    """OpenCV prints its decoder warnings (a truncated PNG) to stderr from
    C++; the tools report such a file in their own one-line error."""
    if 'OPENCV_LOG_LEVEL' in os.environ:
        return
    try:
        import cv2
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except (ImportError, AttributeError):
        pass


def run(main: Callable[[], None]) -> None:
    """Run a tool's ``main``; print input errors as one line, exit code 2."""
    _quiet_opencv()
    try:
        main()
    except PSENetError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
