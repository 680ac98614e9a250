"""Evaluate subnets of a supernet checkpoint, BN recalibrated for each.

    python tools/eval_subnets.py CONFIG CHECKPOINT [--subnet FILE ...]
        [--random N --flops-band 0.25 0.45] [--ratios] [--no-max-min]
        [--calibrate 1000] [--split val|heldout] [--seed 0] [--out FILE]

Evaluates the max and min subnets, every ``--subnet`` file (a
``best_subnet.json`` / ``subnet.json`` or mmrazor's ``fix_subnet.yaml``) and
N random subnets whose FLOPs lie in ``--flops-band`` (fractions of the max
subnet's FLOPs; uniform draws, repaired into the band when they miss it),
and, with ``--ratios``, the subnets whose every unit takes the same
position among its candidate widths (the i-th of N steps from min to max:
a supernet's accuracy against width, where a dip next to the min shows
widths the training neglects), on the config's validation data (or its
held-out training slice,
``--split heldout``). Before each evaluation the BN statistics are
recalibrated on ``--calibrate`` training images, the same ones, in the same
way, as ``tools/export.py`` does (so the exported model tests as its row
here). Prints a table
and writes ``--out`` (JSON: per subnet its kind, FLOPs, params, top-1 and
widths; default ``<work_dir>/eval_subnets.json``).
"""
import argparse
import sys

try:
    import psenet_plugin  # noqa: F401  compat fixes, plugin registration
    from psenet_plugin import cli
except ImportError as e:  # unsupported or missing dependencies
    sys.exit(f'error: {e}')


