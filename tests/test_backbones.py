"""Every common mmpretrain backbone, by config alone, either trains exactly
in parallel or is refused with one clear line (docs/composition.md,
"Backbones").

Exactly: group k of one parallel pass computes what subnet k computes
alone (weight-sliced by mmrazor's own dynamic ops) on group k's samples,
the parameter gradients are the sum over k of |G_k| / B times subnet k's,
and the batch-norm running statistics follow the documented rule, in both
executions (``model.execution='masked'`` and ``'sliced'``). The check runs
in float64: the invariant is exact, and float32 rounding amplified by batch
norm over a few samples would hide a wrong mask (or flag a right one).

The backbones are small versions of the named ones (32x32 inputs, fewer
stages or a narrower classifier where mmpretrain allows it); what they are
made of (flatten + fully connected layers, squeeze-excitation, grouped
convolutions, dense concatenations, channel shuffles, LayerNorm2d) is the
same. The full-size versions run under ``-m slow``.
"""
import random

import pytest
import torch
import torch.nn as nn
from mmrazor.registry import MODELS

from psenet_plugin.errors import ConfigError
from psenet_plugin.models import GroupLayout, PSEMutableChannelUnit
from psenet_plugin.models.mutables import PSEExpandedChannel

from conftest import assert_running_stats_rule, parallel_and_alone
from helpers import mutator_cfg

SIZE = 32


def classifier(backbone, in_channels=None, neck='gap', head=None):
    """An mmpretrain ImageClassifier config with 10 classes."""
    if head is None:
        head = dict(type='LinearClsHead', num_classes=10,
                    in_channels=in_channels,
                    loss=dict(type='CrossEntropyLoss'))
    return dict(
        _scope_='mmpretrain',
        type='ImageClassifier',
        backbone=backbone,
        neck=dict(type='GlobalAveragePooling') if neck == 'gap' else neck,
        head=head)


def vgg(depth, **kwargs):
    """VGG as mmpretrain builds it for classification: the backbone's own
    classifier (flatten, Linear, ReLU, Dropout, Linear, ReLU, Dropout,
    Linear) and a plain ClsHead. At 32x32 without the last pooling the
    flatten sees 512 channels of 2x2 maps."""
    return classifier(
        dict(type='VGG', depth=depth, num_classes=10, with_last_pool=False,
             **kwargs),
        neck=None,
        head=dict(type='ClsHead', loss=dict(type='CrossEntropyLoss')))


# name -> (classifier config, hidden width of a VGG classifier, slow)
BACKBONES = {
    # flatten + fully connected classifier: the first FC's input is pruned
    # in blocks of H x W features, one block per channel
    'vgg11_fc': (vgg(11), 64, False),
    'vgg16bn_fc': (vgg(16, norm_cfg=dict(type='BN')), 64, True),
    # channels not multiples of the default divisor 8 (58, 116, 232)
    'shufflenet_v2_1.0x': (classifier(dict(type='ShuffleNetV2'), 1024),
                           None, True),
    'shufflenet_v2_0.5x': (classifier(
        dict(type='ShuffleNetV2', widen_factor=0.5), 1024), None, False),
    # squeeze-excitation with 4-channel squeezes, default divisor 8
    'efficientnet_b0': (classifier(dict(type='EfficientNet', arch='b0'),
                                   1280), None, True),
    'mobilenet_v3_small': (classifier(
        dict(type='MobileNetV3', arch='small'), 576), None, False),
    # grouped convolutions (group width 8 / 16)
    'regnetx_200mf': (classifier(
        dict(type='RegNet',
             arch=dict(w0=24, wa=36.44, wm=2.49, group_w=8, depth=13,
                       bot_mul=1.0)), 368), None, False),
    'regnetx_400mf': (classifier(
        dict(type='RegNet', arch='regnetx_400mf'), 384), None, True),
    'resnext50_2stages': (classifier(
        dict(type='ResNeXt', depth=50, groups=8, width_per_group=4,
             num_stages=2, strides=(1, 2), dilations=(1, 1),
             out_indices=(1, )), 512), None, False),
    'resnext50_32x4d': (classifier(
        dict(type='ResNeXt', depth=50, groups=32, width_per_group=4),
        2048), None, True),
    # dense concatenations
    'densenet_small': (classifier(
        dict(type='DenseNet',
             arch=dict(growth_rate=8, depths=(2, 2, 2, 2),
                       init_channels=16)), 32), None, False),
    'densenet121': (classifier(dict(type='DenseNet', arch='121'), 1024),
                    None, True),
    # LayerNorm2d: per-sample statistics, no coupling between the groups
    'convnext_atto': (classifier(dict(type='ConvNeXt', arch='atto'), 320,
                                 neck=None), None, False),
    'resnet50': (classifier(dict(type='ResNet', depth=50), 2048), None,
                 True),
}

