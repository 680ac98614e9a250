"""The parallel step on a device.

Everywhere (no marker, default suite): the forward and backward of one
parallel step read nothing back from the device (no ``.item()``,
``.tolist()``, ``.cpu()``...), and copy host data to it at most once (the
step's table of group widths, from which every unit's mask is built on the
device). On the CPU this is checked structurally, by counting those calls.

On a CUDA GPU (tests marked ``cuda``: ``conftest.py`` skips them where torch
sees none, so ``pytest -m cuda`` on a CPU machine reports them as skipped):

* both executions are exact in fp32 (TF32 off: cuDNN convolutions use it by
  default), with the tolerances of ``test_parallel_exactness.py``;
* under ``torch.autocast('cuda')``, group k of the parallel pass equals
  subnet k alone under the same autocast: logits within ``1e-2`` (fp16) /
  ``4e-2`` (bf16) of the subnet's largest |logit|; gradients per parameter
  within ``1e-2`` / ``3e-2`` relative (norm, with a floor of 1e-2 of the
  largest norm; ``test_autocast.py`` says why the masked execution's
  weight gradients round differently);
* no host-device synchronisation in the forward and backward of a parallel
  step (``torch.cuda.set_sync_debug_mode('error')``);
* a few training iterations of ``tools/train.py --amp`` (fp16 and bf16);
* resume on the GPU, with ``--amp``;
* DDP with NCCL, one GPU per process (needs two GPUs).

On a GPU machine: ``python -m pytest -q -m cuda tests``.
"""
import contextlib
import functools
import json
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from psenet_plugin.models import GroupLayout, forward_subnets

from conftest import DEMO, parallel_and_alone, run_python
from helpers import build_supernet
from test_autocast import assert_grads_close, assert_logits_close
from test_parallel_exactness import _subnets
from test_training import (_small, check_ddp_ranks, check_resume,
                           run_ddp)

# Calls that make the host wait for the device (on a GPU), and calls that
# turn host data into a tensor (a copy to the device, on a GPU).
SYNC_METHODS = ('item', 'tolist', 'cpu', 'numpy', '__float__', '__int__',
                '__bool__', '__index__')
HOST_DATA = ((torch, 'tensor'), (torch, 'as_tensor'), (torch, 'from_numpy'),
             (torch.Tensor, 'new_tensor'))


@contextlib.contextmanager
def host_calls(monkeypatch):
    """Record, while the block runs, every call of :data:`SYNC_METHODS` on
    a tensor and every tensor made from host data, with where it was called
    from (file:line)."""
    calls = dict(sync=[], host_data=[])
    recording = [True]

    def wrap(owner, name, kind):
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if recording[0]:
                frame = sys._getframe(1)
                calls[kind].append(
                    f'{name} at {frame.f_code.co_filename}:{frame.f_lineno}')
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    for name in SYNC_METHODS:
        wrap(torch.Tensor, name, 'sync')
    for owner, name in HOST_DATA:
        wrap(owner, name, 'host_data')
    try:
        yield calls
    finally:
        recording[0] = False
        monkeypatch.undo()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small maps; faster on busy cores
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def cpu_supernet():
    architecture, mutator = build_supernet('mobilenet_v2')
    architecture.train()
    return architecture, mutator


@pytest.mark.parametrize('execution', ['sliced', 'masked'])
@pytest.mark.parametrize('batch', [10, 12])
def test_a_parallel_step_reads_nothing_back_from_the_device(
        cpu_supernet, one_thread, monkeypatch, execution, batch):
    architecture, mutator = cpu_supernet
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch, ))
    subnets = _subnets(mutator, 4)
    # One step first: what a new device placement reads once is cached.
    forward_subnets(architecture, mutator, x, subnets, GroupLayout(4),
                    execution)
    architecture.zero_grad()
    with host_calls(monkeypatch) as calls:
        logits = forward_subnets(architecture, mutator, x, subnets,
                                 GroupLayout(4), execution)
        F.cross_entropy(logits, y).backward()
    assert calls['sync'] == []
    # The masked step copies one (units x groups) table of widths, however
    # many units; the sliced step none.
    assert len(calls['host_data']) <= (execution == 'masked'), \
        calls['host_data']


def test_masks_are_built_once_per_step_on_the_units_device(cpu_supernet):
    architecture, mutator = cpu_supernet
    subnets = _subnets(mutator, 4)
    widths = [mutator.widths_of(s) for s in subnets]
    with mutator.parallel(subnets):
        units = mutator.mutable_units
        masks = [u.mutable_channel.parallel_mask() for u in units]
        # the same tensors at every call of the step
        assert all(m is u.mutable_channel.parallel_mask()
                   for m, u in zip(masks, units))
        for unit, mask in zip(units, masks):
            assert mask.device == unit.mutable_channel.mask.device
            expected = torch.zeros(4, unit.num_channels, dtype=torch.bool)
            for k in range(4):
                expected[k, :widths[k][unit.name]] = True
            assert torch.equal(mask, expected), unit.name
    for unit in mutator.mutable_units:
        assert unit.mutable_channel.parallel_layout is None


