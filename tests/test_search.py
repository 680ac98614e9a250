"""Prior-sampling evolution search: feasibility of the prior sampler, the
search loop's outputs, resume after a kill, and clear errors."""
import json
import os
import random
import signal
import sys

import numpy as np
import pytest
from mmengine.config import Config
from mmrazor.registry import MODELS

from psenet_plugin.engine.loops.prior_evolution_search_loop import \
    PriorEvolutionSearchLoop
from psenet_plugin.structures import repair_to_range, uniform_widths
from psenet_plugin.structures.io import atomic_write_json
from psenet_plugin.structures.prior import Prior, SubnetLossStats

from conftest import DEMO, DEMO_SEARCH, REPO, run_python, search_options


def _search(checkpoint, work_dir, root, *extra, **overrides):
    return [
        'tools/search.py', DEMO_SEARCH, checkpoint, '--work-dir',
        str(work_dir)
    ] + list(extra) + ['--cfg-options'] + search_options(root, **overrides)


@pytest.fixture(scope='module')
def demo_supernet():
    model = MODELS.build(Config.fromfile(os.path.join(REPO, DEMO)).model)
    return model


@pytest.mark.parametrize('fraction', [0.3, 0.5, 0.7])
def test_prior_sampler_lands_in_the_flops_band(trained_supernet,
                                               demo_supernet, fraction):
    """>= 99% of the prior sampler's draws (repaired towards the band) meet
    a +-5% FLOPs band; uniform sampling's rate is far lower."""
    _, checkpoint = trained_supernet
    table = demo_supernet.flops_table
    candidates = demo_supernet.mutator.candidate_widths(table.unit_names)
    stats = SubnetLossStats.load(checkpoint)
    assert stats.num_records == 4 * 4
    top = table.flops_batch(np.array([c[-1] for c in candidates], float))[0]
    target = fraction * top
    low, high = 0.95 * target, 1.05 * target
    prior = Prior.fit(stats, table, candidates, target)
    rng = random.Random(0)
    draws = [prior.sample(rng) for _ in range(300)]
    repaired = [
        repair_to_range(d, table, candidates, low, high, rng,
                        preference=prior.preference) for d in draws
    ]
    feasible = [
        r is not None and low <= table.flops_batch(r)[0] <= high
        for r in repaired
    ]
    uniform = table.flops_batch(
        np.stack([uniform_widths(candidates, rng) for _ in range(300)]))
    uniform_rate = np.mean((uniform >= low) & (uniform <= high))
    raw = table.flops_batch(np.stack(draws))
    raw_rate = np.mean((raw >= low) & (raw <= high))
    print(f'target {fraction:.0%}: prior sampler {np.mean(feasible):.3f}, '
          f'prior draws before repair {raw_rate:.3f}, uniform '
          f'{uniform_rate:.3f}', file=sys.stderr)
    assert np.mean(feasible) >= 0.99
    assert uniform_rate < 0.5
    assert raw_rate > uniform_rate


def test_prior_fits_its_flops_target(trained_supernet, demo_supernet):
    _, checkpoint = trained_supernet
    table = demo_supernet.flops_table
    candidates = demo_supernet.mutator.candidate_widths(table.unit_names)
    target = 5e6
    prior = Prior.fit(SubnetLossStats.load(checkpoint), table, candidates,
                      target)
    expected = table.flops_batch(prior.expected_widths())[0]
    assert expected == pytest.approx(target, rel=1e-3)


def _recorded_stats(unit_names, candidates, steps=300, seed=0):
    """Statistics of a sandwich training (K=4) in which every unit's
    narrower widths cost loss: the recorded best subnets are wide, far
    above a 30% FLOPs budget."""
    rng = random.Random(seed)
    stats = SubnetLossStats(top_n=20)
    for step in range(steps):
        drawn = [[rng.choice(c) for c in candidates] for _ in range(2)]
        losses = [
            5.0 - 0.01 * step + sum(1 - w / c[-1] for w, c in
                                    zip(widths, candidates)) +
            rng.gauss(0, 0.1) for widths in drawn
        ]
        stats.update([dict(zip(unit_names, widths)) for widths in drawn],
                     losses, ['rand2', 'rand3'])
    return stats


def _first_population_loop(supernet, flops_range, prior, prior_required,
                           ratio_seeds):
    """The search loop's own code, without a runner (no model is
    evaluated): 16 candidates, top 4, its prior built from ``prior``."""
    table = supernet.flops_table
    loop = object.__new__(PriorEvolutionSearchLoop)
    loop.table, loop.unit_names = table, table.unit_names
    loop.candidate_widths = supernet.mutator.candidate_widths(
        table.unit_names)
    loop.ranges = dict(flops=flops_range)
    loop.prior_source, loop.prior_required = prior, prior_required
    loop.prior_fit, loop.rng, loop.archive = {}, random.Random(0), []
    loop.num_candidates, loop.top_k, loop.ratio_seeds = 16, 4, ratio_seeds
    loop.prior = loop._build_prior()
    return loop


