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
