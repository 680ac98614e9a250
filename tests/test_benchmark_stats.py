"""The ranking benchmark's ground truth (benchmarks/supernet_quality.py):
which standalone trainings it runs, their mean, and the truth ranked
against itself."""
import math
import os.path as osp
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'benchmarks'))

import supernet_quality  # noqa: E402


def test_max_min_and_first_in_band_subnets_get_the_seeds_others_one():
    runs = supernet_quality.standalone_runs(5, 2, 3, 1)
    assert runs == [(0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4),
                    (2, 2), (2, 3), (2, 4), (3, 2), (4, 2)]
    # seed s is the same training whatever --seeds: a later call with more
    # seeds reuses the folders of the first ones
    assert supernet_quality.standalone_runs(3, 0, 2, 1) == [
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]


def test_ground_truth_is_the_mean_of_each_subnets_seeds():
    assert supernet_quality.standalone_truth([[70.0], [60.0, 64.0],
                                              [1.0, 2.0, 3.0, 6.0]]) == [
        70.0, 62.0, 3.0]


def test_perfect_tau_is_the_ceiling_a_noisy_ground_truth_leaves():
    # a truth that ranks itself perfectly leaves the full tau of 1
    assert supernet_quality.perfect_tau(1.0, 2) == pytest.approx(1.0)
    # more seeds in the truth than in each half: a higher ceiling
    two = supernet_quality.perfect_tau(0.5, 2)
    assert supernet_quality.perfect_tau(0.5, 1) < two < 1
    # halves agreeing at 0.5, the truth of both: reliability 2/3
    assert two == pytest.approx(2 / math.pi * math.asin(math.sqrt(2 / 3)))
    # no agreement, no ceiling to read a tau against
    assert supernet_quality.perfect_tau(-0.02, 2) is None
    assert supernet_quality.perfect_tau(None, 2) is None


def test_truth_factor_counts_the_seeds_each_subnet_really_has():
    # every subnet with 4 seeds, halves of 2: the truth averages 2x
    assert supernet_quality.truth_factor([[1, 2, 3, 4]] * 3, 2) == 2
    # half the subnets with 1 seed (--second-seed): harmonic mean of 4
    # and 1 is 1.6, so 0.8x a half of 2 seeds
    assert supernet_quality.truth_factor([[1, 2, 3, 4], [5]], 2) == \
        pytest.approx(0.8)
    assert supernet_quality.truth_factor([[70.0], [71.0]], 0) == 0


def test_truth_ranks_the_mean_of_half_its_seeds_against_the_other_half():
    standalone = [[1.0, 3.0, 10.0, 20.0], [5.0, 5.0, 0.0, 2.0],
                  [7.0, 8.0]]  # fewer seeds: left out
    half, first, second = supernet_quality.truth_halves(standalone)
    assert (half, first, second) == (2, [2.0, 5.0], [15.0, 1.0])
    # two seeds: one seed against the other
    assert supernet_quality.truth_halves([[1.0, 2.0], [4.0, 3.0]]) == (
        1, [1.0, 4.0], [2.0, 3.0])
    # an odd number: the last seed is not used
    assert supernet_quality.truth_halves([[1, 2, 3, 4, 9]]) == (2, [1.5],
                                                                 [3.5])
    assert supernet_quality.truth_halves([[70.0], [71.0]]) == (0, [], [])


def test_truth_file_must_hold_the_same_draw_and_gives_its_standalone_recipe(
        tmp_path):
    import argparse
    import json
    setting = dict(seed=0, random_subnets=20, task='noisy_digits',
                   budget_seconds=420, lr=0.02,
                   autoslim_config=supernet_quality.AUTOSLIM_CONFIG,
                   standalone_epochs=3, standalone_lr=0.04,
                   standalone_warmup=0, standalone_seeds=4)
    path = tmp_path / 'result.json'
    path.write_text(json.dumps(dict(
        setting=setting, supernets=dict(autoslim=dict(estimates=[1.0])),
        subnets=[dict(kind='max', flops=1, params=1, standalone=[1.0])])))
    args = argparse.Namespace(
        seed=0, random=20, task='noisy_digits', budget=420, lr=0.02,
        autoslim_config=supernet_quality.AUTOSLIM_CONFIG,
        standalone_epochs=8, standalone_lr=0.1, standalone_warmup=5, seeds=2)
    supernet_quality.load_truth(str(path), args)
    assert (args.standalone_epochs, args.standalone_lr,
            args.standalone_warmup, args.seeds) == (3, 0.04, 0, 4)
    args.seed = 1
    with pytest.raises(SystemExit, match='made with --seed 0, this call '
                       'has 1'):
        supernet_quality.load_truth(str(path), args)
    path.write_text('{"setting": {}}')
    with pytest.raises(SystemExit, match='not a result.json'):
        supernet_quality.load_truth(str(path), args)


def test_pse_from_copies_a_finished_supernet_once_and_keeps_other_runs(
        tmp_path):
    import json
    source, out = tmp_path / 'rerun', tmp_path / 'truth'
    (source / 'pse').mkdir(parents=True)
    out.mkdir()
    done = dict(iters=5, train_seconds=1.0, checkpoint='pse/iter_5.pth')
    (source / 'pse' / 'done.json').write_text(json.dumps(done))
    (source / 'pse' / 'iter_5.pth').write_bytes(b'weights')
    (source / 'pse.py').write_text('cfg\n')
    (source / 'eval_pse.json').write_text('{"subnets": []}')
    supernet_quality.copy_pse(str(source), str(out))
    assert (out / 'pse' / 'iter_5.pth').read_bytes() == b'weights'
    assert (out / 'eval_pse.json').read_text() == '{"subnets": []}'
    assert not list(out.glob('*.copying'))
    # a second call (more --seeds later) finds the same files and goes on
    supernet_quality.copy_pse(str(source), str(out))
    # another supernet's estimates already there: refused, left as they are
    (out / 'eval_pse.json').write_text('{"subnets": [1]}')
    with pytest.raises(SystemExit, match='already holds another PSE-Net'):
        supernet_quality.copy_pse(str(source), str(out))
    assert (out / 'eval_pse.json').read_text() == '{"subnets": [1]}'
    # a source without a finished training
    (source / 'pse' / 'done.json').unlink()
    with pytest.raises(SystemExit, match='no finished PSE-Net supernet'):
        supernet_quality.copy_pse(str(source), str(tmp_path / 'other'))
