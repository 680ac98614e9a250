"""Train a model (a PSE-Net supernet, a baseline, a pruned subnet).

The CLI of mmpretrain's and mmrazor's ``tools/train.py``::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

Multi-GPU / multi-process: ``torchrun --nproc-per-node N tools/train.py
CONFIG --launcher pytorch`` (gloo is used when there is no GPU). The work
dir is locked while the training runs: a second training (or search) in it
is refused.
"""
import argparse
import sys

try:
    import psenet_plugin  # noqa: F401  compat fixes, plugin registration
    from psenet_plugin import cli
except ImportError as e:  # unsupported or missing dependencies
    sys.exit(f'error: {e}')


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint; without a path, from the latest '
        'checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic mixed precision training')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate checkpoints during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual total batch size')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='disable pin_memory in the dataloaders')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='disable persistent_workers in the dataloaders')
    cli.add_common_args(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = cli.load_config(args.config)
    cli.set_launcher(cfg, args.launcher, args.local_rank)
    cli.set_work_dir(cfg, args.config, args.work_dir)
    if args.amp:
        cli.set_amp(cfg)
    cli.set_resume(cfg, args.resume)
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    cli.merge_cfg_options(cfg, args.cfg_options)
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    cli.set_dataloader_defaults(cfg, args.no_pin_memory,
                                args.no_persistent_workers)
    cli.check_config(cfg)

    with cli.work_dir_lock(cfg.work_dir, args.launcher):
        runner = cli.build_runner(cfg)
        with cli.data_errors():
            runner.train()


if __name__ == '__main__':
    cli.run(main)
