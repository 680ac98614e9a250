"""Supernet training end to end: resume, DDP, the paper config, the demo."""
import json
import os
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


def test_resume_restores_weights_optimizer_epoch_and_prior_exactly(
        mnist5k_root, tmp_path):
    work_dir = tmp_path / 'pse'
    first = run_python([
        'tools/train.py', DEMO, '--work-dir',
        str(work_dir), '--cfg-options', 'train_cfg.max_epochs=1'
    ] + _small(mnist5k_root))
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = torch.load(work_dir / 'epoch_1.pth')
    assert checkpoint['prior_stats']['num_records'] == 3 * 4  # 3 steps x K
    on_disk = json.loads((work_dir / 'prior_stats.json').read_text())
    assert on_disk == checkpoint['prior_stats']

    # Resume in-process, with nothing left to train: the restored state is
    # exactly the checkpoint's.
    cfg = Config.fromfile(os.path.join(REPO, DEMO))
    cfg.merge_from_dict(_options(_small(mnist5k_root)))
    cfg.work_dir = str(work_dir)
    cfg.resume = True
    cfg.load_from = str(work_dir / 'epoch_1.pth')
    cfg.train_cfg.max_epochs = 1
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.epoch == 1 and runner.iter == 3
    state = runner.model.state_dict()
    assert state.keys() == checkpoint['state_dict'].keys()
    for key, value in checkpoint['state_dict'].items():
        assert torch.equal(state[key], value), key
    optimizer = runner.optim_wrapper.state_dict()
    for index, saved in checkpoint['optimizer']['state'].items():
        assert torch.equal(optimizer['state'][index]['momentum_buffer'],
                           saved['momentum_buffer'])
    assert optimizer['param_groups'] == checkpoint['optimizer'][
        'param_groups']
    prior = next(h for h in runner.hooks
                 if type(h).__name__ == 'PriorRecorderHook')
    assert prior.stats.state_dict() == checkpoint['prior_stats']

    # And training goes on from there: epoch 2 adds to the statistics.
    resumed = run_python([
        'tools/train.py', DEMO, '--work-dir',
        str(work_dir), '--resume', '--cfg-options', 'train_cfg.max_epochs=2'
    ] + _small(mnist5k_root))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 1, iter: 3' in resumed.stdout
    epoch2 = torch.load(work_dir / 'epoch_2.pth')
    assert epoch2['prior_stats']['num_records'] == 6 * 4


def test_two_process_ddp_ranks_train_the_same_subnets(mnist5k_root,
                                                      tmp_path):
    options = [
        f'{k}={v!r}' for k, v in _options(
            _small(mnist5k_root) +
            ['train_cfg.max_epochs=1', f'work_dir={tmp_path}/work']).items()
    ]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = run_python([
        '-m', 'torch.distributed.run', '--nproc-per-node', '2',
        '--master-port', '29533', 'tests/ddp_worker.py', DEMO,
        str(tmp_path)
    ] + options + ['val_cfg=None', 'val_dataloader=None',
                   'val_evaluator=None'],
                        env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f'rank{r}.pth') for r in (0, 1)]
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
    checkpoint = torch.load(work_dir / 'epoch_1.pth')
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