def _first_population(loop):
    """The loop's first population: its origins and widths, after checking
    that its 16 candidates are distinct and all inside the FLOPs range."""
    population = loop._next_population()
    widths = np.array([c['widths'] for c in population], float)
    flops = loop.table.flops_batch(widths)
    low, high = loop.ranges['flops']
    assert ((flops >= low) & (flops <= high)).all()
    assert len({tuple(c['widths']) for c in population}) == 16
    return [c['origin'] for c in population], widths


def test_first_population_holds_the_repaired_recorded_best(
        demo_supernet, tmp_path):
    """BCNet's seeding: half of the first population is the recorded best
    subnets, repaired into the FLOPs range; the rest is drawn from the
    prior; every candidate is feasible."""
    table = demo_supernet.flops_table
    candidates = demo_supernet.mutator.candidate_widths(table.unit_names)
    stats = _recorded_stats(table.unit_names, candidates)
    path = tmp_path / 'prior_stats.json'
    stats.save(str(path))
    best = list(stats.best_subnets(table.unit_names, candidates))
    assert len(best) == 20
    low, high = 4.03e6, 4.45e6  # the demo search's 30% budget
    assert min(table.flops_batch(np.stack(best))) > high

    loop = _first_population_loop(demo_supernet, (low, high), str(path),
                                  prior_required=True, ratio_seeds=0)
    assert len(loop.recorded) == 20
    origins, widths = _first_population(loop)
    assert origins == ['recorded'] * 8 + ['prior'] * 8
    for seed in widths[:8]:  # each one a recorded best, narrowed
        assert any((seed <= b).all() and (seed < b).any() for b in best)


def test_ratio_seeds_start_the_first_population_at_the_target(
        demo_supernet):
    """train_cfg.ratio_seeds=4: the first population starts with the 4
    subnets that have every unit at one relative position among its widths
    nearest the FLOPs range's centre (repaired into it where they miss),
    before the recorded best and the prior's draws."""
    low, high = 4.03e6, 4.45e6
    loop = _first_population_loop(demo_supernet, (low, high), 'uniform',
                                  prior_required=False, ratio_seeds=4)
    table, candidates = loop.table, loop.candidate_widths
    origins, widths = _first_population(loop)
    assert origins == ['ratio'] * 4 + ['prior'] * 12
    # Every ratio subnet of the space, the seeds' nearest to the centre.
    ratio_subnets = {
        tuple(float(c[int(round(r * (len(c) - 1)))]) for c in candidates)
        for r in np.linspace(0, 1, 1001)
    }
    centre = (low + high) / 2
    by_distance = sorted(ratio_subnets, key=lambda w: abs(
        table.flops_batch(np.array(w))[0] - centre))
    in_band = [
        w for w in by_distance[:4]
        if low <= table.flops_batch(np.array(w))[0] <= high
    ]
    assert in_band  # the demo's range holds a ratio subnet
    unchanged = [tuple(w) for w in widths[:4] if tuple(w) in ratio_subnets]
    assert unchanged[:len(in_band)] == in_band


def test_search_writes_its_outputs(trained_supernet, mnist5k_root,
                                   tmp_path):
    _, checkpoint = trained_supernet
    result = run_python(_search(checkpoint, tmp_path, mnist5k_root))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ('best_subnet.json', 'best_fix_subnet.yaml',
                 'candidates.json', 'candidates.csv', 'pareto.png',
                 'prior.json', 'search_state.json', 'search_epoch_3.json'):
        assert (tmp_path / name).is_file(), name
    archive = json.loads((tmp_path / 'candidates.json').read_text())
    low, high = Config.fromfile(
        os.path.join(REPO, DEMO_SEARCH)).train_cfg.constraints_range.flops
    assert all(low * 1e6 <= c['flops'] <= high * 1e6 for c in archive)
    assert len({tuple(c['widths']) for c in archive}) == len(archive)
    assert {c['origin'] for c in archive} >= {'recorded', 'prior',
                                              'mutation'}
    first = [c['origin'] for c in archive if c['epoch'] == 0]
    assert 0 < first.count('recorded') <= len(first) // 2
    best = json.loads((tmp_path / 'best_subnet.json').read_text())
    assert best['score'] == max(c['score'] for c in archive)
    assert 'best subnet:' in result.stdout
    with open(tmp_path / 'candidates.csv') as f:
        assert len(f.readlines()) == len(archive) + 1
    assert (tmp_path / 'pareto.png').read_bytes()[:4] == b'\x89PNG'
    # The max and min subnets, scored like the candidates, as references.
    references = json.loads((tmp_path / 'references.json').read_text())
    assert set(references) == {'max', 'min'}
    assert references['max']['flops'] > high * 1e6 > low * 1e6 > \
        references['min']['flops']
    assert all(0 <= r['score'] <= 100 for r in references.values())
    state = json.loads((tmp_path / 'search_state.json').read_text())
    assert state['references'] == references


