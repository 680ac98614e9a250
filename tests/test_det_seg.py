"""PSE-Net on an mmdet detector (RetinaNet-MobileNetV2) and an mmseg
segmentor (FCN-MobileNetV2), on the embedded task digits: group k of a
training step is subnet k alone through the whole model and the task's own
losses; the exported subnet is smaller and computes what the supernet set
to that subnet computes."""
import copy
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmengine.analysis import get_model_complexity_info  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.registry import DATASETS, init_default_scope  # noqa: E402
from mmrazor.registry import MODELS  # noqa: E402

from conftest import REPO, run_python  # noqa: E402
from psenet_plugin.datasets import digits_tasks  # noqa: E402
from psenet_plugin.errors import ConfigError  # noqa: E402
from psenet_plugin.models.dynamic_ops import mmrazor_slicing  # noqa: E402
from psenet_plugin.structures.export import export_static  # noqa: E402

DET = 'configs/det/pse_retinanet_mbv2_digits.py'
SEG = 'configs/seg/pse_fcn_mbv2_digits.py'
TASKS = {
    'det': (DET, 'mmdet', 'digits_det'),
    'seg': (SEG, 'mmseg', 'digits_seg'),
}


@pytest.fixture(scope='session')
def task_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('task_data')
    return {
        'det': digits_tasks.prepare_digits_det(str(root / 'digits_det')),
        'seg': digits_tasks.prepare_digits_seg(str(root / 'digits_seg')),
    }


def task_cfg(task, root, **model):
    """The task's tiny config, on the data in ``root``, dropout off (it
    draws random numbers: no two runs would compare)."""
    path, scope, _ = TASKS[task]
    cfg = Config.fromfile(osp.join(REPO, path))
    root = root.rstrip('/') + '/'
    cfg.data_root = root
    for key in ('train_dataloader', 'heldout_dataloader'):
        cfg[key].dataset.dataset.data_root = root
    cfg.val_dataloader.dataset.data_root = root
    if task == 'det':
        cfg.val_evaluator.ann_file = root + 'annotations/val.json'
        cfg.heldout_evaluator.ann_file = root + 'annotations/train.json'
    else:
        cfg.model.architecture.decode_head.dropout_ratio = 0.
    cfg.model.update(model)
    init_default_scope(scope)
    return cfg


def a_batch(model, cfg, size=8, train=True):
    loader = cfg.train_dataloader if train else cfg.val_dataloader
    dataset = DATASETS.build(loader.dataset)
    batch = pseudo_collate([dataset[i] for i in range(size)])
    return model.data_preprocessor(batch, train)


# the embedded task data


def test_task_data_boxes_and_masks_mark_the_same_real_digits(task_data):
    from PIL import Image
    det, seg = task_data['det'], task_data['seg']
    assert digits_tasks.damage(det, 'digits_det') is None
    assert digits_tasks.damage(seg, 'digits_seg') is None
    with open(osp.join(det, 'annotations', 'train.json')) as f:
        coco = json.load(f)
    assert len(coco['images']) == digits_tasks.COUNTS['train']
    assert [c['name'] for c in coco['categories']] == list('0123456789')
    by_image = {}
    for a in coco['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    for i in range(10):  # the same canvases in both datasets
        name = f'{i:06d}.png'
        image = np.asarray(Image.open(osp.join(det, 'images/train', name)))
        assert image.shape == (64, 64, 3)
        assert np.array_equal(
            image, np.asarray(Image.open(osp.join(seg, 'img_dir/train',
                                                  name))))
        labels = np.asarray(Image.open(osp.join(seg, 'ann_dir/train', name)))
        inside = np.zeros_like(labels, bool)
        for a in by_image[i]:
            x, y, w, h = a['bbox']
            assert 0 <= x < x + w <= 64 and 0 <= y < y + h <= 64
            window = labels[y:y + h, x:x + w]
            # the digit's ink, labelled with its class, fills its box
            assert (window == a['category_id']).mean() > 0.1
            inside[y:y + h, x:x + w] = True
        assert not labels[~inside].any()  # no ink outside the boxes


def test_prepare_data_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / 'mine.txt').write_text('x')
    with pytest.raises(ConfigError, match='not a digits_det dataset'):
        digits_tasks.prepare_digits_det(str(tmp_path))
    assert os.listdir(tmp_path) == ['mine.txt']


def test_prepare_data_tool_writes_the_task_datasets(tmp_path):
    root = str(tmp_path / 'digits_seg')
    result = run_python(['tools/prepare_data.py', 'digits_seg', '--root',
                         root])
    assert result.returncode == 0, result.stderr
    assert digits_tasks.is_prepared(root, 'digits_seg')
    wrong = run_python(['tools/prepare_data.py', 'digits_det', '--root',
                        root])
    assert wrong.returncode != 0
    assert wrong.stderr.strip().splitlines()[-1].startswith('error: ')
    assert 'not a digits_det dataset' in wrong.stderr


