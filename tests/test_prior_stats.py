"""Prior statistics: per unit and width, the main effect of the width on
the loss, from the randomly drawn subnets with the training drift removed;
and the prior fitted from them."""
import json
import random

import numpy as np
import pytest
import torch

from psenet_plugin.errors import ConfigError
from psenet_plugin.structures.flops import FlopsTable
from psenet_plugin.structures.prior import (Prior, SubnetLossStats,
                                            _main_effects)

UNITS = [f'u{i}' for i in range(6)]
WIDTHS = [8, 16, 24, 32]
COSTLY = 'u2'


def chain_table(units=UNITS, sizes=(32, 16, 16, 8, 8, 4)):
    """FLOPs of a chain of 3x3 convolutions (one per unit, feature maps of
    ``sizes``) and a 10-way linear head."""
    layers, previous = [], [(None, 3)]
    for unit, size in zip(units, sizes):
        layers.append(
            dict(name=unit, kind='Conv2d', out=[(unit, 0)], fa=9. * size**2,
                 fb=0., fd=0., pa=9., pb=0., pd=0., **{'in': previous}))
        previous = [(unit, 0)]
    layers.append(
        dict(name='fc', kind='Linear', out=[(None, 10)], fa=1., fb=0., fd=0.,
             pa=1., pb=1., pd=0., **{'in': previous}))
    return FlopsTable(units, layers)


def costly_effect(width):
    """The loss unit COSTLY adds: 3 at its narrowest width, 0 at its
    widest. No other unit's width changes the loss."""
    return 3.0 * (WIDTHS[-1] - width) / (WIDTHS[-1] - WIDTHS[0])


def train_records(steps=1000, num_subnets=4, drift=True, sandwich=True,
                  signal=True, seed=0):
    """What a sandwich training of ``steps`` steps would record: per step,
    (widths, losses, kinds). The loss of a subnet: a per-step offset
    (falling fast, then growing by 0.02 a step: up to 20, far more than the
    widths' effect), the costly unit's effect (if ``signal``), and noise
    (sd 0.3)."""
    rng = random.Random(seed)
    for step in range(steps):
        offset = 10 * np.exp(-step / 300) + 0.02 * step if drift else 0.0
        fixed = [{u: WIDTHS[-1] for u in UNITS}, {u: WIDTHS[0] for u in UNITS}]
        drawn = [{u: rng.choice(WIDTHS) for u in UNITS}
                 for _ in range(num_subnets - 2)]
        noise = [rng.gauss(0, 0.3) for _ in range(num_subnets)]
        subnets = fixed + drawn
        losses = [offset + signal * costly_effect(s[COSTLY]) + e
                  for s, e in zip(subnets, noise)]
        kinds = ['max', 'min'] + [f'rand{k}' for k in range(2, num_subnets)]
        if not sandwich:
            subnets, losses, kinds = subnets[2:], losses[2:], kinds[2:]
        yield subnets, losses, kinds


def recorded(**kwargs):
    stats = SubnetLossStats()
    for step in train_records(**kwargs):
        stats.update(*step)
    return stats


def entropy(probs):
    """Entropy of a distribution over WIDTHS, 1 for uniform."""
    probs = np.asarray(probs)
    return float(-(probs * np.log(probs + 1e-12)).sum() / np.log(len(probs)))


def profile(stats, unit):
    """The unit's mean residuals over WIDTHS, centred."""
    means = np.array([stats.main_effect(unit, w) for w in WIDTHS])
    return means - means.mean()


def test_only_random_subnets_count_against_their_step_baseline():
    stats = SubnetLossStats(top_n=2)
    full, narrow = {'a': 16, 'b': 16}, {'a': 8, 'b': 16}
    stats.update([full, narrow, narrow, full], [1.0, 5.0, 3.0, 2.0],
                 ['max', 'min', 'rand2', 'rand3'])
    # Each random subnet against the other one: +1 and -1.
    assert stats.main_effect('a', 8) == 1.0
    assert stats.main_effect('a', 16) == -1.0
    assert stats.main_effect('b', 16) == 0.0 and stats.count('b', 16) == 2
    assert stats.main_effect('b', 24) is None
    assert (stats.num_records, stats.num_random) == (4, 2)
    assert [t['residual'] for t in stats.top] == [-1.0, 1.0]
    assert stats.top[0]['widths'] == full and stats.top[0]['loss'] == 2.0
    # Three random subnets: the mean of the other two, i.e. the step mean
    # rescaled by R / (R - 1).
    three = SubnetLossStats()
    three.update([{'a': 8}, {'a': 16}, {'a': 24}], [1.0, 2.0, 6.0],
                 ['rand0', 'rand1', 'rand2'])
    assert [three.main_effect('a', w) for w in (8, 16, 24)] == \
        [-3.0, -1.5, 4.5]