def test_a_layer_spanning_several_units_gets_their_masks_side_by_side():
    """Two units of one layer's channels, with channels of no unit between
    them (kept by every group): one (K, C) mask, built once per step."""
    from mmrazor.models.mutables.mutable_channel import \
        MutableChannelContainer

    from psenet_plugin.models import PSEMutableChannel
    from psenet_plugin.models.parallel import parallel_state
    container = MutableChannelContainer(20)
    first = PSEMutableChannel(8, [4, 8])
    second = PSEMutableChannel(8, [2, 8])
    container.register_mutable(first, 0, 8)
    container.register_mutable(second, 12, 20)
    layout = GroupLayout(2)
    first.set_parallel([8, 4], layout)
    second.set_parallel([8, 2], layout)
    got_layout, mask = parallel_state(container)
    assert got_layout is layout
    expected = torch.ones(2, 20, dtype=torch.bool)
    expected[1, 4:8] = False
    expected[1, 14:] = False
    assert torch.equal(mask, expected)
    assert parallel_state(container)[1] is mask
    first.set_parallel(None)
    second.set_parallel(None)
    assert parallel_state(container) == (None, None)


# On a CUDA GPU.


@pytest.fixture
def ieee_fp32():
    """IEEE fp32 matmuls and convolutions on the GPU (cuDNN uses TF32 for
    fp32 convolutions by default: 10 mantissa bits)."""
    conv = getattr(torch.backends.cudnn, 'conv', None)
    if conv is not None and hasattr(conv, 'fp32_precision'):  # torch >= 2.9
        flags = [(conv, 'fp32_precision'),
                 (torch.backends.cuda.matmul, 'fp32_precision')]
        value = 'ieee'
    else:
        flags = [(torch.backends.cudnn, 'allow_tf32'),
                 (torch.backends.cuda.matmul, 'allow_tf32')]
        value = False
    saved = [getattr(owner, name) for owner, name in flags]
    for owner, name in flags:
        setattr(owner, name, value)
    yield
    for (owner, name), old in zip(flags, saved):
        setattr(owner, name, old)


@pytest.fixture(scope='module', params=['mobilenet_v2', 'resnet18'])
def cuda_supernet(request):
    """A supernet on the GPU: its weights, BN statistics and the mutator's
    channel masks. 64x64 inputs and 7-8 samples per group keep every batch
    norm well conditioned (at 32x32 and 2-3 samples per group, some
    normalise 1x1 maps of nearly equal values and amplify rounding 1e4
    times, in fp32 already)."""
    architecture, mutator = build_supernet(request.param, input_size=64)
    architecture.cuda().train()
    mutator.cuda()
    return architecture, mutator


def _batch(size, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 3, 64, 64, generator=generator)
    y = torch.randint(0, 10, (size, ), generator=generator)
    return x.cuda(), y.cuda()


@pytest.mark.cuda
@pytest.mark.parametrize('execution', ['sliced', 'masked'])
@pytest.mark.parametrize('batch', [30, 32])
def test_group_k_equals_subnet_k_alone_on_cuda(cuda_supernet, ieee_fp32,
                                               execution, batch):
    from conftest import assert_running_stats_rule
    architecture, mutator = cuda_supernet
    x, y = _batch(batch, seed=batch)
    result = parallel_and_alone(architecture, mutator, x, y,
                                _subnets(mutator, 4), GroupLayout(4),
                                execution)
    assert result['logits'].is_cuda
    for index, alone in result['alone']:
        torch.testing.assert_close(
            result['logits'][index], alone, rtol=1e-4,
            atol=1e-4 * alone.abs().max().item())
    expected = result['expected_grads']
    assert set(result['grads']) == set(expected)
    scale = max(g.abs().max().item() for g in expected.values())
    for name, grad in expected.items():
        torch.testing.assert_close(
            result['grads'][name], grad, rtol=1e-4, atol=1e-5 * scale,
            msg=lambda m, name=name: f'{name}: {m}')
    assert_running_stats_rule(result['bn_before'], result['bn_parallel'],
                              result['bn_alone'])


CUDA_AUTOCAST_TOL = {
    torch.float16: dict(logits=1e-2, grads=1e-2),
    torch.bfloat16: dict(logits=4e-2, grads=3e-2),
}


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16],
                         ids=['fp16', 'bf16'])