# training: group k is subnet k alone


def losses_and_grads(losses, model):
    from mmengine.model import BaseModel
    total, _ = BaseModel.parse_losses(model, losses)
    model.zero_grad()
    total.backward()
    return total.detach(), {
        n: p.grad.clone()
        for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_group_k_of_the_step_is_subnet_k_alone(task, task_data):
    """The step's losses are the groups' losses weighted by group size; each
    group's loss (and so the gradient) is subnet k alone on its samples,
    through mmrazor's own weight slicing. In float64, as the backbone and
    classifier exactness tests: the parallel pass and the subnets alone sum
    in different orders, and float32 rounding depends on the machine's CPU
    kernels."""
    torch.manual_seed(0)
    cfg = task_cfg(task, task_data[task], num_subnets=3)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.double().train()
    reference = copy.deepcopy(model)
    data = a_batch(model, cfg, size=9)
    inputs, samples = data['inputs'].double(), data['data_samples']

    losses = model(inputs, samples, mode='loss')
    total, grads = losses_and_grads(losses, model)
    records = model.last_records
    subnets = [reference.mutator.choices_of(w) for w in records['widths']]
    assert records['kinds'] == ['max', 'min', 'rand2']
    assert subnets[0] != subnets[1]

    expected = 0
    reference.zero_grad()
    for k, subnet in enumerate(subnets):
        index = list(range(k, 9, 3))  # interleaved groups
        reference.mutator.set_choices(subnet)
        with mmrazor_slicing():  # mmrazor's own weight slicing
            alone = reference.architecture.loss(inputs[index],
                                                [samples[i] for i in index])
        alone_total, _ = reference.parse_losses(alone)
        # the records are float32 (logged), the model float64
        torch.testing.assert_close(records['losses'][k],
                                   alone_total.detach().float(),
                                   rtol=1e-5, atol=1e-6)
        (alone_total * len(index) / 9).backward()
        expected = expected + alone_total.detach() * len(index) / 9
    reference.mutator.set_max_choices()
    torch.testing.assert_close(total, expected, rtol=1e-10, atol=1e-12)
    named = dict(reference.named_parameters())
    assert grads, 'no gradient'
    for name, grad in grads.items():
        torch.testing.assert_close(grad, named[name].grad, rtol=1e-7,
                                   atol=1e-10, msg=lambda m: f'{name}: {m}')
    # the backbone and the neck/head convolutions are pruned
    units = [u.name for u in model.mutator.mutable_units]
    assert any(u.startswith('backbone.') for u in units)
    assert any(u.startswith('neck.' if task == 'det' else 'decode_head.')
               for u in units)


def test_a_detector_refuses_masked_execution_and_distillation(task_data):
    cfg = task_cfg('det', task_data['det'], execution='masked')
    with pytest.raises(ConfigError, match=r"model.execution='masked'.*"
                       r"accepted: 'sliced'"):
        MODELS.build(cfg.model)
    cfg = task_cfg('det', task_data['det'],
                   distill_loss=dict(type='mmrazor.KLDivergence'))
    with pytest.raises(ConfigError, match='model.distill_loss'):
        MODELS.build(cfg.model)


def test_an_unknown_architecture_is_refused_in_one_line():
    from psenet_plugin.models.psenet import task_of
    with pytest.raises(ConfigError, match='mmdet detector') as info:
        task_of(torch.nn.Conv2d(1, 1, 1))
    assert '\n' not in str(info.value)


# export: smaller, and the same outputs


def complexity(architecture, size=64):
    """mmengine's counter on the model's tensor-mode forward."""

    class Tensor(torch.nn.Module):

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x, mode='tensor')

    info = get_model_complexity_info(Tensor(architecture).eval(),
                                     inputs=(torch.zeros(1, 3, size, size), ),
                                     show_table=False, show_arch=False)
    return info['flops'], info['params']


