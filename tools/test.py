"""Test (evaluate) a checkpoint.

The CLI of mmpretrain's ``tools/test.py``::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--out-item metrics|pred] [--amp] [--cfg-options k=v ...]
        [--launcher none|pytorch|slurm|mpi]
"""
import argparse
import sys

try:
    import psenet_plugin  # noqa: F401  compat fixes, plugin registration
    from psenet_plugin import cli
except ImportError as e:  # unsupported or missing dependencies
    sys.exit(f'error: {e}')


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='the file to write results to')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='write the metrics or the predictions (default) to --out')
    parser.add_argument(
        '--amp', action='store_true', help='test with mixed precision')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='disable pin_memory in the dataloaders')
    cli.add_common_args(parser)
    return parser.parse_args()


def main():
    import mmengine
    from mmengine.evaluator import DumpResults

    from psenet_plugin.errors import ConfigError

    args = parse_args()
    if args.out is None and args.out_item is not None:
        raise ConfigError('--out-item needs --out FILE')
    cli.check_checkpoint(args.checkpoint)
    cfg = cli.load_config(args.config)
    cli.set_launcher(cfg, args.launcher, args.local_rank)
    cli.set_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = args.checkpoint
    if args.amp:
        cfg.test_cfg = cfg.get('test_cfg') or {}
        cfg.test_cfg.fp16 = True
    cli.merge_cfg_options(cfg, args.cfg_options)
    cli.set_dataloader_defaults(cfg, args.no_pin_memory)
    if cfg.get('test_dataloader') is None:
        raise ConfigError(f'{args.config}: `test_dataloader` is not set; a '
                          'test config needs test_dataloader, test_evaluator '
                          'and test_cfg')
    cli.check_config(cfg, 'test')

    runner = cli.build_runner(cfg)
    cli.check_checkpoint_fits(runner.model, args.checkpoint, args.config)
    if args.out and args.out_item in ('pred', None):
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))
    with cli.data_errors():
        metrics = runner.test()
    if args.out and args.out_item == 'metrics':
        mmengine.dump(metrics, args.out)


if __name__ == '__main__':
    cli.run(main)
