"""Supernet training end to end: resume, DDP, the paper config, the demo."""
import json
import os
import socket
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from conftest import REPO, data_root_options, run_python
from helpers import write_image_folder

DEMO = 'configs/demo/pse_mbv2_mnist.py'


def _small(root):
    """A slice of the embedded data: quick epochs."""
    return data_root_options(root) + [
        'train_dataloader.dataset.indices=96', 'train_dataloader.batch_size=32',
        'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
        'val_dataloader.dataset.indices=64', 'val_cfg.calibrate_sample_num=64',
        'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1'
    ]


def _options(pairs):
    from mmengine.config import DictAction
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction)
    return parser.parse_args(['--o'] + pairs).o


def _cpu(value):
    """``value`` with every tensor in it moved to the CPU."""
    if torch.is_tensor(value):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(v) for v in value)
    return value


def check_resume(root, work_dir, extra_args=()):
    """Train the demo for one epoch (3 steps), resume it in-process with
    nothing left to train and check that the restored state is exactly the
    checkpoint's, on whatever device the runner trains on (mmengine saves
    the weights on the CPU, the optimizer state where it lives); then
    resume it for a second epoch from the command line. ``extra_args``
    go to tools/train.py (e.g. ``--amp``). Returns the in-process runner
    and the checkpoint (loaded on the CPU)."""
    from psenet_plugin.cli import set_amp
    first = run_python([
        'tools/train.py', DEMO, '--work-dir',
        str(work_dir), *extra_args, '--cfg-options', 'train_cfg.max_epochs=1'
    ] + _small(root))
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = torch.load(work_dir / 'epoch_1.pth', map_location='cpu')
    assert checkpoint['prior_stats']['num_records'] == 3 * 4  # 3 steps x K
    on_disk = json.loads((work_dir / 'prior_stats.json').read_text())
    assert on_disk == checkpoint['prior_stats']

    # Resume in-process, with nothing left to train: the restored state is
    # exactly the checkpoint's.
    cfg = Config.fromfile(os.path.join(REPO, DEMO))
    cfg.merge_from_dict(_options(_small(root)))
    cfg.work_dir = str(work_dir)
    cfg.resume = True
    cfg.load_from = str(work_dir / 'epoch_1.pth')
    cfg.train_cfg.max_epochs = 1
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if '--amp' in extra_args:
        set_amp(cfg)  # what tools/train.py --amp does
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.epoch == 1 and runner.iter == 3
    state = _cpu(runner.model.state_dict())
    assert state.keys() == checkpoint['state_dict'].keys()
    for key, value in checkpoint['state_dict'].items():
        assert torch.equal(state[key], value), key
    optimizer = _cpu(runner.optim_wrapper.state_dict())
    assert optimizer['state'].keys() == checkpoint['optimizer']['state'].keys()
    for index, saved in checkpoint['optimizer']['state'].items():
        assert torch.equal(optimizer['state'][index]['momentum_buffer'],
                           saved['momentum_buffer'])
    assert optimizer['param_groups'] == checkpoint['optimizer'][
        'param_groups']
    # AmpOptimWrapper: the loss scale and its growth tracker too
    assert optimizer.get('loss_scaler') == checkpoint['optimizer'].get(
        'loss_scaler')
    prior = next(h for h in runner.hooks
                 if type(h).__name__ == 'PriorRecorderHook')
    assert prior.stats.state_dict() == checkpoint['prior_stats']

    # And training goes on from there: epoch 2 adds to the statistics.
    resumed = run_python([
        'tools/train.py', DEMO, '--work-dir',
        str(work_dir), *extra_args, '--resume', '--cfg-options',
        'train_cfg.max_epochs=2'
    ] + _small(root))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 1, iter: 3' in resumed.stdout
    epoch2 = torch.load(work_dir / 'epoch_2.pth', map_location='cpu')
    assert epoch2['prior_stats']['num_records'] == 6 * 4
    return runner, checkpoint


