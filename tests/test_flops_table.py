"""The analytic FLOPs/params table equals mmengine's counting on the sliced
static model (get_model_complexity_info), for random subnets; with
``convention='conv_linear'`` it equals the convolution and linear entries of
mmengine's count (the multiply-adds papers call FLOPs)."""
import random

import pytest
import torch
from mmengine.analysis import FlopAnalyzer, get_model_complexity_info
from mmrazor.registry import MODELS

from psenet_plugin.structures.export import export_static

from helpers import classifier_cfg, mutator_cfg

SIZE = 64  # input resolution: FLOPs scale with it, the check does not


@pytest.fixture(scope='module', params=['mobilenet_v2_1.5x', 'resnet50'])
def algorithm(request):
    torch.manual_seed(0)
    return MODELS.build(
        dict(
            type='mmrazor.PSENet',
            architecture=classifier_cfg(request.param, num_classes=1000),
            mutator=mutator_cfg(SIZE),
            seed=0)).eval()


def _check_random_subnets(algorithm, count):
    mutator, table = algorithm.mutator, algorithm.flops_table
    rng = random.Random(count)
    subnets = [mutator.max_choices, mutator.min_choices] + [
        mutator.sample_choices('random', rng) for _ in range(count - 2)
    ]
    for choices in subnets:
        widths = mutator.widths_of(choices)
        static = export_static(algorithm, widths).eval()
        counted = get_model_complexity_info(
            static, input_shape=(3, SIZE, SIZE), show_table=False,
            show_arch=False)
        assert table.flops(widths) == pytest.approx(
            counted['flops'], rel=1e-3)
        assert table.params(widths) == counted['params']


def test_table_equals_mmengine_on_sliced_subnets(algorithm):
    _check_random_subnets(algorithm, 8)


@pytest.mark.slow
def test_table_equals_mmengine_on_50_sliced_subnets(algorithm):
    _check_random_subnets(algorithm, 50)


def test_conv_linear_convention_equals_mmengine_conv_and_linear(algorithm):
    """The papers' convention: mmengine's count without batch norm and
    pooling, on real sliced subnets (min, random)."""
    mutator = algorithm.mutator
    table = algorithm.flops_table.with_convention('conv_linear')
    assert algorithm.flops_table.convention == 'all'
    rng = random.Random(1)
    for choices in (mutator.min_choices,
                    mutator.sample_choices('random', rng)):
        widths = mutator.widths_of(choices)
        static = export_static(algorithm, widths).eval()
        analyzer = FlopAnalyzer(static, torch.zeros(1, 3, SIZE, SIZE))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        by_op = analyzer.by_operator()
        assert set(by_op) >= {'conv', 'batch_norm', 'linear'}
        macs = by_op['conv'] + by_op['linear']
        assert table.flops(widths) == pytest.approx(macs, rel=1e-6)
        assert table.flops(widths) < algorithm.flops_table.flops(widths)
        # parameters do not depend on the FLOPs convention
        assert table.params(widths) == algorithm.flops_table.params(widths)