def test_a_single_random_subnet_uses_a_running_baseline():
    stats = SubnetLossStats(momentum=0.5)
    step = [{'a': 32}, {'a': 8}, {'a': 16}]
    stats.update(step, [1.0, 9.0, 4.0], ['max', 'min', 'rand2'])
    assert stats.num_random == 0 and stats.baseline == 4.0  # starts it
    stats.update(step, [1.0, 9.0, 3.0], ['max', 'min', 'rand2'])
    assert stats.main_effect('a', 16) == -1.0  # 3 - 4
    assert stats.baseline == 3.5
    stats.update(step, [1.0, 9.0, 3.0], ['max', 'min', 'rand2'])
    assert stats.main_effect('a', 16) == pytest.approx((-1.0 - 0.5) / 2)


def test_costly_unit_gets_the_wider_prior_and_max_min_change_nothing():
    """One unit's narrow widths add up to 3 to the loss, no other unit's do;
    the sandwich's max and min subnets are recorded too and the per-step
    offset drifts by 20. At three FLOPs targets the fitted prior meets the
    target, gives the costly unit a wider expected width (relative to its
    candidates) than every other unit, and does not pile the others at
    their max width."""
    stats = recorded()
    without_max_min = recorded(sandwich=False)
    assert stats.num_records == 4 * 1000
    assert stats.num_random == without_max_min.num_random == 2 * 1000
    assert stats.state_dict()['units'] == \
        without_max_min.state_dict()['units']
    assert stats.top == without_max_min.top

    table = chain_table()
    candidates = [WIDTHS] * len(UNITS)
    widest = table.flops_batch(np.array([WIDTHS[-1]] * len(UNITS), float))[0]
    costly = UNITS.index(COSTLY)
    for fraction in (0.3, 0.5, 0.7):
        prior = Prior.fit(stats, table, candidates, fraction * widest)
        expected = prior.expected_widths()
        assert table.flops_batch(expected)[0] == pytest.approx(
            fraction * widest, rel=0.01)
        relative = (expected - WIDTHS[0]) / (WIDTHS[-1] - WIDTHS[0])
        others = np.delete(relative, costly)
        print(f'target {fraction:.0%}: relative expected width of the '
              f'costly unit {relative[costly]:.3f}, of the others '
              f'{np.round(others, 3).tolist()}')
        assert relative[costly] > others.max() + 0.2
        at_max = np.delete([p[-1] for p in prior.probs], costly)
        assert at_max.mean() < 0.5
        # The units without signal keep spread distributions (their noise
        # is not read as preferences).
        spread = np.delete([entropy(p) for p in prior.probs], costly)
        print(f'  P(max width) of the others {np.round(at_max, 2).tolist()}'
              f', their normalised entropy {np.round(spread, 2).tolist()}')


@pytest.mark.parametrize('num_subnets', [4, 3])
def test_training_drift_does_not_change_the_main_effects(num_subnets):
    """The same draws and noise with and without a per-step offset that
    drifts by 20: with two random subnets a step (a per-step baseline) the
    main effects are the same; with one (a running baseline, which lags the
    drift) they are shifted by one constant, and the centred profiles agree
    within 0.1 (the costly unit's effects span 3)."""
    drifting = recorded(num_subnets=num_subnets)
    steady = recorded(num_subnets=num_subnets, drift=False)
    for unit in UNITS:
        if num_subnets == 4:
            for w in WIDTHS:
                assert drifting.main_effect(unit, w) == pytest.approx(
                    steady.main_effect(unit, w), abs=1e-9)
        else:
            assert np.abs(profile(drifting, unit) -
                          profile(steady, unit)).max() < 0.1
    # And they estimate the true effect: 3 * (32 - w) / 24, centred.
    truth = np.array([costly_effect(w) for w in WIDTHS])
    assert np.abs(profile(drifting, COSTLY) -
                  (truth - truth.mean())).max() < 0.15


def test_unit_without_signal_gets_a_flat_profile():
    stats = recorded()
    costly = profile(stats, COSTLY)
    effects = _main_effects(stats, COSTLY, WIDTHS)
    assert costly[0] - costly[-1] > 2.7 and effects[0] - effects[-1] > 2.7
    for unit in UNITS:
        if unit == COSTLY:
            continue
        # Mean residuals of ~500 records each: noise of sd ~0.07.
        assert np.abs(profile(stats, unit)).max() < 0.25
        # The fit sees them shrunk by their noise: nearly nothing.
        assert np.abs(_main_effects(stats, unit, WIDTHS)).max() < 0.1