def parse_args():
    parser = argparse.ArgumentParser(
        description='Evaluate subnets of a supernet checkpoint')
    parser.add_argument('config', help='the supernet\'s training config')
    parser.add_argument('checkpoint', help='supernet checkpoint')
    parser.add_argument(
        '--subnet', action='append', default=[], help='a subnet file')
    parser.add_argument(
        '--random', type=int, default=0, help='random subnets to evaluate')
    parser.add_argument(
        '--flops-band',
        type=float,
        nargs=2,
        default=(0.25, 0.45),
        metavar=('LOW', 'HIGH'),
        help='FLOPs band of the random subnets, as fractions of the max '
        'subnet\'s (default 0.25 0.45)')
    parser.add_argument(
        '--flops-range',
        type=float,
        nargs=2,
        metavar=('LOW', 'HIGH'),
        help='FLOPs range of the random subnets in MFLOPs (instead of '
        '--flops-band), e.g. a search\'s constraints_range')
    parser.add_argument(
        '--ratios',
        action='store_true',
        help='also every subnet with all units at the same position among '
        'their candidate widths (min ... max)')
    parser.add_argument(
        '--no-max-min',
        action='store_true',
        help='do not evaluate the max and min subnets')
    parser.add_argument(
        '--calibrate',
        type=int,
        default=None,
        help='training images for BN recalibration (default: the config\'s '
        'val_cfg.calibrate_sample_num, else 1000)')
    parser.add_argument(
        '--split',
        choices=['val', 'heldout'],
        default='val',
        help='evaluate on the validation set (default) or on the held-out '
        'training slice (heldout_dataloader)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='JSON file of the results')
    cli.add_common_args(parser)
    return parser.parse_args()


def random_in_band(table, candidates, low, high, count, rng):
    """``count`` distinct random width vectors with FLOPs in [low, high]."""
    from psenet_plugin.errors import ConfigError
    from psenet_plugin.structures.sampling import (repair_to_range,
                                                   uniform_widths)
    found, seen = [], set()
    for _ in range(count * 50):
        if len(found) == count:
            break
        widths = uniform_widths(candidates, rng)
        if not low <= table.flops_batch(widths)[0] <= high:
            widths = repair_to_range(widths, table, candidates, low, high,
                                     rng)
        if widths is None or tuple(widths) in seen:
            continue
        seen.add(tuple(widths))
        found.append(widths)
    if len(found) < count:
        raise ConfigError(
            f'FLOPs range {low / 1e6:.3f}-{high / 1e6:.3f} M: found '
            f'{len(found)} of {count} distinct subnets in it; widen '
            '--flops-band / --flops-range')
    return found


def same_ratio_subnets(candidates):
    """(kind, widths) for every step i of N, N the most candidate widths of
    a unit: every unit at its candidate nearest to the i-th of N evenly
    spaced positions from its min to its max."""
    steps = max(len(c) for c in candidates)
    subnets = []
    for i in range(steps):
        position = i / max(1, steps - 1)
        subnets.append((f'ratio{i}of{steps - 1}', [
            int(c[round(position * (len(c) - 1))]) for c in candidates
        ]))
    return subnets


def main():
    import os.path as osp
    import random

    from psenet_plugin.errors import ConfigError
    from psenet_plugin.structures.export import (CalibrationLoader,
                                                 calibrate_bn,
                                                 evaluate_subnet)
    from psenet_plugin.structures.io import atomic_write_json
    from psenet_plugin.structures.subnet import load_subnet

    args = parse_args()
    cli.check_checkpoint(args.checkpoint)
    cfg = cli.load_config(args.config)
    cli.set_launcher(cfg, args.launcher, args.local_rank)
    cli.set_work_dir(cfg, args.config, args.work_dir)
    cli.merge_cfg_options(cfg, args.cfg_options)
    key = 'val_dataloader' if args.split == 'val' else 'heldout_dataloader'
    if not cfg.get(key):
        raise ConfigError(f'{args.config}: `{key}` is not set; accepted: a '
                          'config with that dataloader')
    calibrate = args.calibrate
    if calibrate is None:
        calibrate = (cfg.get('val_cfg') or {}).get('calibrate_sample_num',
                                                   1000)
    cfg.load_from = args.checkpoint
    cfg.test_dataloader = cfg[key]
    cfg.test_evaluator = cfg.val_evaluator
    cfg.test_cfg = dict()
    cfg.custom_hooks = []  # (the prior recorder has nothing to record)
    cli.set_dataloader_defaults(cfg)
    cli.check_config(cfg, 'test')

    runner = cli.build_runner(cfg)
    cli.check_checkpoint_fits(runner.model, args.checkpoint, args.config)
    runner.load_or_resume()
    model = runner.model.module if hasattr(runner.model,
                                           'module') else runner.model
    if not hasattr(model, 'flops_table'):
        raise ConfigError(f'{args.config}: model.type must be PSENet; got '
                          f'{type(model).__name__}')
    mutator, table = model.mutator, model.flops_table
    names = table.unit_names
    candidates = mutator.candidate_widths(names)

    subnets = []
    if not args.no_max_min:
        subnets += [('max', [c[-1] for c in candidates]),
                    ('min', [c[0] for c in candidates])]
    for path in args.subnet:
        widths = load_subnet(path, mutator)
        subnets.append((osp.basename(path), [widths[n] for n in names]))
    if args.ratios:
        subnets += same_ratio_subnets(candidates)
    rng = random.Random(args.seed)
    max_flops = table.flops(dict(zip(names, [c[-1] for c in candidates])))
    if args.flops_range:
        low, high = (x * 1e6 for x in args.flops_range)
    else:
        low, high = (x * max_flops for x in args.flops_band)
    for i, widths in enumerate(
            random_in_band(table, candidates, low, high, args.random, rng)):
        subnets.append((f'random{i}', [int(w) for w in widths]))

    evaluator = runner.build_evaluator(cfg.test_evaluator)
    dataloader = runner.build_dataloader(cfg.test_dataloader)
    evaluator.dataset_meta = dataloader.dataset.metainfo
    train_loader = CalibrationLoader(
        cfg.train_dataloader, default_scope=cfg.get('default_scope'))
    results = []
    print(f'{"subnet":<24} {"MFLOPs":>8} {"% max":>6} {"params M":>9} '
          f'{"top-1":>6}')
    for kind, widths in subnets:
        choice = dict(zip(names, widths))
        calibrate_bn(model, choice, train_loader, calibrate, runner.logger)
        metrics = evaluate_subnet(model, choice, dataloader, evaluator)
        top1 = metrics['accuracy/top1']
        flops, params = table.flops(choice), table.params(choice)
        results.append(
            dict(
                kind=kind,
                flops=flops,
                params=params,
                top1=top1,
                metrics=metrics,
                widths=widths))
        print(f'{kind:<24} {flops / 1e6:>8.3f} {100 * flops / max_flops:>6.1f}'
              f' {params / 1e6:>9.3f} {top1:>6.2f}', flush=True)
    out = args.out or osp.join(cfg.work_dir, 'eval_subnets.json')
    atomic_write_json(
        out,
        dict(
            checkpoint=args.checkpoint,
            split=args.split,
            calibrate=calibrate,
            units=names,
            subnets=results))
    print(f'written: {out}')


if __name__ == '__main__':
    cli.run(main)
