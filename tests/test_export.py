"""Export: a physically smaller model that equals the supernet set to the
subnet, with its batch norm statistics recalibrated for the subnet as
mmrazor recalibrates them, in PyTorch, ONNX, through mmrazor's sub_model path
and tools/test.py."""
import importlib.util
import json
import os
import pickle
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope
from mmengine.runner import Runner, load_checkpoint
from mmrazor.engine.runner.utils import CalibrateBNMixin
from mmrazor.registry import MODELS, sub_model
from torch.nn.modules.batchnorm import _BatchNorm

from psenet_plugin.errors import ConfigError
from psenet_plugin.structures.export import CalibrationLoader, calibrate_bn
from psenet_plugin.structures.subnet import save_subnet

from conftest import DEMO, DEMO_SEARCH, REPO, data_root_options, run_python

#: Training images that recalibrate the BN statistics in these tests: two
#: batches of 32.
CALIBRATE = 64
CALIBRATION_OPTIONS = {
    'train_dataloader.batch_size': 32,
    'train_dataloader.num_workers': 0
}
SUBNET_CONFIG = 'configs/demo/pse_mbv2_mnist_subnet.py'


def _supernet(checkpoint):
    model = MODELS.build(Config.fromfile(os.path.join(REPO, DEMO)).model)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    return model.eval()


def _calibration_options(root):
    """--cfg-options of the calibration: the data root, two batches."""
    return data_root_options(root) + [
        f'{key}={value}' for key, value in CALIBRATION_OPTIONS.items()
    ]


def _calibration_loader(root):
    """The images tools/export.py calibrates on with these options."""
    cfg = Config.fromfile(os.path.join(REPO, DEMO))
    cfg.merge_from_dict(
        dict([o.split('=', 1) for o in data_root_options(root)],
             **CALIBRATION_OPTIONS))
    return CalibrationLoader(cfg.train_dataloader, default_scope='mmpretrain')


class MMRazorCalibration(CalibrateBNMixin):
    """mmrazor's own BN calibration (``SubnetValLoop``, the search), outside
    a runner: the reference."""

    def __init__(self, model):
        self.runner = SimpleNamespace(
            model=model, logger=MMLogger.get_current_instance())


def _calibrated_by_mmrazor(model, widths, batches, num):
    model.mutator.set_choices(model.mutator.choices_of(widths))
    MMRazorCalibration(model).calibrate_bn_statistics(batches, num)
    return model.eval()


@pytest.fixture(scope='module')
def picked(trained_supernet, tmp_path_factory):
    """A random subnet of the trained supernet: (widths, subnet file)."""
    _, checkpoint = trained_supernet
    model = _supernet(checkpoint)
    mutator = model.mutator
    widths = mutator.widths_of(
        mutator.sample_choices('random', random.Random(7)))
    folder = tmp_path_factory.mktemp('picked')
    save_subnet(
        str(folder / 'picked.json'), str(folder / 'picked.yaml'), mutator,
        widths, model.flops_table)
    return widths, str(folder / 'picked.json')


@pytest.fixture(scope='module')
def exported(trained_supernet, picked, mnist5k_root, tmp_path_factory):
    """The subnet exported with --onnx and the BN statistics recalibrated on
    the config's calibration size (64 here): (the supernet set to the
    subnet with its BN statistics recalibrated by mmrazor on the same
    images, widths, export dir, tool output)."""
    _, checkpoint = trained_supernet
    widths, subnet_file = picked
    out = tmp_path_factory.mktemp('export') / 'out'
    result = run_python([
        'tools/export.py', DEMO, checkpoint, subnet_file, '--out-dir',
        str(out), '--onnx', '--cfg-options',
        f'val_cfg.calibrate_sample_num={CALIBRATE}'
    ] + _calibration_options(mnist5k_root))
    assert result.returncode == 0, result.stderr[-3000:]
    model = _calibrated_by_mmrazor(
        _supernet(checkpoint), widths, _calibration_loader(mnist5k_root),
        CALIBRATE)
    return model, widths, out, result.stdout


