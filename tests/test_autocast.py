"""Mixed precision on the CPU: under ``torch.autocast('cpu',
dtype=torch.bfloat16)``, group k of one parallel pass computes what subnet k
computes alone, weight-sliced, on its group under the same autocast, in both
executions (the CUDA fp16/bf16 counterparts are in test_cuda.py).

Tolerances (bf16 keeps 8 significant bits: one rounding is up to 2^-8, about
4e-3, relative):

* logits: within ``1e-2`` of the subnet's largest |logit| (about 2.5 bf16
  roundings). Measured on the 2-core CPU: bitwise equal, both executions.
* gradients, per parameter: ``||parallel - alone|| <= 2e-2 * (||alone|| +
  1e-2 * max over parameters of ||alone||)``. The masked execution rounds
  the whole batch's weight gradient to bf16 once where the subnets alone
  round each group's (measured: up to 4e-3); the sliced one matches to fp32
  rounding (1e-7).

Groups of 7-8 samples: with 2-3 samples per group some batch norms
normalise 1x1 maps of nearly equal values and amplify any difference in
summation order (1e4 times, in fp32 already), which then depends on the
number of threads, not on the parallel pass.
"""
import functools

import pytest
import torch

from psenet_plugin.models import GroupLayout

from conftest import parallel_and_alone
from helpers import build_supernet
from test_parallel_exactness import _subnets

BF16_LOGITS_TOL = 1e-2
BF16_GRAD_TOL = 2e-2


def assert_logits_close(result, tol):
    """Every group's parallel logits are within ``tol`` of the largest
    |logit| of its subnet alone."""
    for k, (index, alone) in enumerate(result['alone']):
        parallel = result['logits'][index].float()
        alone = alone.float()
        error = (parallel - alone).abs().max().item()
        scale = alone.abs().max().item()
        assert error <= tol * scale, (
            f'group {k}: logits differ by {error:.3g}, largest |logit| '
            f'{scale:.3g}, tolerance {tol} of it')


def assert_grads_close(result, tol):
    """Per parameter, the parallel gradient is within ``tol`` (relative,
    with a floor of 1e-2 of the largest gradient norm) of the sum of the
    subnets' gradients alone."""
    grads, expected = result['grads'], result['expected_grads']
    assert set(grads) == set(expected)
    norms = {n: g.float().norm().item() for n, g in expected.items()}
    floor = 1e-2 * max(norms.values())
    for name, grad in expected.items():
        error = (grads[name].float() - grad.float()).norm().item()
        assert error <= tol * (norms[name] + floor), (
            f'{name}: gradient differs by {error:.3g} (norm '
            f'{norms[name]:.3g}, tolerance {tol} of norm + {floor:.3g})')


@pytest.fixture(autouse=True)
def one_thread():
    """bf16 kernels on two busy cores ran 15x slower with two threads than
    with one (measured on the 2-core machine); the numbers are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module', params=['mobilenet_v2', 'resnet18'])
def supernet(request):
    architecture, mutator = build_supernet(request.param)
    architecture.train()
    return architecture, mutator


# Unequal groups (per-group batch norm) and equal ones (folded batch norm).
@pytest.mark.parametrize('execution', ['sliced', 'masked'])
@pytest.mark.parametrize('batch', [30, 32])
def test_bf16_autocast_group_k_equals_subnet_k_alone(supernet, execution,
                                                     batch):
    architecture, mutator = supernet
    torch.manual_seed(batch)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch, ))
    autocast = functools.partial(torch.autocast, 'cpu', dtype=torch.bfloat16)
    result = parallel_and_alone(architecture, mutator, x, y,
                                _subnets(mutator, 4), GroupLayout(4),
                                execution, autocast)
    # autocast really ran the layers in bf16
    assert result['logits'].dtype == torch.bfloat16
    assert all(out.dtype == torch.bfloat16 for _, out in result['alone'])
    assert_logits_close(result, BF16_LOGITS_TOL)
    assert_grads_close(result, BF16_GRAD_TOL)