@pytest.mark.parametrize('execution', ['sliced', 'masked'])
@pytest.mark.parametrize('batch', [30, 32])
def test_autocast_group_k_equals_subnet_k_alone_on_cuda(
        cuda_supernet, ieee_fp32, dtype, execution, batch):
    architecture, mutator = cuda_supernet
    x, y = _batch(batch, seed=batch)
    autocast = functools.partial(torch.autocast, 'cuda', dtype=dtype)
    result = parallel_and_alone(architecture, mutator, x, y,
                                _subnets(mutator, 4), GroupLayout(4),
                                execution, autocast)
    assert result['logits'].dtype == dtype
    for _, alone in result['alone']:
        assert alone.dtype == dtype and torch.isfinite(alone).all()
    assert_logits_close(result, CUDA_AUTOCAST_TOL[dtype]['logits'])
    assert_grads_close(result, CUDA_AUTOCAST_TOL[dtype]['grads'])


@contextlib.contextmanager
def sync_is_an_error():
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode('default')


@pytest.mark.cuda
@pytest.mark.parametrize('execution', ['sliced', 'masked'])
def test_parallel_forward_backward_does_not_sync_on_cuda(
        cuda_supernet, execution):
    architecture, mutator = cuda_supernet
    x, y = _batch(30, seed=0)  # unequal groups: the per-group path too
    subnets = _subnets(mutator, 4)
    for step in range(2):  # the first one places and caches
        architecture.zero_grad()
        context = sync_is_an_error() if step else contextlib.nullcontext()
        with context:
            logits = forward_subnets(architecture, mutator, x, subnets,
                                     GroupLayout(4), execution)
            F.cross_entropy(logits, y).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all()
               for p in architecture.parameters())


@pytest.mark.cuda
@pytest.mark.parametrize('execution,sample_strategy',
                         [('sliced', 'sandwich'), ('masked', 'sandwich'),
                          ('sliced', 'flops_uniform')])
def test_psenet_loss_does_not_sync_on_cuda(execution, sample_strategy):
    """The whole training forward of the algorithm (sampling the subnets,
    the parallel pass, the losses and the per-group losses recorded for the
    prior) and its backward; with FLOPs-uniform sampling, the FLOPs table
    is built from the model on the GPU."""
    from mmengine.config import Config
    from mmpretrain.structures import DataSample
    from mmrazor.registry import MODELS

    from conftest import REPO
    cfg = Config.fromfile(os.path.join(REPO, DEMO))
    cfg.model.execution = execution
    cfg.model.sample_strategy = sample_strategy
    model = MODELS.build(cfg.model).cuda().train()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 32, 32, generator=generator).cuda()
    samples = [
        DataSample().set_gt_label(i % 10).to('cuda') for i in range(32)
    ]
    for step in range(2):  # the first one places and caches
        model.zero_grad()
        context = sync_is_an_error() if step else contextlib.nullcontext()
        with context:
            losses = model.loss(x, samples)
            sum(v for k, v in losses.items() if 'loss' in k).backward()
    if sample_strategy == 'flops_uniform':
        assert model.flops_table is not None


def _scalars(work_dir):
    return [
        json.loads(line)
        for path in work_dir.glob('*/vis_data/scalars.json')
        for line in open(path)
    ]


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_amp_training_runs_a_few_iterations_on_cuda(mnist5k_root, tmp_path,
                                                    dtype):
    result = run_python([
        'tools/train.py', DEMO, '--amp', '--work-dir',
        str(tmp_path), '--cfg-options', 'train_cfg.max_epochs=1',
        f'optim_wrapper.dtype={dtype}', 'default_hooks.logger.interval=1'
    ] + _small(mnist5k_root))
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(tmp_path / 'epoch_1.pth')  # where it was saved
    optimizer = checkpoint['optimizer']
    assert 'loss_scaler' in optimizer  # mmengine's AmpOptimWrapper
    assert all(s['momentum_buffer'].is_cuda
               for s in optimizer['state'].values())
    assert checkpoint['meta']['iter'] == 3
    losses = [r['loss'] for r in _scalars(tmp_path) if 'loss' in r]
    assert len(losses) >= 1 and all(math.isfinite(v) for v in losses)
    accuracy = [r for r in _scalars(tmp_path)
                if 'max_subnet.accuracy/top1' in r]
    assert accuracy  # validated (BN recalibrated) on the GPU too


@pytest.mark.cuda
def test_resume_on_cuda_with_amp_restores_everything_exactly(
        mnist5k_root, tmp_path):
    runner, checkpoint = check_resume(mnist5k_root, tmp_path / 'pse',
                                      ['--amp'])
    assert next(runner.model.parameters()).is_cuda
    assert type(runner.optim_wrapper).__name__ == 'AmpOptimWrapper'
    assert 'loss_scaler' in checkpoint['optimizer']


@pytest.mark.cuda
@pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason='DDP on GPUs needs two of them')
def test_two_gpu_ddp_ranks_train_the_same_subnets(mnist5k_root, tmp_path):
    ranks = run_ddp(mnist5k_root, tmp_path)
    assert all(r['device'] == 'cuda' for r in ranks)
    check_ddp_ranks(ranks)
