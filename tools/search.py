"""Search a trained PSE-Net supernet for the best subnet under constraints.

    python tools/search.py CONFIG CHECKPOINT [--work-dir DIR] [--resume [STATE]]
        [--flops-target MFLOPS [--flops-tolerance 0.05]]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

CONFIG has a ``PriorEvolutionSearchLoop`` (or mmrazor's
``EvolutionSearchLoop``) as ``train_cfg``; CHECKPOINT is the supernet (its
recorded prior is used by default). Outputs in the work dir:
best_subnet.json, best_fix_subnet.yaml, candidates.json/.csv, pareto.png,
prior.json and the resumable search state. The work dir is locked while
the search runs: a second search (or training) in it is refused.
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


def main():
    from psenet_plugin.errors import ConfigError

    args = parse_args()
    cli.check_checkpoint(args.checkpoint)
    cfg = cli.load_config(args.config)
    if 'Search' not in str(cfg.get('train_cfg', {}).get('type', '')):
        raise ConfigError(
            f'{args.config}: train_cfg.type={cfg.train_cfg.get("type")!r} '
            'is not a search loop; accepted: mmrazor.PriorEvolutionSearchLoop'
            ' (see configs/demo/pse_mbv2_mnist_search.py)')
    cli.set_launcher(cfg, args.launcher, args.local_rank)
    cli.set_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.flops_target is not None:
        if args.flops_target <= 0 or not 0 <= args.flops_tolerance < 1:
            raise ConfigError('--flops-target must be > 0 and '
                              '--flops-tolerance in [0, 1)')
        t, tol = args.flops_target, args.flops_tolerance
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
    cli.check_config(cfg, 'search')

    with cli.work_dir_lock(cfg.work_dir, args.launcher):
        weights = cli.read_checkpoint(args.checkpoint)  # truncated: fail fast
        runner = cli.build_runner(cfg)
        # mmengine loads ``load_from`` non-strictly: a checkpoint of
        # another model would leave the supernet at random weights.
        cli.check_checkpoint_fits(runner.model, args.checkpoint, args.config,
                                  weights)
        del weights
        with cli.data_errors():
            runner.train()
    best = osp.join(cfg.work_dir, 'best_subnet.json')
    if runner.rank == 0 and osp.isfile(best):
        with open(best) as f:
            record = json.load(f)
        print(f'best subnet: {record["flops"] / 1e6:.3f} MFLOPs, '
              f'{record["params"] / 1e6:.3f} M params, '
              f'{record["score_key"]} {record["score"]:.2f}')
        print(f'written: {best}, '
              f'{osp.join(cfg.work_dir, "best_fix_subnet.yaml")}')


if __name__ == '__main__':
    cli.run(main)