# name -> (classifier config, the start of the one-line refusal)
REFUSED = {
    'deit_tiny': (classifier(
        dict(type='VisionTransformer', arch='deit-tiny', img_size=SIZE,
             patch_size=4),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=10,
                  in_channels=192)),
                  'the channel analyzer found no prunable channel unit in '
                  'ImageClassifier (backbone VisionTransformer): PSE-Net '
                  'prunes channel units made of Conv2d, BatchNorm2d and '
                  'Linear layers'),
}


def _params(table):
    return [
        pytest.param(name, marks=pytest.mark.slow) if entry[-1] else name
        for name, entry in table.items()
    ]


def _small_classifier(architecture, hidden):
    """Replace VGG's 4096-wide fully connected layers by ``hidden``-wide
    ones, keeping their structure, for the 2x2 maps of a 32x32 input."""
    old = architecture.backbone.classifier
    architecture.backbone.classifier = nn.Sequential(
        nn.Linear(512 * 2 * 2, hidden), nn.ReLU(True), nn.Dropout(),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
        nn.Linear(hidden, old[-1].out_features))


def build_architecture(name):
    cfg, hidden, _ = BACKBONES[name]
    torch.manual_seed(0)
    architecture = MODELS.build(cfg)
    if hidden is not None:
        _small_classifier(architecture, hidden)
    return architecture


def _randomise_norms(architecture):
    for module in architecture.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)


@pytest.fixture(scope='module')
def prepared():
    """name -> (architecture, mutator), built once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            architecture = build_architecture(name)
            mutator = MODELS.build(mutator_cfg(SIZE))
            mutator.prepare_from_supernet(architecture)
            _randomise_norms(architecture)
            # dropout draws differ between the two passes: off
            for module in architecture.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0
            cache[name] = architecture.double(), mutator
        return cache[name]

    return get


def _subnets(mutator, rng):
    return [mutator.max_choices, mutator.min_choices,
            mutator.sample_choices('random', rng)]


@pytest.mark.parametrize('execution', ['masked', 'sliced'])
@pytest.mark.parametrize('name', _params(BACKBONES))
def test_group_k_equals_subnet_k_alone(prepared, name, execution):
    architecture, mutator = prepared(name)
    assert mutator.mutable_units, name
    architecture.train()
    torch.manual_seed(1)
    # 3 groups of 4 samples (masked: the folded path of training), or of
    # 4, 4 and 3 (sliced)
    batch = 12 if execution == 'masked' else 11
    x = torch.randn(batch, 3, SIZE, SIZE, dtype=torch.float64)
    y = torch.randint(0, 10, (batch, ))
    subnets = _subnets(mutator, random.Random(0))
    layout = GroupLayout(len(subnets))
    run = parallel_and_alone(architecture, mutator, x, y, subnets, layout,
                             execution)
    for index, alone in run['alone']:
        torch.testing.assert_close(
            run['logits'][index], alone, rtol=1e-9,
            atol=1e-9 * alone.abs().max().item())
    expected = run['expected_grads']
    scale = max(g.abs().max().item() for g in expected.values())
    assert set(run['grads']) == set(expected)
    for param, grad in expected.items():
        # the loss is computed in float32 (conftest), its gradient too
        torch.testing.assert_close(
            run['grads'][param], grad, rtol=1e-6, atol=1e-7 * scale,
            msg=lambda m, param=param: f'{param}: {m}')
    assert_running_stats_rule(run['bn_before'], run['bn_parallel'],
                              run['bn_alone'], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('name', list(REFUSED))
def test_backbones_without_prunable_units_are_refused_in_one_line(name):
    cfg, refusal = REFUSED[name]
    with pytest.raises(ConfigError) as error:
        MODELS.build(
            dict(type='mmrazor.PSENet', architecture=cfg,
                 mutator=mutator_cfg(SIZE)))
    message = str(error.value)
    assert message.startswith(refusal), message
    assert '\n' not in message


# the default divisor keeps the max width


@pytest.mark.parametrize('channels,divisor,widths', [
    (58, 8, [16, 24, 32, 40, 48, 56, 58]),  # ShuffleNetV2 1.0x branches
    (20, 8, [8, 16, 20]),
    (4, 8, [4]),  # an EfficientNet squeeze, a ResNeXt group
    (64, 8, [16, 24, 32, 40, 48, 56, 64]),
])
def test_rounding_to_the_divisor_keeps_the_full_width(channels, divisor,
                                                      widths):
    unit = PSEMutableChannelUnit(
        channels, [i / 12 for i in range(2, 13)], 'ratio', divisor)
    assert unit.candidate_widths == widths
    assert unit.width_of(1.0) == channels
    assert max(unit.candidate_choices) == 1.0


@pytest.mark.slow
@pytest.mark.parametrize('name', ['shufflenet_v2_1.0x', 'efficientnet_b0'])
def test_default_divisor_builds_by_config(name):
    """PSENet with the mutator's defaults (divisor 8) builds, self-check
    included, and every unit's max width is all of its channels."""
    cfg = BACKBONES[name][0]
    algorithm = MODELS.build(
        dict(type='mmrazor.PSENet', architecture=cfg,
             mutator=mutator_cfg(SIZE), num_subnets=3))
    mutator = algorithm.mutator
    assert any(u.num_channels % 8 for u in mutator.mutable_units)
    for unit in mutator.mutable_units:
        assert unit.candidate_widths[-1] == unit.num_channels
    assert mutator.widths_of(mutator.max_choices) == {
        u.name: u.num_channels for u in mutator.mutable_units}


