"""Where the supernet's in-band ranking departs from standalone training:
each unit's width against the standalone accuracy and against the
supernet's estimate, over the in-band subnets of several draws.

Reads out dirs of ``supernet_quality.py`` (their ``eval_pse.json``: the
subnets' widths and the PSE-Net estimates; their ``result.json``: the
standalone ground truth). Within each draw, estimates and truth become
z-scores; over all draws' in-band subnets it prints, per unit, the Pearson
correlation of its relative width (0: its narrowest candidate, 1: its
widest) with the truth, with the estimate and with their difference, the
units that differ most first. Then, for each draw, the in-band Kendall tau
of the estimate before and after a linear correction by the widths fitted
on the other draws' differences (ridge, ``--ridge``): how much of the
disagreement is a systematic bias by width that one draw teaches another,
not noise. (The correction needs standalone trainings: a diagnosis, not an
estimator for a search.)

    python benchmarks/width_bias.py work_dirs/sqt_s0 work_dirs/sqt_s1 \
        work_dirs/sqt_s2 [--top 8]
"""
import argparse
import os.path as osp
import sys

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from supernet_quality import (kendall_spearman, read_out_dir,  # noqa: E402
                              standalone_truth)


def load(out_dir):
    """(units, relative widths, truth z, estimate z) of a draw's in-band
    subnets."""
    result, evaluated = read_out_dir(out_dir)
    widths = np.array([s['widths'] for s in evaluated['subnets']], float)
    span = widths[0] - widths[1]  # max - min
    relative = (widths[2:] - widths[1]) / np.where(span > 0, span, 1)
    truth = np.array(standalone_truth(
        [s['standalone'] for s in result['subnets']]))[2:]
    estimate = np.array([s['top1'] for s in evaluated['subnets']])[2:]
    return evaluated['units'], relative, _z(truth), _z(estimate)


def _z(values):
    return (values - values.mean()) / values.std()


def _corr(x, y):
    return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dirs', nargs='+')
    parser.add_argument('--top', type=int, default=8)
    parser.add_argument('--ridge', type=float, default=5.0)
    args = parser.parse_args()
    draws = [load(d) for d in args.out_dirs]
    units = draws[0][0]
    if any(d[0] != units for d in draws):
        sys.exit('error: out dirs with other units; accepted: runs of one '
                 'PSE config')
    widths = np.concatenate([d[1] for d in draws])
    truth = np.concatenate([d[2] for d in draws])
    estimate = np.concatenate([d[3] for d in draws])
    rows = sorted(((name, _corr(widths[:, u], truth),
                    _corr(widths[:, u], estimate),
                    _corr(widths[:, u], truth - estimate))
                   for u, name in enumerate(units)),
                  key=lambda r: -abs(r[3]))
    print(f'{len(truth)} in-band subnets of {len(draws)} draws; Pearson '
          'correlation of each unit\'s relative width with')
    print(f'{"unit":<44} {"truth":>6} {"estimate":>9} {"difference":>11}')
    for name, with_truth, with_estimate, with_difference in rows[:args.top]:
        print(f'{name[:44]:<44} {with_truth:>+6.2f} {with_estimate:>+9.2f} '
              f'{with_difference:>+11.2f}')
    if len(draws) < 2:
        return
    print('\nin-band Kendall tau, each draw corrected by the others\' fit:')
    for k, (_, w, t, e) in enumerate(draws):
        others = [d for i, d in enumerate(draws) if i != k]
        x = np.concatenate([np.c_[d[1], np.ones(len(d[1]))] for d in others])
        y = np.concatenate([d[2] - d[3] for d in others])
        coef = np.linalg.solve(x.T @ x + args.ridge * np.eye(x.shape[1]),
                               x.T @ y)
        corrected = e + np.c_[w, np.ones(len(w))] @ coef
        print(f'  {args.out_dirs[k]}: {kendall_spearman(e, t)[0]:.2f} -> '
              f'{kendall_spearman(corrected, t)[0]:.2f}')


if __name__ == '__main__':
    main()
