"""The analytic FLOPs/params table equals mmengine's counting on the sliced
static model (get_model_complexity_info), for random subnets."""
import random

import pytest
import torch
from mmengine.analysis import get_model_complexity_info
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
