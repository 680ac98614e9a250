"""The prior-sampling search against uniform sampling with repair.

    python benchmarks/prior_vs_uniform.py [--seeds 0 1 2] [--root work_dirs]

For every seed it uses the demo's work dir ``<root>/demo_s<seed>`` (trained
and searched with the prior by ``tools/demo.py --seed <seed> --work-dir
<root>/demo_s<seed>``, run first when missing), searches the same supernet
again with ``train_cfg.prior=uniform`` (mmrazor's uniform sampling, repaired
into the FLOPs range; same seed, target, population sizes, so the same number
of evaluated candidates), and evaluates both best subnets on the validation
set, which neither search saw (BN recalibrated as in ``tools/export.py``).
Prints, and writes to ``benchmarks/results/prior_vs_uniform.{json,md}``, the
best subnet's validation top-1 per seed and as mean +- std over the seeds,
with the held-out scores the searches chose them by.
"""
import argparse
import json
import os.path as osp
import statistics
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = 'configs/demo/pse_mbv2_mnist.py'
SEARCH_CONFIG = 'configs/demo/pse_mbv2_mnist_search.py'
RESULTS = osp.join(ROOT, 'benchmarks', 'results')


def run(cmd):
    print('$ ' + ' '.join(cmd), flush=True)
    subprocess.run([sys.executable] + cmd[1:], cwd=ROOT, check=True)


def checkpoint_of(train_dir):
    with open(osp.join(ROOT, train_dir, 'last_checkpoint')) as f:
        return osp.relpath(f.read().strip(), ROOT)


def mean_std(values):
    return (statistics.mean(values),
            statistics.stdev(values) if len(values) > 1 else 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--root', default='work_dirs')
    args = parser.parse_args()

    rows = []
    for seed in args.seeds:
        work = osp.join(args.root, f'demo_s{seed}')
        if not osp.isfile(osp.join(ROOT, work, 'demo_summary.json')):
            run(['python', 'tools/demo.py', '--seed', str(seed),
                 '--work-dir', work])
        checkpoint = checkpoint_of(osp.join(work, 'supernet'))
        uniform_dir = osp.join(work, 'search_uniform')
        if not osp.isfile(osp.join(ROOT, uniform_dir, 'best_subnet.json')):
            run([
                'python', 'tools/search.py', SEARCH_CONFIG, checkpoint,
                '--work-dir', uniform_dir, '--cfg-options',
                f'train_cfg.seed={seed}', 'train_cfg.prior=uniform'
            ])
        bests = {
            'prior': osp.join(work, 'search', 'best_subnet.json'),
            'uniform': osp.join(uniform_dir, 'best_subnet.json'),
        }
        out = osp.join(work, 'eval_prior_vs_uniform.json')
        run([
            'python', 'tools/eval_subnets.py', CONFIG, checkpoint,
            '--no-max-min', '--subnet', bests['prior'], '--subnet',
            bests['uniform'], '--out', out, '--work-dir',
            osp.join(work, 'eval_pvu')
        ])
        with open(osp.join(ROOT, out)) as f:
            evaluated = json.load(f)['subnets']
        row = dict(seed=seed)
        for (name, path), record in zip(bests.items(), evaluated):
            with open(osp.join(ROOT, path)) as f:
                best = json.load(f)
            row[name] = dict(
                top1=record['top1'],
                heldout=best['score'],
                mflops=record['flops'] / 1e6)
        rows.append(row)

    lines = [
        '| seed | prior: val top-1 (held-out, MFLOPs) | uniform + repair: '
        'val top-1 (held-out, MFLOPs) |', '|---|---|---|'
    ]
    for row in rows:
        cells = [
            f'{row[k]["top1"]:.1f} ({row[k]["heldout"]:.1f}, '
            f'{row[k]["mflops"]:.2f})' for k in ('prior', 'uniform')
        ]
        lines.append(f'| {row["seed"]} | ' + ' | '.join(cells) + ' |')
    summary = {}
    for k in ('prior', 'uniform'):
        summary[k] = mean_std([row[k]['top1'] for row in rows])
    lines.append('| mean +- std | ' + ' | '.join(
        f'**{m:.1f} +- {s:.1f}**' for m, s in summary.values()) + ' |')
    table = '\n'.join(lines)
    print(table)
    with open(osp.join(RESULTS, 'prior_vs_uniform.md'), 'w') as f:
        f.write(table + '\n')
    with open(osp.join(RESULTS, 'prior_vs_uniform.json'), 'w') as f:
        json.dump(dict(rows=rows, mean_std=summary), f, indent=1)


if __name__ == '__main__':
    main()