def test_resume_restores_weights_optimizer_epoch_and_prior_exactly(
        mnist5k_root, tmp_path):
    """On the CPU, or on the GPU where there is one (mmengine's runner
    trains on it): the test compares on the CPU."""
    check_resume(mnist5k_root, tmp_path / 'pse')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_ddp(root, tmp_path, nproc=2, env=None):
    """Train one demo epoch with ``nproc`` processes (tests/ddp_worker.py);
    returns what every rank wrote (loaded on the CPU)."""
    options = [
        f'{k}={v!r}' for k, v in _options(
            _small(root) +
            ['train_cfg.max_epochs=1', f'work_dir={tmp_path}/work']).items()
    ]
    env = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    result = run_python([
        '-m', 'torch.distributed.run', '--nproc-per-node',
        str(nproc), '--master-port',
        str(_free_port()), 'tests/ddp_worker.py', DEMO,
        str(tmp_path)
    ] + options + ['val_cfg=None', 'val_dataloader=None',
                   'val_evaluator=None'],
                        env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return [
        torch.load(tmp_path / f'rank{r}.pth', map_location='cpu')
        for r in range(nproc)
    ]


def check_ddp_ranks(ranks):
    """Every rank trained the same subnets at every step and ends with the
    same weights and the same prior."""
    # 96 images, 2 ranks x 32 per batch: 2 steps (the last one smaller).
    assert len(ranks[0]['subnets']) == 2
    assert ranks[0]['subnets'] == ranks[1]['subnets']
    assert ranks[0]['subnets'][0][0] != ranks[0]['subnets'][0][1]  # max, min
    # Identical weights (BN running statistics are per rank: every rank
    # normalises its own samples, as in any DDP run without SyncBN).
    assert ranks[0]['parameters'].keys() == ranks[1]['parameters'].keys()
    for key, value in ranks[0]['parameters'].items():
        assert torch.equal(value, ranks[1]['parameters'][key]), key
    assert ranks[0]['prior'] == ranks[1]['prior']
    assert ranks[0]['prior']['num_records'] == 2 * 4


def test_two_process_ddp_ranks_train_the_same_subnets(mnist5k_root,
                                                      tmp_path):
    """Two CPU processes (gloo), also on a machine with a GPU: the GPU is
    hidden from them (two processes would otherwise share one GPU with
    NCCL; test_cuda.py runs DDP on GPUs where there are two)."""
    ranks = run_ddp(mnist5k_root, tmp_path,
                    env=dict(CUDA_VISIBLE_DEVICES=''))
    assert all(r['device'] == 'cpu' for r in ranks)
    check_ddp_ranks(ranks)


def test_paper_config_runs_two_iterations_on_a_fake_imagenet(tmp_path):
    root = str(tmp_path / 'imagenet')
    # 20 training images: 4 held out for the search, 16 trained on.
    write_image_folder(root, 'train', num_classes=4, per_class=5, size=64)
    write_image_folder(root, 'val', num_classes=4, per_class=2, size=64)
    work_dir = tmp_path / 'work'
    result = run_python([
        'tools/train.py', 'configs/pse_mbv2.py', '--work-dir',
        str(work_dir), '--cfg-options'
    ] + data_root_options(root) + [
        'train_dataloader.batch_size=8', 'train_dataloader.num_workers=0',
        'train_dataloader.dataset.heldout=4',
        'val_dataloader.batch_size=8', 'val_dataloader.num_workers=0',
        'val_cfg.calibrate_sample_num=8', 'train_cfg.max_epochs=1'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Epoch(train) [1][2/2]' in result.stdout
    assert 'max_subnet.accuracy/top1' in result.stdout
    checkpoint = torch.load(work_dir / 'epoch_1.pth', map_location='cpu')
    assert checkpoint['meta']['iter'] == 2
    assert checkpoint['prior_stats']['num_records'] == 2 * 4
    assert checkpoint['state_dict'][
        'architecture.head.fc.weight'].shape == (1000, 1920)


@pytest.mark.slow
def test_demo_reaches_the_accuracy_targets(mnist5k_root, tmp_path):
    """Max subnet >= 90%, min subnet >= 80% on the embedded validation
    digits, within 10 minutes of CPU training."""
    import time
    start = time.time()
    result = run_python(
        ['tools/train.py', DEMO, '--work-dir',
         str(tmp_path), '--cfg-options'] + data_root_options(mnist5k_root),
        timeout=900)
    minutes = (time.time() - start) / 60
    assert result.returncode == 0, result.stderr[-3000:]
    records = [
        json.loads(line) for path in tmp_path.glob('*/vis_data/scalars.json')
        for line in open(path)
    ]
    final = [r for r in records if 'max_subnet.accuracy/top1' in r][-1]
    print(f'max {final["max_subnet.accuracy/top1"]:.1f}% '
          f'min {final["min_subnet.accuracy/top1"]:.1f}% '
          f'in {minutes:.1f} min', file=sys.stderr)
    assert final['max_subnet.accuracy/top1'] >= 90
    assert final['min_subnet.accuracy/top1'] >= 80
    assert minutes < 10