@pytest.fixture(scope='module')
def exported_uncalibrated(trained_supernet, picked, tmp_path_factory):
    """The same subnet exported with --calibrate 0: (export dir, tool
    output)."""
    _, checkpoint = trained_supernet
    _, subnet_file = picked
    out = tmp_path_factory.mktemp('export') / 'uncalibrated'
    result = run_python([
        'tools/export.py', DEMO, checkpoint, subnet_file, '--out-dir',
        str(out), '--calibrate', '0'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def _digits(seed=0):
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(
        seed)) * 4 - 2


def _static_from_mmrazor(out):
    """The pruned model as mmrazor's standard path builds it, with the
    exported weights loaded strictly."""
    cfg = Config.fromfile(os.path.join(REPO, SUBNET_CONFIG))
    static = sub_model(
        cfg=cfg.model.cfg,
        fix_subnet=str(out / 'fix_subnet.yaml'),
        mode='mutator')
    state = torch.load(out / 'subnet_static.pth')['state_dict']
    static.load_state_dict(state, strict=True)
    return static.eval()


def test_exported_model_equals_the_calibrated_supernet_set_to_the_subnet(
        exported):
    """Same logits as the supernet set to the subnet, its BN statistics
    recalibrated by mmrazor's CalibrateBNMixin on the same images."""
    model, widths, out, _ = exported
    static = _static_from_mmrazor(out)
    model.mutator.set_choices(model.mutator.choices_of(widths))
    x = _digits()
    with torch.no_grad():
        expected = model.architecture(x, mode='tensor')
        actual = static(x, mode='tensor')
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert isinstance(static.backbone.conv1.conv, torch.nn.Conv2d)
    assert type(static.backbone.conv1.conv) is torch.nn.Conv2d  # static


def test_exported_params_and_flops_equal_the_table(exported):
    model, widths, out, stdout = exported
    static = _static_from_mmrazor(out)
    table = model.flops_table
    assert sum(p.numel() for p in static.parameters()) == table.params(
        widths)
    counted = get_model_complexity_info(
        static, input_shape=(3, 32, 32), show_table=False, show_arch=False)
    assert counted['flops'] == table.flops(widths)
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['flops'] == table.flops(widths)
    assert summary['params'] < summary['supernet_params']
    assert summary['widths'] == widths
    conv1 = next(r for r in summary['layers']
                 if r['name'] == 'backbone.conv1.conv')
    assert conv1['out_channels'] == static.backbone.conv1.conv.out_channels
    assert f'{table.flops(widths) / 1e6:.3f} MFLOPs' in stdout


def test_onnx_runs_matches_and_holds_the_subnet_parameters(exported):
    import onnxruntime
    model, widths, out, _ = exported
    static = _static_from_mmrazor(out)
    session = onnxruntime.InferenceSession(str(out / 'subnet.onnx'))
    x = _digits(1)
    (logits, ) = session.run(None, {'input': x.numpy()})
    with torch.no_grad():
        expected = static(x, mode='tensor').numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['onnx_params'] == model.flops_table.params(widths)


def test_both_subnet_formats_load_back(exported):
    """... through the plugin, and as plain data (no Python tags)."""
    import yaml

    from psenet_plugin.structures.subnet import load_subnet
    model, widths, out, _ = exported
    assert load_subnet(str(out / 'subnet.json'), model.mutator) == widths
    assert load_subnet(str(out / 'fix_subnet.yaml'), model.mutator) == widths
    units = yaml.safe_load((out / 'fix_subnet.yaml').read_text())[
        'channel_unit_cfg']['units']
    assert {name: unit['choice'] for name, unit in units.items()} == widths
    for name in ('subnet.json', 'summary.json'):
        json.loads((out / name).read_text())


def test_subnet_file_from_another_model_names_the_units(
        exported, trained_supernet, tmp_path):
    model, widths, out, _ = exported
    _, checkpoint = trained_supernet
    record = json.loads((out / 'subnet.json').read_text())
    first = sorted(record['widths'])[0]
    record['widths']['backbone.other.conv_(0, 64)_64'] = 64
    del record['widths'][first]
    path = tmp_path / 'other.json'
    path.write_text(json.dumps(record))
    result = run_python(['tools/export.py', DEMO, checkpoint, str(path)])
    assert result.returncode == 2
    assert 'does not match this model' in result.stderr
    assert "'backbone.other.conv_(0, 64)_64'" in result.stderr
    assert repr(first) in result.stderr


def test_subnet_config_fine_tunes_the_exported_model(exported, mnist5k_root,
                                                     tmp_path):
    _, _, out, _ = exported
    result = run_python([
        'tools/train.py', SUBNET_CONFIG, '--work-dir',
        str(tmp_path), '--cfg-options',
        f'model.fix_subnet={out}/fix_subnet.yaml',
        f'model.init_cfg.checkpoint={out}/subnet_static.pth',
        'train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=128',
        'val_dataloader.dataset.indices=100', 'train_dataloader.num_workers=0',
        'val_dataloader.num_workers=0'
    ] + data_root_options(mnist5k_root))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'accuracy/top1' in result.stdout
    exported_state = torch.load(out / 'subnet_static.pth')['state_dict']
    trained = torch.load(tmp_path / 'epoch_1.pth')['state_dict']
    assert {k: v.shape for k, v in trained.items()} == {
        k: v.shape for k, v in exported_state.items()
    }


# Batch norm statistics recalibrated for the subnet


def _bn_statistics(state):
    return {
        k: v
        for k, v in state.items()
        if k.endswith(('running_mean', 'running_var'))
    }


def test_export_records_how_many_images_calibrated_the_bn_statistics(
        exported, exported_uncalibrated):
    _, _, out, stdout = exported
    out_uncalibrated, stdout_uncalibrated = exported_uncalibrated
    for folder, images in ((out, CALIBRATE), (out_uncalibrated, 0)):
        summary = json.loads((folder / 'summary.json').read_text())
        assert summary['bn_calibration_images'] == images
        meta = torch.load(folder / 'subnet_static.pth')['meta']
        assert meta['bn_calibration_images'] == images
    assert f'recalibrated on {CALIBRATE} images' in stdout
    assert f'BN calibration: {CALIBRATE}/{CALIBRATE} images' in stdout
    assert "--calibrate 0: the exported BN running statistics are the " \
        "supernet's" in stdout_uncalibrated


def test_without_calibration_bn_statistics_are_the_supernets_sliced(
        trained_supernet, exported, exported_uncalibrated):
    """--calibrate 0 slices the supernet's statistics; calibration changes
    every one of them and nothing else."""
    _, checkpoint = trained_supernet
    _, _, out, _ = exported
    out_uncalibrated, _ = exported_uncalibrated
    supernet = _supernet(checkpoint).state_dict()
    calibrated = torch.load(out / 'subnet_static.pth')['state_dict']
    uncalibrated = torch.load(out_uncalibrated /
                              'subnet_static.pth')['state_dict']
    statistics = _bn_statistics(uncalibrated)
    assert len(statistics) == 2 * 52  # every BN of MobileNetV2
    for key, value in statistics.items():
        sliced = supernet['architecture.' + key][:value.shape[0]]
        assert torch.equal(value, sliced), key
        assert not torch.equal(calibrated[key], value), key
        if key.endswith('running_var'):
            assert (calibrated[key] - value).abs().max() > 0.01, key
    for key, value in uncalibrated.items():
        if key not in statistics and not key.endswith('num_batches_tracked'):
            assert torch.equal(calibrated[key], value), key


def _val_scores(model, root):
    """Per-image scores and labels of ``model.test_step`` on the validation
    images (the subnet config's test_dataloader: 1,000 digits)."""
    cfg = Config.fromfile(os.path.join(REPO, SUBNET_CONFIG))
    loader_cfg = cfg.test_dataloader
    loader_cfg.dataset.data_root = root
    loader_cfg.num_workers = 0
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        loader = Runner.build_dataloader(loader_cfg)
    scores, labels = [], []
    with torch.no_grad():
        for batch in loader:
            for sample in model.test_step(batch):
                scores.append(sample.pred_score)
                labels.append(sample.gt_label)
    return torch.stack(scores), torch.cat(labels)


def _top1(scores, labels):
    return 100.0 * (scores.argmax(1) == labels).float().mean().item()


def test_exported_model_tests_as_the_calibrated_supernet_set_to_the_subnet(
        exported, mnist5k_root, tmp_path):
    """tools/test.py on the exported checkpoint (subnet config) gives the
    top-1, image by image, of the supernet set to the subnet with its BN
    statistics recalibrated by mmrazor on the same training images."""
    model, widths, out, _ = exported
    result = run_python([
        'tools/test.py', SUBNET_CONFIG,
        str(out / 'subnet_static.pth'), '--work-dir',
        str(tmp_path), '--out',
        str(tmp_path / 'preds.pkl'), '--cfg-options',
        f'model.fix_subnet={out}/fix_subnet.yaml',
        f'model.init_cfg.checkpoint={out}/subnet_static.pth',
        'test_dataloader.num_workers=0'
    ] + data_root_options(mnist5k_root))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / 'preds.pkl', 'rb') as f:
        preds = pickle.load(f)
    tested = torch.stack([p['pred_score'] for p in preds])
    tested_labels = torch.cat([p['gt_label'] for p in preds])
    top1 = float(result.stdout.split('accuracy/top1: ')[1].split()[0])

    model.mutator.set_choices(model.mutator.choices_of(widths))
    expected, labels = _val_scores(model, mnist5k_root)
    assert torch.equal(tested_labels, labels)
    assert abs(top1 - _top1(expected, labels)) <= 0.5
    torch.testing.assert_close(tested, expected, rtol=1e-4, atol=1e-5)