@pytest.mark.parametrize('execution', ['masked', 'sliced'])
def test_concatenations_pass_the_self_check_in_both_executions(execution):
    """DenseNet by config: after a concatenation a batch norm keeps
    channels that are not its first ones; the build-time self-check
    compares exactly those (it used to flag the masked pass)."""
    algorithm = MODELS.build(
        dict(type='mmrazor.PSENet',
             architecture=BACKBONES['densenet_small'][0],
             mutator=mutator_cfg(SIZE), num_subnets=3, execution=execution))
    assert algorithm.mutator.mutable_units


# VGG's fully connected classifier: the first FC's input in blocks


@pytest.fixture(scope='module')
def vgg_algorithm():
    architecture = build_architecture('vgg11_fc')
    for module in architecture.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return MODELS.build(
        dict(type='mmrazor.PSENet', architecture=architecture,
             mutator=mutator_cfg(SIZE), num_subnets=3, seed=0))


def _first_fc_input(algorithm):
    fc = algorithm.architecture.backbone.classifier[0]
    (span, channel), = fc.mutable_attrs['in_features'] \
        .mutable_channels.items()
    return fc, span, channel


def test_flatten_prunes_the_first_fc_input_in_blocks(vgg_algorithm):
    """Channel c of the last conv owns FC inputs c*H*W .. (c+1)*H*W - 1:
    a subnet keeping w channels keeps the first w*H*W inputs."""
    mutator = vgg_algorithm.mutator
    fc, span, channel = _first_fc_input(vgg_algorithm)
    assert isinstance(channel, PSEExpandedChannel)
    assert span == (0, 512 * 4) and channel.expand_ratio == 4
    unit = next(u for u in mutator.mutable_units
                if u.mutable_channel is channel.source)
    assert unit.name.startswith('backbone.features.11')
    try:
        for width in unit.candidate_widths:
            unit.current_choice = unit.choice_of(width)
            assert channel.prefix_width == width * 4
            mask = channel.current_mask
            assert mask[:width * 4].all() and not mask[width * 4:].any()
    finally:
        mutator.set_max_choices()


def test_vgg_exports_a_smaller_fc_that_computes_the_subnet(vgg_algorithm):
    from psenet_plugin.structures.export import export_static
    algorithm = vgg_algorithm.float().eval()
    mutator = algorithm.mutator
    widths = mutator.widths_of(mutator.min_choices)
    static = export_static(algorithm, widths).eval()
    last = widths[next(n for n in widths
                       if n.startswith('backbone.features.11'))]
    first_fc = static.backbone.classifier[0]
    assert isinstance(first_fc, nn.Linear) and type(first_fc) is nn.Linear
    assert first_fc.in_features == last * 4
    assert sum(p.numel() for p in static.parameters()) < sum(
        p.numel() for p in algorithm.architecture.parameters())
    # its FLOPs and params are the table's
    from mmengine.analysis import get_model_complexity_info
    counted = get_model_complexity_info(
        static, input_shape=(3, SIZE, SIZE), show_table=False,
        show_arch=False)
    assert algorithm.flops_table.params(widths) == counted['params']
    assert algorithm.flops_table.flops(widths) == pytest.approx(
        counted['flops'], rel=1e-3)
    # and it computes what the supernet set to the subnet computes
    x = torch.randn(2, 3, SIZE, SIZE)
    mutator.set_choices(mutator.min_choices)
    try:
        with torch.no_grad():
            expected = algorithm.architecture(x, mode='tensor')
            got = static(x, mode='tensor')
    finally:
        mutator.set_max_choices()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# the paper-scale configs load


@pytest.mark.parametrize('config', ['configs/pse_resnet50.py',
                                    'configs/pse_vgg16.py'])
def test_imagenet_configs_load(config):
    import os.path as osp

    from mmengine.config import Config

    from conftest import REPO
    cfg = Config.fromfile(osp.join(REPO, config))
    assert cfg.model.type == 'PSENet'
    assert cfg.model.architecture._scope_ == 'mmpretrain'
    assert cfg.train_dataloader.dataset.dataset.type == 'ImageNet'
    assert cfg.model.mutator.parse_cfg.demo_input == (1, 3, 224, 224)