def test_without_signal_the_prior_is_the_flops_only_prior():
    """Statistics in which no unit's width changes the loss fit the same
    distributions as statistics with no records at all (only the FLOPs
    target and the entropy shape them): the noise is not standardised into
    preferences."""
    table = chain_table()
    candidates = [WIDTHS] * len(UNITS)
    widest = table.flops_batch(np.array([WIDTHS[-1]] * len(UNITS), float))[0]
    for steps in (50, 1000):
        noise_only = recorded(steps=steps, signal=False)
        fitted = Prior.fit(noise_only, table, candidates, 0.5 * widest)
        flops_only = Prior.fit(SubnetLossStats(), table, candidates,
                               0.5 * widest)
        gap = max(np.abs(a - b).max()
                  for a, b in zip(fitted.probs, flops_only.probs))
        print(f'{steps} steps of noise: largest probability difference '
              f'{gap:.3f}')
        assert gap < 0.02


def test_round_trip_through_json_and_checkpoint(tmp_path):
    stats = SubnetLossStats(top_n=3)
    for i in range(10):
        stats.update([{'a': 8 * (i % 3 + 1), 'b': 16}, {'a': 8, 'b': 8}],
                     [10.0 - i, 10.0], ['rand0', 'rand1'])
    stats.update([{'a': 8, 'b': 16}], [5.0], ['rand2'])  # vs the average
    path = tmp_path / 'prior.json'
    stats.save(str(path))
    again = SubnetLossStats.load(str(path))
    assert again.state_dict() == stats.state_dict()
    assert json.loads(path.read_text())['format'] == 'psenet-prior-stats/2'
    torch.save({'prior_stats': stats.state_dict()}, tmp_path / 'ckpt.pth')
    plain = torch.load(tmp_path / 'ckpt.pth', weights_only=True)
    assert plain['prior_stats'] == stats.state_dict()
    from_checkpoint = SubnetLossStats.load(str(tmp_path / 'ckpt.pth'))
    assert from_checkpoint.state_dict() == stats.state_dict()
    assert [t['residual'] for t in from_checkpoint.top] == [-9.0, -8.0, -7.0]


def test_checkpoint_without_statistics_is_named(tmp_path):
    torch.save({'state_dict': {}}, tmp_path / 'plain.pth')
    with pytest.raises(ConfigError, match='holds no prior statistics'):
        SubnetLossStats.load(str(tmp_path / 'plain.pth'))


def test_old_format_is_one_clear_error(tmp_path):
    path = tmp_path / 'prior_stats.json'
    path.write_text(json.dumps({
        'format': 'psenet-prior-stats/1', 'top_n': 1, 'num_records': 1,
        'units': {'a': {'widths': [8], 'loss_sum': [2.0], 'count': [1]}},
        'top': [[-2.0, 1, {'a': 8}]]}))
    with pytest.raises(ConfigError) as error:
        SubnetLossStats.load(str(path))
    message = str(error.value)
    assert "'psenet-prior-stats/1' are of an older PriorRecorderHook" in \
        message
    assert 'cannot be converted' in message
    assert "train_cfg.prior='uniform'" in message


def test_unknown_format_is_refused():
    with pytest.raises(ConfigError, match="accepted: 'psenet-prior-stats/2'"):
        SubnetLossStats().load_state_dict({'format': 'other'})


def test_kinds_must_match_the_subnets():
    with pytest.raises(ValueError, match='one of each per subnet'):
        SubnetLossStats().update([{'a': 8}], [1.0], ['rand0', 'rand1'])


def test_recorder_hook_passes_the_kinds_and_restarts_old_statistics():
    from types import SimpleNamespace

    from psenet_plugin.engine.hooks.prior_recorder import PriorRecorderHook
    hook = PriorRecorderHook(top_n=4)
    model = SimpleNamespace(last_records=dict(
        widths=[{'a': 16}, {'a': 8}, {'a': 8}, {'a': 16}],
        kinds=['max', 'min', 'rand2', 'rand3'],
        losses=torch.tensor([1.0, 5.0, 3.0, 2.0])))
    runner = SimpleNamespace(model=model)
    hook.after_train_iter(runner, 0)
    assert (hook.stats.num_records, hook.stats.num_random) == (4, 2)
    assert hook.stats.main_effect('a', 8) == 1.0
    # Records without kinds (another algorithm) are refused by name.
    model.last_records = dict(widths=[{'a': 8}], losses=torch.tensor([1.]))
    with pytest.raises(ConfigError, match="last_records\\['kinds'\\]"):
        hook.after_train_iter(runner, 1)
    # Resuming a checkpoint of the old format starts new statistics.
    fresh = PriorRecorderHook()
    fresh.after_load_checkpoint(runner, {'prior_stats': {
        'format': 'psenet-prior-stats/1', 'num_records': 8}})
    assert fresh.stats.num_records == 0
    fresh.after_load_checkpoint(runner,
                                {'prior_stats': hook.stats.state_dict()})
    assert fresh.stats.state_dict() == hook.stats.state_dict()
