"""What the command-line tools share: config loading with clear errors, the
mmpretrain/mmrazor conventions for CLI options, and one-line error output.

The tools in ``tools/`` follow mmpretrain's ``tools/train.py`` and
``tools/test.py``: a config path, ``--work-dir``, ``--resume``, ``--amp``,
``--cfg-options``, ``--launcher``; the work dir defaults to
``work_dirs/<config name>``.
"""
import argparse
import difflib
import glob
import os
import os.path as osp
import sys
from copy import deepcopy
from typing import Callable, Optional

from mmengine.config import Config, ConfigDict, DictAction

from .datasets import check_datasets_prepared
from .errors import ConfigError, PSENetError

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--work-dir``, ``--cfg-options``, ``--launcher`` and
    ``--local-rank``, as in mmpretrain's tools."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config: key=value pairs, e.g. '
        'train_cfg.max_epochs=2 or model.num_subnets=4; lists as '
        'key="[a,b]" (quotes needed, no spaces)')
    parser.add_argument(
        '--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch (torch >= 2) passes --local-rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


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
    return Config.fromfile(path)


def check_checkpoint(path: str) -> None:
    """The CHECKPOINT argument of a tool must be an existing file."""
    if not osp.isfile(path):
        raise ConfigError(f'checkpoint {path!r} does not exist')


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
    dataloaders the run reads."""
    check_datasets_prepared(cfg, run)


def run(main: Callable[[], None]) -> None:
    """Run a tool's ``main``; print input errors as one line, exit code 2."""
    try:
        main()
    except PSENetError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
