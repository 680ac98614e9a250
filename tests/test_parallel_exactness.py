"""The core invariant of parallel-subnets training: with the same weights,
group k of one parallel pass computes exactly what subnet k computes alone,
weight-sliced, on group k's samples; the parameter gradients are the sum over
k of |G_k| / B times subnet k's standalone gradients; and the batch-norm
running statistics follow the documented rule (psenet_plugin/models/
parallel.py): per channel, the average over the groups in which the channel
is active of what each subnet alone would have written."""
import random

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from psenet_plugin.models import GroupLayout

from conftest import assert_running_stats_rule, parallel_and_alone
from helpers import build_supernet


def _subnets(mutator, num):
    rng = random.Random(1)
    kinds = ['max', 'min'] + ['random'] * (num - 2)
    return [
        mutator.sample_choices(k, rng)
        if k == 'random' else mutator.sample_choices(k) for k in kinds
    ]


@pytest.fixture(scope='module', params=['mobilenet_v2', 'resnet18'])
def supernet(request):
    return build_supernet(request.param)


@pytest.fixture
def supernet64(supernet):
    """The module's supernet in float64 for one test, then float32 again:
    the masked pass (full-width convs, channels masked) and the subnet alone
    (sliced convs) sum in different orders, and in float32 a gradient that
    cancels over the batch differed by 3e-4 of the model's largest one on
    one machine (CPU kernels differ between machines): float64 leaves the
    algorithm's differences, not the rounding's."""
    architecture, mutator = supernet
    architecture.double()
    try:
        yield architecture, mutator
    finally:
        architecture.float()


# Batch sizes: unequal groups (fallback path) and equal ones (folded path),
# 7-9 samples a group: with 2-3, batch norms over MobileNetV2's 1x1 maps
# normalise nearly equal values and float32 rounding grows to 1e-2 on one
# thread (the test then depends on the thread count).
@pytest.mark.parametrize('execution', ['sliced', 'masked'])
@pytest.mark.parametrize('num,batch', [(2, 17), (4, 30), (4, 32)])
def test_group_k_equals_subnet_k_alone(supernet64, num, batch, execution):
    architecture, mutator = supernet64
    architecture.train()
    torch.manual_seed(num * 100 + batch)
    x = torch.randn(batch, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 10, (batch, ))
    subnets = _subnets(mutator, num)
    layout = GroupLayout(num)
    assert layout.group_sizes(batch) == [
        batch // num + (k < batch % num) for k in range(num)
    ]
    # One parallel forward/backward of all K subnets, then each subnet
    # alone, weight-sliced by mmrazor's own dynamic ops (not the plugin's
    # views), on its group.
    run = parallel_and_alone(architecture, mutator, x, y, subnets, layout,
                             execution)
    for index, alone in run['alone']:
        torch.testing.assert_close(
            run['logits'][index], alone, rtol=1e-4,
            atol=1e-4 * alone.abs().max().item())
    parallel_grads, expected_grads = run['grads'], run['expected_grads']
    bn_before, bn_parallel, bn_alone = (run['bn_before'], run['bn_parallel'],
                                        run['bn_alone'])

    scale = max(g.abs().max().item() for g in expected_grads.values())
    assert set(parallel_grads) == set(expected_grads)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(
            parallel_grads[name],
            grad,
            rtol=1e-4,
            atol=1e-5 * scale,
            msg=lambda m, name=name: f'{name}: {m}')

    # Running statistics: per channel, the mean over the groups in which it
    # is active of what each subnet alone wrote; others keep their value.
    assert_running_stats_rule(bn_before, bn_parallel, bn_alone)


def test_dropped_channels_are_zero_in_parallel_mode(supernet):
    architecture, mutator = supernet
    architecture.train()
    subnets = _subnets(mutator, 4)
    widths = [mutator.widths_of(s) for s in subnets]
    outputs = {}
    unit = mutator.mutable_units[0]
    bn = next(c.module for c in unit.output_related
              if isinstance(c.module, _BatchNorm))
    handle = bn.register_forward_hook(
        lambda m, i, o: outputs.setdefault('bn', o.detach()))
    with mutator.parallel(subnets):
        architecture.extract_feat(torch.randn(8, 3, 32, 32))
    handle.remove()
    out = outputs['bn']
    layout = GroupLayout(4)
    for k in range(4):
        index = layout.indices(k, 8)
        width = widths[k][unit.name]
        assert out[index, :width].abs().amax() > 0
        if width < out.shape[1]:
            assert out[index, width:].abs().amax() == 0


class Opaque(torch.nn.Module):
    """Identity that torch.fx cannot trace (it branches on a traced
    value), so the channels before it form no prunable unit."""

    def forward(self, x):
        if x.dim() == 4:
            return x
        return x * 0


class FixedStemNet(torch.nn.Module):
    """A stem with fixed channels (conv, BN) before a prunable body."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.gate = Opaque()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(8, 16, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(16), torch.nn.ReLU())

    def forward(self, x):
        return (self.body(self.gate(self.stem(x))), )


def test_batch_norms_outside_units_normalise_each_group():
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    from mmrazor.registry import MODELS

    from psenet_plugin.models import PSEBatchNorm2d

    from helpers import classifier_cfg, mutator_cfg
    PRETRAIN_MODELS.register_module('FixedStemNet', force=True,
                                    module=FixedStemNet)
    cfg = classifier_cfg('resnet18')
    cfg['backbone'] = dict(type='FixedStemNet')
    cfg['head']['in_channels'] = 16
    torch.manual_seed(0)
    architecture = MODELS.build(cfg)
    mutator = MODELS.build(mutator_cfg())
    mutator.prepare_from_supernet(architecture)
    stem_norm = architecture.backbone.stem[1]
    assert isinstance(stem_norm, PSEBatchNorm2d)
    assert not stem_norm.mutable_attrs  # in no unit: fixed channels
    assert len(mutator.mutable_units) == 1

    architecture.train()
    subnets = [mutator.max_choices, mutator.min_choices]
    x = torch.randn(8, 3, 16, 16)
    with mutator.parallel(subnets):
        logits = architecture.head(architecture.extract_feat(x))
    layout = GroupLayout(2)
    for k, subnet in enumerate(subnets):
        mutator.set_choices(subnet)
        index = layout.indices(k, 8)
        alone = architecture.head(architecture.extract_feat(x[index]))
        torch.testing.assert_close(logits[index], alone, rtol=1e-4,
                                   atol=1e-5)