# Runs tools/search.py with the search loop killed (SIGKILL, as `kill -9`)
# right after it saved its state with some, not all, of epoch 2's candidates
# scored: a deterministic point, whatever the machine's speed.
KILL_IN_EPOCH_2 = """
import os, runpy, signal, sys
from psenet_plugin.engine.loops.prior_evolution_search_loop import \\
    PriorEvolutionSearchLoop as Loop
save = Loop._save_state
def save_then_die(self, snapshot=False):
    save(self, snapshot)
    scored = [c for c in self.population if c['score'] is not None]
    if self._epoch == 1 and 0 < len(scored) < len(self.population):
        os.kill(os.getpid(), signal.SIGKILL)
Loop._save_state = save_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_killed_search_resumes_without_losing_candidates(
        trained_supernet, mnist5k_root, tmp_path):
    _, checkpoint = trained_supernet
    killed = run_python(['-c', KILL_IN_EPOCH_2] +
                        _search(checkpoint, tmp_path, mnist5k_root))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = json.loads((tmp_path / 'search_state.json').read_text())
    assert before['epoch'] == 1
    scored = [c for c in before['population'] if c['score'] is not None]
    assert 0 < len(scored) < len(before['population'])

    resumed = run_python(
        _search(checkpoint, tmp_path, mnist5k_root, '--resume'))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = json.loads((tmp_path / 'search_state.json').read_text())
    assert after['epoch'] == 3
    # Nothing evaluated before the kill is lost or evaluated again.
    assert after['archive'][:len(before['archive'])] == before['archive']
    keys = [tuple(c['widths']) for c in after['archive']]
    assert len(keys) == len(set(keys))
    evaluated = resumed.stdout.count('] candidate [')
    assert evaluated == len(after['archive']) - len(before['archive'])
    assert 'reference max subnet' not in resumed.stdout  # kept in the state
    assert f'{len(before["archive"])} candidates evaluated' in \
        resumed.stdout


def test_corrupt_state_is_one_clear_error(trained_supernet, mnist5k_root,
                                          tmp_path):
    _, checkpoint = trained_supernet
    state = tmp_path / 'search_state.json'
    state.write_text('{"format": "psenet-search-state/1", "epoch": 1, "arch')
    result = run_python(
        _search(checkpoint, tmp_path, mnist5k_root, '--resume'))
    assert result.returncode == 2
    assert 'is corrupt or truncated' in result.stderr
    assert str(state) in result.stderr


def test_state_writes_never_leave_a_half_file(tmp_path, monkeypatch):
    path = tmp_path / 'search_state.json'
    atomic_write_json(str(path), {'epoch': 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed between writing and renaming

    monkeypatch.setattr(os, 'replace', crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(str(path), {'epoch': 2, 'big': list(range(10000))})
    assert json.loads(path.read_text()) == {'epoch': 1}
    assert os.listdir(tmp_path) == ['search_state.json']


def test_unreachable_constraint_names_the_minimum(trained_supernet,
                                                  mnist5k_root, tmp_path):
    _, checkpoint = trained_supernet
    result = run_python(
        _search(checkpoint, tmp_path, mnist5k_root, '--flops-target',
                '0.1'))
    assert result.returncode == 2, result.stderr[-2000:]
    assert 'constraints_range.flops=(0.095, 0.105) M is out of reach' in \
        result.stderr
    assert '0.638 M (min, the minimum achievable)' in result.stderr


def test_missing_prior_falls_back_to_uniform_or_fails(trained_supernet,
                                                      mnist5k_root,
                                                      tmp_path):
    _, checkpoint = trained_supernet
    missing = str(tmp_path / 'no_prior.json')
    result = run_python(
        _search(
            checkpoint, tmp_path / 'a', mnist5k_root, **{
                'train_cfg.prior': missing,
                'train_cfg.max_epochs': 1
            }))
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'searching with uniform sampling instead' in result.stdout
    strict = run_python(
        _search(
            checkpoint, tmp_path / 'b', mnist5k_root, **{
                'train_cfg.prior': missing,
                'train_cfg.prior_required': True
            }))
    assert strict.returncode == 2
    assert 'prior_required=True' in strict.stderr


def test_a_key_the_loop_would_ignore_is_refused(trained_supernet,
                                                mnist5k_root, tmp_path):
    """FLOPs come from the exact table: an estimator_cfg would be accepted
    and never used, so it is refused, naming the key."""
    _, checkpoint = trained_supernet
    result = run_python(
        _search(
            checkpoint, tmp_path, mnist5k_root, **{
                'train_cfg.estimator_cfg.type': 'mmrazor.ResourceEstimator'
            }))
    assert result.returncode == 2, result.stderr[-2000:]
    assert 'train_cfg.estimator_cfg is not supported' in result.stderr


@pytest.mark.parametrize('value', [-1, 17, True, 2.0])
def test_ratio_seeds_outside_the_population_is_refused(value):
    from psenet_plugin.errors import ConfigError
    with pytest.raises(ConfigError) as error:
        PriorEvolutionSearchLoop(None, None, None, num_candidates=16,
                                 num_mutation=6, num_crossover=6, top_k=4,
                                 ratio_seeds=value)
    assert (f'train_cfg.ratio_seeds={value!r}; accepted: an integer 0 .. '
            'num_candidates (16)') in str(error.value)
