"""The command-line tools: mmpretrain conventions, one-line errors, and the
AutoSlim baseline training and resuming on the embedded data."""
import json
import os.path as osp

import pytest
import torch

from conftest import DEMO, data_root_options, run_python

BASELINE = 'configs/baselines/autoslim_mbv2_1.5x_supernet_mnist5k.py'


def _one_line_error(result):
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    return lines[0]


def test_unknown_config_path_is_one_clear_error():
    error = _one_line_error(
        run_python(['tools/train.py', 'configs/baselines/autoslim_mnist.py']))
    assert "config file 'configs/baselines/autoslim_mnist.py' does not exist" \
        in error
    assert 'Did you mean: ' + BASELINE in error


def test_unprepared_dataset_is_one_clear_error(tmp_path):
    missing = tmp_path / 'mnist5k'
    error = _one_line_error(
        run_python(['tools/train.py', BASELINE, '--cfg-options'] +
                   data_root_options(missing)))
    assert f'python tools/prepare_data.py mnist5k --root {missing}' in error


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='with a GPU, --amp is a valid option')
def test_amp_without_a_gpu_is_one_clear_error():
    result = run_python(['tools/train.py', BASELINE, '--amp'])
    assert '--amp needs a GPU' in _one_line_error(result)


def test_test_tool_needs_an_existing_checkpoint():
    error = _one_line_error(
        run_python(['tools/test.py', BASELINE, 'no/such.pth']))
    assert "checkpoint 'no/such.pth' does not exist" in error


def _scalars(work_dir):
    """Every record of mmengine's scalar logs under ``work_dir``."""
    records = []
    for path in sorted(work_dir.glob('*/vis_data/scalars.json')):
        with open(path) as f:
            records += [json.loads(line) for line in f]
    return records


def test_autoslim_baseline_trains_an_epoch_then_resumes(
        mnist5k_root, tmp_path):
    # A 128-image slice of the embedded data keeps this test short; the
    # full-epoch run is the README's baseline command.
    small = data_root_options(mnist5k_root) + [
        'train_dataloader.dataset.indices=128',
        'val_dataloader.dataset.indices=64', 'val_cfg.calibrate_sample_num=64',
        'train_dataloader.batch_size=32', 'train_dataloader.num_workers=0',
        'val_dataloader.num_workers=0'
    ]
    work_dir = tmp_path / 'autoslim'
    first = run_python([
        'tools/train.py', BASELINE, '--work-dir',
        str(work_dir), '--cfg-options', 'train_cfg.max_epochs=1'
    ] + small)
    assert first.returncode == 0, first.stderr[-3000:]
    epoch1 = torch.load(work_dir / 'epoch_1.pth')  # weights_only default
    assert epoch1['meta']['epoch'] == 1 and epoch1['meta']['iter'] == 4

    resumed = run_python([
        'tools/train.py', BASELINE, '--work-dir',
        str(work_dir), '--resume', '--cfg-options', 'train_cfg.max_epochs=2'
    ] + small)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 1, iter: 4' in resumed.stdout
    epoch2 = torch.load(work_dir / 'epoch_2.pth')
    assert epoch2['meta']['epoch'] == 2 and epoch2['meta']['iter'] == 8
    # Training went on from epoch 1's weights: the optimizer state carries
    # epoch 1's momentum, and the second run logged epoch 2 only.
    train_epochs = {r['epoch'] for r in _scalars(work_dir) if 'lr' in r}
    assert train_epochs == {1, 2}
    assert osp.isfile(work_dir / 'last_checkpoint')


def test_eval_subnets_ratios_run_every_unit_from_its_min_to_its_max(
        trained_supernet, mnist5k_root, tmp_path):
    """``--ratios``: one subnet per step from min to max, every unit at the
    same position among its candidate widths, each evaluated."""
    _, checkpoint = trained_supernet
    out = tmp_path / 'ratios.json'
    result = run_python([
        'tools/eval_subnets.py', DEMO, checkpoint, '--ratios',
        '--calibrate', '64', '--out',
        str(out), '--work-dir',
        str(tmp_path / 'work'), '--cfg-options',
        'val_dataloader.num_workers=0', 'train_dataloader.num_workers=0',
        'val_dataloader.dataset.indices=64'
    ] + data_root_options(mnist5k_root))
    assert result.returncode == 0, result.stderr[-3000:]
    subnets = json.load(open(out))['subnets']
    kinds = [s['kind'] for s in subnets]
    # AutoSlim's 11 candidate ratios: 2/12 ... 12/12.
    assert kinds == ['max', 'min'] + [f'ratio{i}of10' for i in range(11)]
    ratios = [s['widths'] for s in subnets[2:]]
    assert ratios[0] == subnets[1]['widths'] and ratios[-1] == subnets[0][
        'widths']
    for narrower, wider in zip(ratios, ratios[1:]):
        assert all(a <= b for a, b in zip(narrower, wider))
        assert narrower != wider
    flops = [s['flops'] for s in subnets[2:]]
    assert flops == sorted(flops)
    assert all(0 <= s['top1'] <= 100 for s in subnets)
