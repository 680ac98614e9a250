"""Export: a physically smaller model that equals the supernet set to the
subnet, in PyTorch, ONNX and through mmrazor's sub_model path."""
import json
import os
import random

import numpy as np
import pytest
import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmrazor.registry import MODELS, sub_model

from psenet_plugin.structures.subnet import save_subnet

from conftest import DEMO, REPO, data_root_options, run_python


@pytest.fixture(scope='module')
def exported(trained_supernet, tmp_path_factory):
    """A random subnet of the trained supernet, exported with --onnx:
    (supernet model, widths, export dir, tool output)."""
    _, checkpoint = trained_supernet
    model = MODELS.build(Config.fromfile(os.path.join(REPO, DEMO)).model)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    model.eval()
    mutator = model.mutator
    widths = mutator.widths_of(
        mutator.sample_choices('random', random.Random(7)))
    folder = tmp_path_factory.mktemp('export')
    save_subnet(
        str(folder / 'picked.json'), str(folder / 'picked.yaml'), mutator,
        widths, model.flops_table)
    out = folder / 'out'
    result = run_python([
        'tools/export.py', DEMO, checkpoint,
        str(folder / 'picked.json'), '--out-dir',
        str(out), '--onnx'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    return model, widths, out, result.stdout


def _digits(seed=0):
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(
        seed)) * 4 - 2


def _static_from_mmrazor(out):
    """The pruned model as mmrazor's standard path builds it, with the
    exported weights loaded strictly."""
    cfg = Config.fromfile(
        os.path.join(REPO, 'configs/demo/pse_mbv2_mnist_subnet.py'))
    static = sub_model(
        cfg=cfg.model.cfg,
        fix_subnet=str(out / 'fix_subnet.yaml'),
        mode='mutator')
    state = torch.load(out / 'subnet_static.pth')['state_dict']
    static.load_state_dict(state, strict=True)
    return static.eval()


def test_exported_model_equals_the_supernet_set_to_the_subnet(exported):
    model, widths, out, _ = exported
    static = _static_from_mmrazor(out)
    model.mutator.set_choices(model.mutator.choices_of(widths))
    x = _digits()
    with torch.no_grad():
        expected = model.architecture(x, mode='tensor')
        actual = static(x, mode='tensor')
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
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
    from psenet_plugin.structures.subnet import load_subnet
    model, widths, out, _ = exported
    assert load_subnet(str(out / 'subnet.json'), model.mutator) == widths
    assert load_subnet(str(out / 'fix_subnet.yaml'), model.mutator) == widths


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
        'tools/train.py', 'configs/demo/pse_mbv2_mnist_subnet.py',
        '--work-dir',
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
