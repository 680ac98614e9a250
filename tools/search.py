"""Search a trained PSE-Net supernet for the best subnet under constraints.

    python tools/search.py CONFIG CHECKPOINT [--work-dir DIR] [--resume [STATE]]
        [--flops-target MFLOPS [--flops-tolerance 0.05]]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

CONFIG has a ``PriorEvolutionSearchLoop`` (or mmrazor's
``EvolutionSearchLoop``) as ``train_cfg``, or, with ``train_cfg=None``,
mmrazor's ``AutoSlimGreedySearchLoop`` as ``test_cfg`` (mmrazor's own
AutoSlim search configs); CHECKPOINT is the supernet (a PSENet's recorded
prior is used by default). Outputs in the work dir: best_subnet.json,
best_fix_subnet.yaml, candidates.json/.csv, pareto.png, prior.json and the
resumable search state (mmrazor's loops: best_fix_subnet.yaml, or
FLOPS_<n>M.yaml per target; tools/export.py reads all of them). The work
dir is locked while the search runs: a second search (or training) in it
is refused.
"""
import argparse
import json
import os.path as osp
import sys

try:
    import psenet_plugin  # noqa: F401  compat fixes, plugin registration
    from psenet_plugin import cli
except ImportError as e:  # unsupported or missing dependencies
    sys.exit(f'error: {e}')


def parse_args():
    parser = argparse.ArgumentParser(description='Search a PSE-Net supernet')
    parser.add_argument('config', help='search config file path')
    parser.add_argument('checkpoint', help='supernet checkpoint')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        help='resume the search from this state file; without a path, '
        'from <work_dir>/search_state.json')
    parser.add_argument(
        '--flops-target',
        type=float,
        help='search for this many MFLOPs (sets '
        'train_cfg.constraints_range.flops to target +- tolerance; FLOPs '
        'counted by train_cfg.flops_convention)')
    parser.add_argument(
        '--flops-tolerance',
        type=float,
        default=0.05,
        help='relative half-width of the FLOPs range (default 0.05)')
    cli.add_common_args(parser)
    return parser.parse_args()


def _loop_type(loop) -> str:
    """The type of a loop config, as a string ('' for None)."""
    kind = loop.get('type', '') if isinstance(loop, dict) else ''
    return kind.__name__ if isinstance(kind, type) else str(kind or '')


def search_loop(cfg, config_path: str) -> str:
    """Which loop of the config searches: ``'train'`` (``train_cfg``, e.g.
    ``PriorEvolutionSearchLoop``, mmrazor's ``EvolutionSearchLoop``) or
    ``'test'`` (``test_cfg`` with ``train_cfg=None``: mmrazor's
    ``AutoSlimGreedySearchLoop``)."""
    from psenet_plugin.errors import ConfigError
    train, test = cfg.get('train_cfg'), cfg.get('test_cfg')
    if 'Search' in _loop_type(train):
        return 'train'
    if not train and 'Search' in _loop_type(test):
        return 'test'
    what = (f'train_cfg.type={_loop_type(train)!r}' if train else
            'train_cfg is None' + (
                f' and test_cfg.type={_loop_type(test)!r}' if test else
                ' and so is test_cfg'))
    raise ConfigError(
        f'{config_path}: {what}: no search loop; accepted: train_cfg.type='
        'mmrazor.PriorEvolutionSearchLoop (see '
        'configs/demo/pse_mbv2_mnist_search.py) or '
        'mmrazor.EvolutionSearchLoop, or train_cfg=None with test_cfg.type='
        'mmrazor.AutoSlimGreedySearchLoop')


def main():
    from psenet_plugin.errors import ConfigError

    args = parse_args()
    cli.check_checkpoint(args.checkpoint)
    cfg = cli.load_config(args.config)
    loop = search_loop(cfg, args.config)
    if loop == 'test' and args.resume is not None:
        raise ConfigError(
            f'--resume: {args.config} searches with test_cfg.type='
            f'{_loop_type(cfg.test_cfg)!r}, whose state is a pickle file '
            '(loading one can run code); accepted: --resume with '
            'train_cfg.type=mmrazor.PriorEvolutionSearchLoop')
    cli.set_launcher(cfg, args.launcher, args.local_rank)
    cli.set_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.flops_target is not None:
        if args.flops_target <= 0 or not 0 <= args.flops_tolerance < 1:
            raise ConfigError('--flops-target must be > 0 and '
                              '--flops-tolerance in [0, 1)')
        t, tol = args.flops_target, args.flops_tolerance
        if loop == 'test':  # AutoSlimGreedySearchLoop: FLOPs targets
            cfg.test_cfg.target_flops = (t, )
        else:
            cfg.train_cfg.constraints_range = dict(flops=(t * (1 - tol),
                                                          t * (1 + tol)))
    if args.resume is not None:
        state = osp.join(cfg.work_dir, 'search_state.json') \
            if args.resume == 'auto' else args.resume
        if not osp.isfile(state):
            raise ConfigError(f'--resume: no search state at {state!r}')
        cfg.train_cfg.resume_from = state
    cli.merge_cfg_options(cfg, args.cfg_options)
    cli.set_dataloader_defaults(cfg)
    cli.check_config(cfg, 'search' if loop == 'train' else 'test')

    with cli.work_dir_lock(cfg.work_dir, args.launcher):
        weights = cli.read_checkpoint(args.checkpoint)  # truncated: fail fast
        runner = cli.build_runner(cfg)
        # mmengine loads ``load_from`` non-strictly: a checkpoint of
        # another model would leave the supernet at random weights.
        cli.check_checkpoint_fits(runner.model, args.checkpoint, args.config,
                                  weights)
        del weights
        with cli.data_errors():
            if loop == 'train':
                runner.train()
            else:
                runner.test()
    if runner.rank == 0:
        _report(cfg.work_dir)


def _report(work_dir: str) -> None:
    """Print what the search found and wrote."""
    import glob
    best = osp.join(work_dir, 'best_subnet.json')
    if osp.isfile(best):
        with open(best) as f:
            record = json.load(f)
        print(f'best subnet: {record["flops"] / 1e6:.3f} MFLOPs, '
              f'{record["params"] / 1e6:.3f} M params, '
              f'{record["score_key"]} {record["score"]:.2f}')
        print(f'written: {best}, '
              f'{osp.join(work_dir, "best_fix_subnet.yaml")}')
        return
    # mmrazor's loops: EvolutionSearchLoop, AutoSlimGreedySearchLoop
    found = sorted(
        glob.glob(osp.join(work_dir, 'best_fix_subnet.yaml')) +
        glob.glob(osp.join(work_dir, 'FLOPS_*M.yaml')))
    if found:
        print('written: ' + ', '.join(found) +
              ' (tools/export.py CONFIG CHECKPOINT FILE exports one)')


if __name__ == '__main__':
    cli.run(main)
