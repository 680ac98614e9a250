"""The PSENet algorithm: one forward/backward and one optimizer step for K
subnets, sampling strategies, batch modes, and clear errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmpretrain.structures import DataSample
from mmrazor.registry import MODELS

from psenet_plugin.errors import ConfigError
from psenet_plugin.models import GroupLayout
from psenet_plugin.structures import uniform_widths

from helpers import classifier_cfg, mutator_cfg


def build(**kwargs):
    torch.manual_seed(0)
    cfg = dict(
        type='mmrazor.PSENet',
        architecture=classifier_cfg('mobilenet_v2'),
        mutator=mutator_cfg(),
        data_preprocessor=dict(mean=[0.] * 3, std=[1.] * 3),
        seed=0)
    cfg.update(kwargs)
    return MODELS.build(cfg)


@pytest.fixture(scope='module')
def algorithm():
    return build()


def batch(size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        inputs=[torch.rand(3, 32, 32, generator=g) * 255 for _ in range(size)],
        data_samples=[
            DataSample().set_gt_label(int(i)) for i in torch.randint(
                0, 10, (size, ), generator=g)
        ])


def test_data_preprocessor_defaults_to_mmpretrain_cls(algorithm):
    assert type(algorithm.data_preprocessor).__name__ == 'ClsDataPreprocessor'


def test_one_step_trains_k_subnets_with_one_optimizer_step(algorithm):
    optimizer = torch.optim.SGD(algorithm.parameters(), lr=0.1)
    wrapper = OptimWrapper(optimizer)
    steps = []
    optimizer.step = lambda *a, _step=optimizer.step, **k: (steps.append(1),
                                                             _step(*a, **k))
    before = {n: p.detach().clone() for n, p in algorithm.named_parameters()}
    log = algorithm.train_step(batch(10), wrapper)
    assert len(steps) == 1
    assert any(not torch.equal(before[n], p)
               for n, p in algorithm.named_parameters())
    # Logged: the optimised loss and every group's cross entropy.
    assert set(log) == {'loss', 'max.ce', 'min.ce', 'rand2.ce', 'rand3.ce'}
    records = algorithm.last_records
    assert records['kinds'] == ['max', 'min', 'rand2', 'rand3']
    mutator = algorithm.mutator
    assert records['widths'][0] == mutator.widths_of(mutator.max_choices)
    assert records['widths'][1] == mutator.widths_of(mutator.min_choices)
    # The loss is the batch mean = sum_k |G_k|/B * L_k.
    sizes = GroupLayout(4).group_sizes(10)
    weighted = sum(s / 10 * float(l)
                   for s, l in zip(sizes, records['losses']))
    assert float(log['loss']) == pytest.approx(weighted, rel=1e-5)


def test_group_sizes_differ_by_one_when_k_does_not_divide_the_batch(
        algorithm):
    data = algorithm.data_preprocessor(batch(9), True)
    losses = algorithm.loss(data['inputs'], data['data_samples'])
    assert torch.isfinite(losses['loss'])
    assert GroupLayout(4).group_sizes(9) == [3, 2, 2, 2]


def test_a_group_too_small_for_batch_norm_is_one_clear_error():
    # 7 samples in 4 groups: one group of 1 sample meets 1x1 feature maps.
    # (The first batch: a smaller batch after it would be a last, partial
    # batch, which trains fewer subnets, see tests/test_build_checks.py.)
    algorithm = build()
    data = algorithm.data_preprocessor(batch(7), True)
    with pytest.raises(ConfigError, match='batch_size >= 2 \\* '
                       'model.num_subnets'):
        algorithm.loss(data['inputs'], data['data_samples'])
    assert algorithm.mutator.parallel_subnets is None


def test_more_subnets_than_samples_is_refused():
    algorithm = build()  # the first batch sets the batch size
    data = algorithm.data_preprocessor(batch(3), True)
    with pytest.raises(ConfigError, match='num_subnets=4 is larger than the '
                       r'batch \(3 samples\)'):
        algorithm.loss(data['inputs'], data['data_samples'])


def test_repeat_mode_gives_every_subnet_every_sample():
    algorithm = build(num_subnets=2, batch_mode='repeat')
    algorithm.train()
    data = algorithm.data_preprocessor(batch(6), True)
    losses = algorithm.loss(data['inputs'], data['data_samples'])
    max_group = float(algorithm.last_records['losses'][0])
    algorithm.mutator.set_max_choices()
    alone = algorithm.architecture.head(
        algorithm.architecture.extract_feat(data['inputs']))
    labels = torch.cat([s.gt_label for s in data['data_samples']])
    assert max_group == pytest.approx(
        float(F.cross_entropy(alone, labels)), rel=1e-4)
    assert 'loss_distill' not in losses


def test_repeat_mode_distills_from_the_max_subnet():
    algorithm = build(
        batch_mode='repeat',
        distill_loss=dict(type='mmrazor.KLDivergence', tau=1, loss_weight=1))
    data = algorithm.data_preprocessor(batch(4), True)
    losses = algorithm.loss(data['inputs'], data['data_samples'])
    assert float(losses['loss_distill']) > 0
    losses['loss_distill'].backward()
    assert algorithm.architecture.head.fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('key,kwargs,accepted', [
    ('model.num_subnets=0', dict(num_subnets=0), 'an integer >= 1'),
    ("model.sample_strategy='best'", dict(sample_strategy='best'),
     "'sandwich', 'sandwich_ratio', 'max_random', 'max_random_ratio', "
     "'uniform', 'flops_uniform'"),
    ("model.batch_mode='tile'", dict(batch_mode='tile'), "'split', 'repeat'"),
    ("model.group_layout='x'", dict(group_layout='x'),
     "'interleaved', 'contiguous'"),
    ('model.num_subnets=True', dict(num_subnets=True), 'an integer >= 1'),
])
def test_bad_config_values_name_key_and_accepted(key, kwargs, accepted):
    with pytest.raises(ConfigError) as error:
        build(**kwargs)
    assert key in str(error.value) and accepted in str(error.value)


@pytest.mark.parametrize('execution', ['sliced', 'masked'])
def test_split_mode_distills_every_group_from_the_max_subnet_alone(
        execution):
    """Split mode with distillation: group 0 (max) learns from the labels,
    every other group from the max subnet's logits on its own samples (a
    no-gradient forward of the max subnet on the whole batch), each
    weighted by its share of the batch; running statistics are those of the
    groups only (the teacher's forward leaves them alone)."""
    from mmrazor.models.losses import KLDivergence
    algorithm = build(
        execution=execution,
        distill_loss=dict(type='mmrazor.KLDivergence', tau=1, loss_weight=1))
    algorithm.train()
    reference = build(execution=execution)  # same weights (seeded)
    reference.train()
    data = algorithm.data_preprocessor(batch(12), True)
    inputs, samples = data['inputs'], data['data_samples']
    losses = algorithm.loss(inputs, samples)
    subnets_rng_state = algorithm.rng.getstate()

    arch, mutator = reference.architecture, reference.mutator
    subnets = reference.sample_subnets()
    assert reference.rng.getstate() == subnets_rng_state
    layout = GroupLayout(4)
    with torch.no_grad():
        mutator.set_max_choices()
        teacher = arch.head(arch.extract_feat(inputs))
    # the teacher's forward updated the reference's statistics: restore them
    reference.load_state_dict(build(execution=execution).state_dict())
    kl = KLDivergence(tau=1, loss_weight=1)
    expected_ce, expected_kd = 0.0, 0.0
    for k, subnet in enumerate(subnets):
        index = layout.indices(k, 12)
        mutator.set_choices(subnet)
        logits = arch.head(arch.extract_feat(inputs[index]))
        if k == 0:
            labels = torch.cat([samples[i].gt_label for i in index.tolist()])
            expected_ce = F.cross_entropy(logits, labels) * len(index) / 12
        else:
            expected_kd = expected_kd + kl(logits, teacher[index]) * len(
                index) / 12
    assert float(losses['loss']) == pytest.approx(float(expected_ce),
                                                  rel=1e-4)
    assert float(losses['loss_distill']) == pytest.approx(
        float(expected_kd), rel=1e-4)
    # The same step without distillation writes the same statistics.
    plain = build(execution=execution)
    plain.train()
    plain.loss(inputs, samples)
    for a, b in zip(algorithm.buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_max_random_trains_the_max_and_random_subnets_never_the_min_alone():
    algorithm = build(sample_strategy='max_random', num_subnets=4)
    mutator = algorithm.mutator
    names = algorithm.flops_table.unit_names
    maximum = mutator.widths_of(mutator.max_choices)
    minimum = mutator.widths_of(mutator.min_choices)
    data = algorithm.data_preprocessor(batch(8), True)
    drawn = []
    for _ in range(5):
        losses = algorithm.loss(data['inputs'], data['data_samples'])
        records = algorithm.last_records
        assert records['kinds'] == ['max', 'rand1', 'rand2', 'rand3']
        assert {'max.ce', 'rand1.ce', 'rand2.ce', 'rand3.ce'} <= set(losses)
        assert records['widths'][0] == maximum
        drawn += [tuple(w[n] for n in names) for w in records['widths'][1:]]
    # 15 uniform draws: all different, none of them the min.
    assert len(set(drawn)) == 15
    assert tuple(minimum[n] for n in names) not in drawn


def common_position(widths, names, candidates):
    """The interval of positions in [0, 1] that rounds to every unit's
    index among its candidate widths (empty: no common position)."""
    low, high = 0.0, 1.0
    for name, c in zip(names, candidates):
        if len(c) == 1:
            continue
        index = list(c).index(widths[name])
        low = max(low, (index - 0.5) / (len(c) - 1))
        high = min(high, (index + 0.5) / (len(c) - 1))
    return low, high


@pytest.mark.parametrize('strategy,kinds', [
    ('sandwich_ratio', ['max', 'min', 'rand2', 'ratio3']),
    ('max_random_ratio', ['max', 'rand1', 'ratio2', 'rand3']),
])
def test_ratio_strategies_train_ratio_subnets_beside_random_ones(
        strategy, kinds):
    """Every ratio subnet has all units at one relative position among
    their widths, spread over [0, 1]; the random subnets do not; only the
    random ones are kinds the prior's statistics use. ``max_random_ratio``
    never trains the min on its own."""
    algorithm = build(sample_strategy=strategy, num_subnets=4)
    mutator = algorithm.mutator
    names = algorithm.flops_table.unit_names
    candidates = mutator.candidate_widths(names)
    maximum = mutator.widths_of(mutator.max_choices)
    data = algorithm.data_preprocessor(batch(8), True)
    ratio = next(i for i, k in enumerate(kinds) if k.startswith('ratio'))
    randoms = [i for i, k in enumerate(kinds) if k.startswith('rand')]
    ratios, randoms_common = [], 0
    for _ in range(8):
        losses = algorithm.loss(data['inputs'], data['data_samples'])
        records = algorithm.last_records
        assert records['kinds'] == kinds
        assert {f'{k}.ce' for k in kinds} <= set(losses)
        assert records['widths'][0] == maximum
        low, high = common_position(records['widths'][ratio], names,
                                    candidates)
        assert low <= high
        ratios.append((low + high) / 2)
        low, high = common_position(records['widths'][randoms[0]], names,
                                    candidates)
        randoms_common += low <= high
    assert len({round(r, 2) for r in ratios}) >= 5  # positions spread
    assert min(ratios) < 0.5 < max(ratios)
    assert randoms_common <= 1

    from psenet_plugin.structures.prior import SubnetLossStats
    stats = SubnetLossStats()
    for _ in range(3):
        stats.update(records['widths'], records['losses'].tolist(),
                     records['kinds'])
    assert stats.num_records == 12
    # the random kinds only; a single random subnet a step is compared with
    # a running baseline, which the first step only starts
    assert stats.num_random == (3 * len(randoms) if len(randoms) > 1 else 2)


def test_distillation_needs_a_strategy_that_always_draws_the_max():
    kd = dict(type='mmrazor.KLDivergence', tau=1, loss_weight=1)
    with pytest.raises(ConfigError) as error:
        build(sample_strategy='uniform', distill_loss=kd)
    assert 'model.distill_loss' in str(error.value)
    assert "'sandwich', 'sandwich_ratio', 'max_random'" in str(error.value)
    algorithm = build(sample_strategy='max_random', distill_loss=kd)
    data = algorithm.data_preprocessor(batch(8), True)
    losses = algorithm.loss(data['inputs'], data['data_samples'])
    assert float(losses['loss_distill']) > 0


def test_flops_uniform_sampling_spreads_flops_where_uniform_does_not(
        algorithm):
    import random
    table = algorithm.flops_table
    mutator = algorithm.mutator
    candidates = mutator.candidate_widths(table.unit_names)
    low = table.flops(mutator.widths_of(mutator.min_choices))
    high = table.flops(mutator.widths_of(mutator.max_choices))

    def position(widths):
        return (table.flops_batch(widths)[0] - low) / (high - low)

    flops_uniform = build(sample_strategy='flops_uniform', num_subnets=2)
    drawn = [
        position(table.vector(flops_uniform.mutator.widths_of(s)))
        for _ in range(60) for s in flops_uniform.sample_subnets()
    ]
    rng = random.Random(0)
    uniform = [
        position(uniform_widths(candidates, rng)) for _ in range(120)
    ]
    # Uniform per-unit widths concentrate (the long tail); FLOPs-uniform
    # draws cover [0, 1] like a uniform variable (quartiles 0.25/0.5/0.75).
    assert np.quantile(uniform, 0.9) - np.quantile(uniform, 0.1) < 0.35
    np.testing.assert_allclose(
        np.quantile(drawn, [0.25, 0.5, 0.75]), [0.25, 0.5, 0.75], atol=0.12)