def test_calibration_images_are_the_same_shuffled_ones_every_time(
        mnist5k_root):
    loader = _calibration_loader(mnist5k_root)
    state = np.random.get_state()[1].copy()
    first, second = ([b for _, b in zip(range(2), loader)] for _ in range(2))
    for a, b in zip(first, second):
        assert all(torch.equal(x, y) for x, y in zip(a['inputs'],
                                                     b['inputs']))
    labels = {int(s.gt_label) for s in first[0]['data_samples']}
    assert len(labels) > 5  # a shuffled sample, not the first class
    assert np.array_equal(np.random.get_state()[1], state)  # restored


def test_calibration_cuts_the_last_batch_and_weighs_images_as_mmrazor(
        trained_supernet, picked, mnist5k_root):
    """40 images in batches of 32: the second batch is cut to 8; every image
    counts once, as in mmrazor's CalibrateBNMixin; the momenta, the mode and
    the choices are restored."""
    from psenet_plugin.structures.export import export_static
    _, checkpoint = trained_supernet
    widths, _ = picked
    loader = _calibration_loader(mnist5k_root)
    ours = _supernet(checkpoint)
    choices = ours.mutator.current_choices
    assert calibrate_bn(ours, widths, loader, 40) == 40
    assert not ours.training and ours.mutator.current_choices == choices
    assert all(m.momentum == 0.1 for m in ours.modules()
               if isinstance(m, _BatchNorm))
    first, second = (b for _, b in zip(range(2), loader))
    second = {key: value[:8] for key, value in second.items()}
    reference = _calibrated_by_mmrazor(
        _supernet(checkpoint), widths, [first, second], 40)
    ours_static = _bn_statistics(export_static(ours, widths).state_dict())
    reference_static = export_static(reference, widths).state_dict()
    for key, value in ours_static.items():
        torch.testing.assert_close(
            value, reference_static[key], rtol=1e-4, atol=1e-5)


