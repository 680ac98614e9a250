"""Do PSE-Net supernets trained with different recipes agree with each other
more than with standalone training? Bias or noise in the in-band ranking.

Reads ``result.json`` files of ``supernet_quality.py`` runs on the same
subnets (copies of one out dir with other ``--pse-options``) and prints
Kendall tau between the in-band estimates of every pair of runs, of each
run against the standalone ground truth, and of their mean. Runs that
agree with each other far better than with the ground truth share a
ranking that weight sharing gives, not one that noise gives: another recipe
of the same kind will not move it. ``--truth`` takes the ground truth from
another ``result.json`` of the same subnets (e.g. the first run's, called
again with more standalone seeds: ``supernet_quality.py --seeds 4``).

    R=benchmarks/results/supernet_quality
    python benchmarks/compare_estimates.py $R/noisy20_result.json \
        $R/noisy20_{maxrandom,k6,sandwich,kd,repeat}_result.json \
        [--truth $R/noisy20_seeds4_result.json]
"""
import argparse
import itertools
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from supernet_quality import (architectures,  # noqa: E402
                              kendall_spearman, standalone_truth)


def load(paths, truth_path=None):
    """name -> in-band PSE-Net estimates, and the in-band ground truth
    (of ``truth_path`` if given, else of the runs); every file must hold the
    same subnets, the runs the same standalone trainings."""
    runs, subnets = {}, None
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        if subnets is None:
            subnets = result['subnets']
        elif result['subnets'] != subnets:
            sys.exit(f'error: {path}: other subnets or standalone runs than '
                     f'{paths[0]}; accepted: runs of one out dir\'s copies')
        options = ' '.join(result['setting'].get('pse_options') or [])
        name = osp.basename(path)[:-len('_result.json')] or path
        runs[f'{name} ({options or "defaults"})'] = \
            result['supernets']['pse']['estimates'][2:]
    if truth_path:
        with open(truth_path) as f:
            other = json.load(f)['subnets']
        if architectures(other) != architectures(subnets):
            sys.exit(f'error: --truth {truth_path}: other subnets than '
                     f'{paths[0]}; accepted: a result.json of the same out '
                     'dir or a copy of it')
        subnets = other
    truth = standalone_truth([s['standalone'] for s in subnets[2:]])
    return runs, truth


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('results', nargs='+',
                        help='result.json files of supernet_quality.py')
    parser.add_argument(
        '--truth', help='the ground truth of this result.json of the same '
        'subnets (default: the runs\')')
    args = parser.parse_args()
    if len(args.results) < 2:
        sys.exit('error: results: give at least two result.json files')
    runs, truth = load(args.results, args.truth)
    names = list(runs)
    print(f'{len(truth)} in-band subnets, {len(runs)} PSE-Net runs')
    print('\nKendall tau, in-band, each run against the ground truth:')
    for name in names:
        print(f'  {kendall_spearman(runs[name], truth)[0]:6.2f}  {name}')
    pairs = [kendall_spearman(runs[a], runs[b])[0]
             for a, b in itertools.combinations(names, 2)]
    print(f'\nKendall tau between runs ({len(pairs)} pairs): mean '
          f'{sum(pairs) / len(pairs):.2f}, {min(pairs):.2f} to '
          f'{max(pairs):.2f}')
    mean = [sum(v) / len(v) for v in zip(*runs.values())]
    print(f'their mean estimate against the ground truth: '
          f'{kendall_spearman(mean, truth)[0]:.2f}')


if __name__ == '__main__':
    main()
