"""Which score of a subnet on the supernet ranks the in-band subnets best:
top-1, the mean probability of the true class or the mean log-likelihood;
and how much the batch-norm calibration's images move the ranking.

Reads an out dir of ``supernet_quality.py`` (its PSE-Net checkpoint, the
subnets of ``eval_pse.json`` and the standalone ground truth of
``result.json``). For each ``--calibration-seeds`` seed, every subnet has
its batch norm recalibrated on that seed's sample of training images (as
``tools/eval_subnets.py``, which uses seed 0's) and is scored on the
validation set by the three scores. Prints Kendall tau of each against the
ground truth (in-band, with its 90% bootstrap interval), of the first two
seeds' top-1 against each other and of their mean, and writes
``DIR/score_metrics.json``.

    python benchmarks/score_metrics.py work_dirs/sq_noisy20 \
        [--calibration-seeds 0 1]
"""
import argparse
import math
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from finetune_ranking import build, check_units, load_out_dir  # noqa: E402
from supernet_quality import (PSE_CONFIG, ROOT, TASKS,  # noqa: E402
                              kendall_spearman, standalone_truth,
                              tau_interval)

SCORES = ('top1', 'p_true', 'log_likelihood')


def scores(model, val):
    """top-1 (%), mean probability of the true class and mean log of it
    over ``val``, of the subnet the model is set to (eval mode)."""
    import torch
    model.eval()
    count = correct = 0
    p_true = log_likelihood = 0.0
    with torch.no_grad():
        for batch in val:
            for sample in model.test_step(batch):
                label = int(sample.gt_label[0])
                p = float(sample.pred_score[label])
                count += 1
                correct += int(int(sample.pred_score.argmax()) == label)
                p_true += p
                log_likelihood += math.log(max(p, 1e-12))
    return dict(top1=100 * correct / count, p_true=p_true / count,
                log_likelihood=log_likelihood / count)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='an out dir of supernet_quality.py')
    parser.add_argument('--calibration-seeds', type=int, nargs='+',
                        default=[0, 1])
    parser.add_argument('--config', default=PSE_CONFIG)
    args = parser.parse_args()

    import psenet_plugin  # noqa: F401
    from psenet_plugin.structures.export import (CalibrationLoader,
                                                 calibrate_bn)
    from psenet_plugin.structures.io import atomic_write_json
    out_dir = osp.abspath(args.out_dir)
    result, evaluated, checkpoint = load_out_dir(out_dir)
    truth = standalone_truth([s['standalone'] for s in result['subnets']])
    runner, cfg = build(osp.join(ROOT, args.config), checkpoint,
                        TASKS[result['setting']['task']],
                        osp.join(out_dir, 'score_metrics'))
    model = runner.model
    names = model.flops_table.unit_names
    check_units(evaluated, names, out_dir, args.config)
    val = runner.build_dataloader(cfg.test_dataloader)
    band = slice(2, None)
    runs = {}
    for seed in args.calibration_seeds:
        loader = CalibrationLoader(cfg.train_dataloader, seed=seed,
                                   default_scope=cfg.get('default_scope'))
        rows = []
        for subnet in evaluated['subnets']:
            choice = dict(zip(names, subnet['widths']))
            calibrate_bn(model, choice, loader, evaluated['calibrate'],
                         runner.logger)
            model.mutator.set_choices(model.mutator.choices_of(choice))
            rows.append(scores(model, val))
        runs[seed] = rows
        for name in SCORES:
            values = [r[name] for r in rows][band]
            tau = kendall_spearman(values, truth[band])[0]
            low, high = tau_interval(values, truth[band])
            print(f'calibration seed {seed}: {name:<15} in-band tau '
                  f'{tau:5.2f} ({low:5.2f} to {high:5.2f})', flush=True)
    report = dict(checkpoint=osp.relpath(checkpoint, out_dir), scores=runs)
    seeds = list(runs)
    if len(seeds) > 1:
        first, second = ([r['top1'] for r in runs[s]][band]
                         for s in seeds[:2])
        mean = [sum(r['top1'] for r in rows) / len(rows)
                for rows in zip(*runs.values())][band]
        report.update(
            top1_seed_vs_seed=kendall_spearman(first, second)[0],
            top1_mean_tau=kendall_spearman(mean, truth[band])[0])
        print(f'top-1, calibration seed {seeds[0]} against {seeds[1]}: '
              f'tau {report["top1_seed_vs_seed"]:.2f}; the mean of '
              f'{len(seeds)} seeds against the ground truth: '
              f'{report["top1_mean_tau"]:.2f}')
    atomic_write_json(osp.join(out_dir, 'score_metrics.json'), report)


if __name__ == '__main__':
    main()
