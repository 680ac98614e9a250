import os.path as osp
import subprocess
import sys

import pytest

import psenet_plugin  # noqa: F401  compat fixes before anything of mmrazor

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


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
