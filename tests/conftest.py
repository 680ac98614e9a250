import contextlib
import copy
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

import psenet_plugin  # noqa: F401  compat fixes before anything of mmrazor

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs 2 workers, one a core) each
    worker computes, and starts its tools, on one thread: two workers of
    two threads each would share 2 cores four ways."""
    if os.environ.get('PYTEST_XDIST_WORKER'):
        torch.set_num_threads(1)
        os.environ['OMP_NUM_THREADS'] = '1'


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, with the reason, where torch sees no
    CUDA GPU (``pytest -m cuda`` then reports them as skipped)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason='needs a CUDA GPU (torch.cuda.is_available() is False)')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope='session')
def mnist5k_root(tmp_path_factory):
    """The embedded MNIST digits, written once per test session."""
    from psenet_plugin.datasets import prepare_dataset
    return prepare_dataset(
        'mnist5k', str(tmp_path_factory.mktemp('data') / 'mnist5k'))


def data_root_options(root):
    """--cfg-options pointing every dataloader of a config at ``root``."""
    return [
        f'{loader}.dataset.data_root={root}'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
    ]


def run_python(args, timeout=600, **kwargs):
    """Run ``python ARGS`` in the repository root; return the result."""
    return subprocess.run([sys.executable] + list(args),
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          timeout=timeout,
                          **kwargs)


DEMO = 'configs/demo/pse_mbv2_mnist.py'
DEMO_SEARCH = 'configs/demo/pse_mbv2_mnist_search.py'


@pytest.fixture(scope='session')
def trained_supernet(mnist5k_root, tmp_path_factory):
    """A demo supernet trained briefly on real digits (4 steps), with its
    recorded prior: (work_dir, checkpoint path)."""
    work_dir = tmp_path_factory.mktemp('supernet')
    result = run_python([
        'tools/train.py', DEMO, '--work-dir',
        str(work_dir), '--no-validate', '--cfg-options',
        'train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=256',
        'train_dataloader.num_workers=0'
    ] + data_root_options(mnist5k_root))
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir, str(work_dir / 'epoch_1.pth')


def search_options(root, **overrides):
    """--cfg-options for a small, quick demo search on ``root``."""
    options = dict({
        'train_cfg.num_candidates': 4,
        'train_cfg.top_k': 2,
        'train_cfg.num_mutation': 1,
        'train_cfg.num_crossover': 1,
        'train_cfg.max_epochs': 3,
        'train_cfg.calibrate_sample_num': 64,
        'train_cfg.seed': 0,
        'train_cfg.dataloader.dataset.indices': 800,  # 100 held out
        'train_cfg.dataloader.num_workers': 0,
        'train_cfg.dataloader.dataset.data_root': root,
        'train_dataloader.dataset.data_root': root,
        'train_dataloader.num_workers': 0,
    }, **overrides)
    return [f'{k}={v}' for k, v in options.items()]


def bn_state(architecture):
    """Every batch norm's running mean and variance (clones), by name."""
    return {
        name: (m.running_mean.clone(), m.running_var.clone())
        for name, m in architecture.named_modules()
        if isinstance(m, _BatchNorm)
    }


def parallel_and_alone(architecture, mutator, x, y, subnets, layout,
                       execution, autocast=contextlib.nullcontext):
    """One parallel forward/backward of ``subnets`` on ``x`` (group k of
    ``layout`` through subnet k), then every subnet alone on its group,
    weight-sliced by mmrazor's own dynamic ops (not the plugin's views), each
    under a fresh ``autocast()`` context; the weights and statistics are
    restored after each run.

    Returns:
        dict: ``logits`` (the parallel pass), ``alone`` (per group: its
        batch indices and the subnet's logits), ``grads`` (the parallel
        pass's parameter gradients), ``expected_grads`` (sum over k of
        |G_k| / B times subnet k's gradients), and the running statistics
        ``bn_before``, ``bn_parallel``, ``bn_alone`` (per subnet).
    """
    from psenet_plugin.models import forward_subnets
    from psenet_plugin.models.dynamic_ops import mmrazor_slicing
    batch = x.shape[0]
    start = copy.deepcopy(architecture.state_dict())
    bn_before = bn_state(architecture)
    architecture.zero_grad()
    with autocast():
        logits = forward_subnets(architecture, mutator, x, subnets, layout,
                                 execution)
    F.cross_entropy(logits.float(), y).backward()
    grads = {
        n: p.grad.clone()
        for n, p in architecture.named_parameters() if p.grad is not None
    }
    bn_parallel = bn_state(architecture)

    expected = {
        n: torch.zeros_like(p)
        for n, p in architecture.named_parameters()
    }
    alone, bn_alone = [], []
    for k, subnet in enumerate(subnets):
        architecture.load_state_dict(start)
        architecture.zero_grad()
        mutator.set_choices(subnet)
        index = layout.indices(k, batch, x.device)
        with mmrazor_slicing(), autocast():
            out = architecture.head(architecture.extract_feat(x[index]))
        (F.cross_entropy(out.float(), y[index]) * len(index) /
         batch).backward()
        for n, p in architecture.named_parameters():
            if p.grad is not None:
                expected[n] += p.grad
        alone.append((index, out.detach()))
        bn_alone.append(bn_state(architecture))
    architecture.load_state_dict(start)
    architecture.zero_grad()
    mutator.set_max_choices()
    return dict(logits=logits.detach(), alone=alone, grads=grads,
                expected_grads=expected,
                bn_before=bn_before, bn_parallel=bn_parallel,
                bn_alone=bn_alone)


def assert_running_stats_rule(bn_before, bn_parallel, bn_alone, rtol=1e-4,
                              atol=1e-6):
    """Per channel, the running statistics after the parallel pass are the
    mean, over the groups in which the channel is active, of what each
    subnet alone wrote; channels active in no group keep their value
    (psenet_plugin/models/parallel.py)."""
    for name, (mean_before, var_before) in bn_before.items():
        active = torch.stack([
            (alone[name][0] != mean_before) | (alone[name][1] != var_before)
            for alone in bn_alone
        ]).float()
        count = active.sum(0)
        for i, before in ((0, mean_before), (1, var_before)):
            alone_sum = sum(a * alone[name][i]
                            for a, alone in zip(active, bn_alone))
            expected = torch.where(count > 0, alone_sum / count.clamp(min=1),
                                   before)
            torch.testing.assert_close(
                bn_parallel[name][i], expected, rtol=rtol, atol=atol,
                msg=lambda m, name=name: f'{name}: {m}')