def flatten(outputs):
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for o in outputs for t in flatten(o)]


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_exported_subnet_is_smaller_and_equals_the_supernet_set_to_it(
        task, task_data):
    torch.manual_seed(0)
    cfg = task_cfg(task, task_data[task])
    model = MODELS.build(cfg.model)
    model.init_weights()
    # running statistics that are not the initial ones
    model.train()
    data = a_batch(model, cfg, size=8)
    with torch.no_grad():
        model(data['inputs'], data['data_samples'], mode='loss')
    model.eval()
    mutator = model.mutator
    subnet = mutator.sample_choices('random', __import__('random').Random(1))
    widths = mutator.widths_of(subnet)
    static = export_static(model, widths).eval()
    assert not any(
        type(m).__module__.startswith('psenet_plugin')
        for m in static.modules())

    test = a_batch(model, cfg, size=4, train=False)
    mutator.set_choices(subnet)
    with torch.no_grad():
        expected = flatten(model(test['inputs'], mode='tensor'))
        got = flatten(static(test['inputs'], mode='tensor'))
        predicted = model(test['inputs'], copy.deepcopy(test['data_samples']),
                          mode='predict')
        static_predicted = static(test['inputs'],
                                  copy.deepcopy(test['data_samples']),
                                  mode='predict')
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    for p, s in zip(predicted, static_predicted):
        if task == 'det':
            torch.testing.assert_close(s.pred_instances.bboxes,
                                       p.pred_instances.bboxes)
            assert torch.equal(s.pred_instances.labels,
                               p.pred_instances.labels)
        else:
            assert torch.equal(s.pred_sem_seg.data, p.pred_sem_seg.data)

    mutator.set_max_choices()
    full = export_static(model, mutator.widths_of(mutator.max_choices))
    flops, params = complexity(static)
    max_flops, max_params = complexity(full)
    assert flops < max_flops and params < max_params
    assert params == sum(p.numel() for p in static.parameters())
    # the plugin's FLOPs table: the same params (a shared head conv counts
    # once), and the subnet is smaller
    table = model.flops_table
    assert table.params(widths) == params
    assert table.flops(widths) < table.flops(
        mutator.widths_of(mutator.max_choices))
    if task == 'seg':  # the detector's backbone also runs an unused conv
        assert table.flops(widths) == flops


# the whole pipeline through the tools


@pytest.mark.slow
@pytest.mark.parametrize('task', ['det', 'seg'])
def test_train_search_export_through_the_tools(task, task_data, tmp_path):
    """tools/train.py (a few iterations), tools/search.py (task metric on
    the held-out slice), tools/export.py: a smaller model."""
    path, _, _ = TASKS[task]
    root = task_data[task].rstrip('/') + '/'
    options = [
        f'data_root={root}',
        f'train_dataloader.dataset.dataset.data_root={root}',
        f'heldout_dataloader.dataset.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        'train_cfg.max_iters=4', 'train_cfg.val_interval=100',
        'default_hooks.checkpoint.interval=4',
        'train_dataloader.batch_size=8',
    ]
    search_options = [o for o in options if not o.startswith(
        ('train_cfg', 'default_hooks', 'val_', 'heldout_'))] + [
            f'train_cfg.dataloader.dataset.dataset.data_root={root}']
    if task == 'det':
        options += [f'val_evaluator.ann_file={root}annotations/val.json',
                    'val_dataloader.batch_size=8']
        search_options.append('train_cfg.evaluator.ann_file='
                              f'{root}annotations/train.json')
    work = tmp_path / 'train'
    result = run_python(['tools/train.py', path, '--work-dir', str(work),
                         '--cfg-options'] + options)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = str(work / 'iter_4.pth')
    assert osp.isfile(checkpoint)
    search = path.replace('.py', '_search.py')
    result = run_python(['tools/search.py', search, checkpoint,
                         '--work-dir', str(tmp_path / 'search'),
                         '--cfg-options'] + search_options)
    assert result.returncode == 0, result.stderr[-3000:]
    best = [f for f in os.listdir(tmp_path / 'search')
            if f.startswith('best') and f.endswith('.json')]
    assert best, os.listdir(tmp_path / 'search')
    result = run_python(['tools/export.py', search, checkpoint,
                         str(tmp_path / 'search' / best[0]), '--out-dir',
                         str(tmp_path / 'export'), '--cfg-options'] +
                        search_options)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / 'export' / 'summary.json') as f:
        summary = json.load(f)
    assert summary['flops'] < summary['supernet_flops']
    assert summary['params'] < summary['supernet_params']
    low, high = Config.fromfile(osp.join(REPO, search)).train_cfg[
        'constraints_range']['flops']
    assert low <= summary['flops'] / 1e6 <= high
    print(task, {k: summary[k] for k in ('flops', 'params', 'supernet_flops',
                                         'supernet_params')})


@pytest.mark.parametrize('path,task', [
    ('configs/det/pse_retinanet_mbv2_coco.py', 'detection'),
    ('configs/seg/pse_deeplabv3_mbv2_cityscapes.py', 'segmentation'),
])
def test_paper_scale_configs_load_and_build(path, task):
    """COCO / Cityscapes are not shipped: the configs load and their
    architectures build (the supernet's tracing is what the tiny configs
    test)."""
    from psenet_plugin.models.psenet import task_of
    cfg = Config.fromfile(osp.join(REPO, path))
    assert cfg.model.type == 'PSENet'
    init_default_scope('mmdet' if task == 'detection' else 'mmseg')
    architecture = MODELS.build(cfg.model.architecture)
    assert task_of(architecture) == task
    assert cfg.train_dataloader.dataset.type == 'HeldOutSplit'
    assert cfg.heldout_dataloader.dataset.part == 'heldout'