def _export_tool():
    spec = importlib.util.spec_from_file_location(
        'export_tool', os.path.join(REPO, 'tools/export.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_calibration_size_defaults_to_the_configs_subnet_calibration():
    tool = _export_tool()
    cfg = Config.fromfile(os.path.join(REPO, DEMO))
    assert tool.calibration_size(cfg, DEMO) == (
        1000, 'val_cfg.calibrate_sample_num')
    search = Config.fromfile(os.path.join(REPO, DEMO_SEARCH))
    assert tool.calibration_size(search, DEMO_SEARCH) == (
        1000, 'train_cfg.calibrate_sample_num')
    cfg.val_cfg = dict(type='mmrazor.SubnetValLoop')  # mmrazor's default
    assert tool.calibration_size(cfg, DEMO) == (
        4096, 'val_cfg.calibrate_sample_num')
    search.train_cfg.calibrate_sample_num = -1  # a search without it
    with pytest.raises(ConfigError,
                       match=r'train_cfg.calibrate_sample_num=-1.*--calibrate'
                       ):
        tool.calibration_size(search, DEMO_SEARCH)


def test_calibration_errors_are_one_line(trained_supernet, picked, tmp_path):
    _, checkpoint = trained_supernet
    _, subnet_file = picked
    result = run_python([
        'tools/export.py', DEMO, checkpoint, subnet_file, '--calibrate', '-1'
    ])
    assert result.returncode == 2
    assert result.stderr.startswith('error: --calibrate -1; accepted:')
    assert result.stderr.count('\n') == 1
    result = run_python([
        'tools/export.py', DEMO, checkpoint, subnet_file, '--out-dir',
        str(tmp_path), '--calibrate', '8', '--cfg-options'
    ] + data_root_options(str(tmp_path / 'missing')))
    assert result.returncode == 2
    last = result.stderr.splitlines()[-1]
    assert last.startswith('error: train_dataloader.') and \
        'does not exist' in last
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'summary.json').exists()
