"""What parallel training cannot train exactly is refused, or made exact,
when the model is built (or, for what mmengine changes after the build,
before the first step): sync_bn, with_cp, batch norms outside the PSE op
map, output masks from the traced graph, the build-time self-check,
candidate widths, and a last, partial batch of an epoch."""
import logging
import random

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.model import convert_sync_batchnorm
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmpretrain.structures import DataSample
from mmrazor.registry import MODELS
from torch import nn

from psenet_plugin.errors import ConfigError
from psenet_plugin.models import (GroupLayout, PSEChannelMutator,
                                  forward_subnets)
from psenet_plugin.models.dynamic_ops import (PSEBatchNorm1d, PSEBatchNorm2d,
                                              mmrazor_slicing)

from helpers import classifier_cfg, mutator_cfg, write_image_folder


class AddNet(nn.Module):
    """A unit fed by two producers: ``p`` followed by its batch norm, ``q``
    (a conv with bias) by none. The sum is normalised by ``post_bn`` and
    also read directly by ``out``: ``q`` must mask its output, although
    the unit has as many batch norms as producers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
            nn.ReLU())
        self.p = nn.Conv2d(16, 24, 3, padding=1, bias=False)
        self.p_bn = nn.BatchNorm2d(24)
        self.q = nn.Conv2d(16, 24, 1)
        self.post_bn = nn.BatchNorm2d(24)
        self.out = nn.Conv2d(24, 32, 3, stride=2, padding=1, bias=False)
        self.out_bn = nn.BatchNorm2d(32)

    def forward(self, x):
        x = self.stem(x)
        y = self.p_bn(self.p(x)) + self.q(x)
        z = torch.relu(self.post_bn(y)) + y
        return (torch.relu(self.out_bn(self.out(z))), )


class OwnConv2d(nn.Conv2d):
    """A user's own convolution: no dynamic op maps it."""


class PaddedNet(nn.Module):
    """A conv outside the PSE op map (a user's own ``nn.Conv2d`` subclass)
    makes the units around it unprunable; their batch norms must still
    normalise each group on its own."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
            nn.ReLU())
        self.pad_conv = OwnConv2d(16, 16, 3, stride=2, bias=False)
        self.pad_bn = nn.BatchNorm2d(16)
        self.body = nn.Sequential(
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
            nn.ReLU())

    def forward(self, x):
        x = torch.relu(self.pad_bn(self.pad_conv(self.stem(x))))
        return (self.body(x), )


class ChannelsNet(nn.Module):
    """One prunable unit of ``channels`` channels."""

    def __init__(self, channels=32):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return (torch.relu(self.bn(self.conv(x))), )


class OnePixelNet(nn.Module):
    """Its last batch norm normalises 1x1 maps (as MobileNetV2's last ones
    at 32x32): one value per sample and channel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.last = nn.Conv2d(16, 32, 1, bias=False)
        self.last_bn = nn.BatchNorm2d(32)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return (torch.relu(self.last_bn(self.last(x))), )


for _cls in (AddNet, PaddedNet, ChannelsNet, OnePixelNet):
    PRETRAIN_MODELS.register_module(_cls.__name__, force=True, module=_cls)


def arch_cfg(backbone, in_channels, head=None):
    cfg = classifier_cfg('mobilenet_v2')
    cfg['backbone'] = backbone
    cfg['head'] = dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=in_channels,
        loss=dict(type='CrossEntropyLoss'))
    if head:
        cfg['head'].update(head)
    return cfg


def build(architecture, **kwargs):
    torch.manual_seed(0)
    cfg = dict(
        type='mmrazor.PSENet',
        architecture=architecture,
        mutator=mutator_cfg(16),
        data_preprocessor=dict(mean=[0.] * 3, std=[1.] * 3),
        execution='masked',
        seed=0)
    cfg.update(kwargs)
    algorithm = MODELS.build(cfg)
    for module in algorithm.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return algorithm


def batch(size, px=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        inputs=[torch.rand(3, px, px, generator=g) * 255
                for _ in range(size)],
        data_samples=[
            DataSample().set_gt_label(int(i))
            for i in torch.randint(0, 10, (size, ), generator=g)
        ])


def assert_groups_equal_subnets_alone(algorithm, size=16, num=4):
    """Group k of one parallel pass (training mode, the algorithm's
    execution) equals subnet k alone on group k's samples (mmrazor's own
    weight slicing)."""
    arch, mutator = algorithm.architecture, algorithm.mutator
    arch.train()
    rng = random.Random(1)
    subnets = [mutator.max_choices, mutator.min_choices] + [
        mutator.sample_choices('random', rng) for _ in range(num - 2)
    ]
    x = torch.randn(size, 3, 16, 16,
                    generator=torch.Generator().manual_seed(2))
    layout = GroupLayout(num)
    state = {k: v.clone() for k, v in arch.state_dict().items()}
    logits = forward_subnets(arch, mutator, x, subnets, layout,
                             algorithm.execution)
    for k, subnet in enumerate(subnets):
        arch.load_state_dict(state)
        mutator.set_choices(subnet)
        index = layout.indices(k, size)
        with torch.no_grad(), mmrazor_slicing():
            alone = arch.head(arch.extract_feat(x[index]))
        torch.testing.assert_close(logits[index].detach(), alone, rtol=1e-4,
                                   atol=1e-4 * float(alone.abs().max()))
    mutator.set_max_choices()


# sync_bn


def test_sync_bn_conversion_is_refused_before_the_first_step():
    """mmengine's Runner converts every batch norm to SyncBatchNorm for the
    config key sync_bn (distributed runs): the step refuses, naming the
    key, before anything is trained."""
    algorithm = build(arch_cfg(dict(type='AddNet'), 32))
    algorithm = convert_sync_batchnorm(algorithm, 'torch')
    before = {n: p.detach().clone() for n, p in algorithm.named_parameters()}
    optimizer = torch.optim.SGD(algorithm.parameters(), lr=0.1)
    with pytest.raises(ConfigError) as error:
        algorithm.train_step(batch(8), OptimWrapper(optimizer))
    message = str(error.value)
    assert message.startswith('sync_bn:')
    assert "'backbone.stem.1'" in message and 'SyncBatchNorm' in message
    assert 'remove the key' in message
    for name, value in algorithm.named_parameters():
        assert torch.equal(value, before[name]), name
    with pytest.raises(ConfigError, match='sync_bn'):
        algorithm.init_weights()  # what Runner.train() calls first


def test_runner_with_sync_bn_refuses_before_the_first_iteration(tmp_path):
    """A real Runner config with sync_bn='torch'; the model converted as
    mmengine's Runner.wrap_model does in a distributed run: train() ends in
    the ConfigError before the first iteration, nothing written."""
    from mmengine.runner import Runner
    root = write_image_folder(str(tmp_path / 'data'), 'train', 2, 4, 16)
    runner = Runner.from_cfg(runner_cfg(root, tmp_path / 'work',
                                        sync_bn='torch'))
    runner.model = convert_sync_batchnorm(runner.model, runner.cfg.sync_bn)
    with pytest.raises(ConfigError, match='^sync_bn:'):
        runner.train()
    assert runner.iter == 0
    assert not list((tmp_path / 'work').glob('*.pth'))


def test_the_tools_can_refuse_sync_bn_before_building_the_runner():
    from mmengine.config import Config

    from psenet_plugin.models.psenet import check_sync_bn
    cfg = Config(dict(model=dict(type='mmrazor.PSENet'), sync_bn='torch'))
    with pytest.raises(ConfigError, match="^sync_bn='torch': .*remove the"):
        check_sync_bn(cfg)
    from psenet_plugin import cli  # what tools/train.py calls first
    with pytest.raises(ConfigError, match="^sync_bn='torch'"):
        cli.check_config(cfg)
    check_sync_bn(Config(dict(model=dict(type='mmrazor.PSENet'))))
    check_sync_bn(Config(dict(model=dict(type='ImageClassifier'),
                              sync_bn='torch')))


# with_cp


@pytest.mark.parametrize('backbone', [
    dict(type='MobileNetV2', widen_factor=0.5, with_cp=True),
    dict(type='ResNet', depth=18, with_cp=True),
])
def test_activation_checkpointing_is_refused_at_build(backbone):
    cfg = classifier_cfg('mobilenet_v2')
    cfg['backbone'] = backbone
    with pytest.raises(ConfigError) as error:
        MODELS.build(
            dict(type='mmrazor.PSENet', architecture=cfg,
                 mutator=mutator_cfg()))
    message = str(error.value)
    assert message.startswith('model.architecture.backbone.with_cp=True')
    assert 'accepted: with_cp=False' in message


# batch norms outside the PSE op map


@pytest.mark.parametrize('execution', ['masked', 'sliced'])
def test_batch_norm_1d_in_a_head_normalises_each_group(execution):
    algorithm = build(
        arch_cfg(
            dict(type='AddNet'), 32,
            dict(type='StackedLinearClsHead', mid_channels=[16],
                 norm_cfg=dict(type='BN1d'))),
        execution=execution)
    norm = algorithm.architecture.head.layers[0].norm
    assert isinstance(norm, PSEBatchNorm1d)
    assert algorithm.mutator.foreign_norms(algorithm.architecture) == []
    assert_groups_equal_subnets_alone(algorithm)


def test_batch_norms_of_units_that_cannot_be_pruned_normalise_each_group():
    algorithm = build(arch_cfg(dict(type='PaddedNet'), 32))
    backbone = algorithm.architecture.backbone
    assert type(backbone.pad_conv) is OwnConv2d  # unchanged
    assert isinstance(backbone.pad_bn, PSEBatchNorm2d)
    assert len(algorithm.mutator.mutable_units) == 1  # the body only
    assert_groups_equal_subnets_alone(algorithm)


def test_a_batch_norm_without_a_group_wise_mode_is_refused_naming_it():
    with pytest.raises(ConfigError) as error:
        build(
            arch_cfg(
                dict(type='AddNet'), 32,
                dict(type='StackedLinearClsHead', mid_channels=[16],
                     norm_cfg=dict(type='SyncBN'))))
    message = str(error.value)
    assert "module 'head.layers.0.norm' is a SyncBatchNorm" in message
    assert 'accepted: BatchNorm2d and BatchNorm1d' in message


# output masks


def test_output_masks_follow_the_traced_graph():
    algorithm = build(arch_cfg(dict(type='AddNet'), 32))
    masks = algorithm.mutator.output_masks
    # q feeds an add, not only batch norms of its unit: it masks; p, the
    # stem's and out's convs feed their own batch norm only: they do not.
    assert masks == {
        'backbone.stem.0': False,
        'backbone.p': False,
        'backbone.q': True,
        'backbone.out': False,
        'head.fc': True,
    }
    assert_groups_equal_subnets_alone(algorithm)


# the self-check


def test_self_check_names_the_layer_whose_mask_is_broken():
    algorithm = build(arch_cfg(dict(type='AddNet'), 32))  # checked: passes
    algorithm.architecture.backbone.q.mask_output = False
    with pytest.raises(ConfigError) as error:
        algorithm.self_check()
    message = str(error.value)
    assert message.startswith("model.self_check: layer 'backbone.q' "
                              '(PSEConv2d)')
    assert 'keeps channels its subnet drops' in message
    # Statistics and choices are left as they were.
    assert algorithm.mutator.current_choices == \
        algorithm.mutator.max_choices


def test_self_check_runs_at_build(monkeypatch):
    """A mutator that decides the masks wrongly fails the build, naming
    the layer."""

    def no_masks(self, supernet):
        for module in supernet.modules():
            if hasattr(module, 'mask_output'):
                module.mask_output = False

    monkeypatch.setattr(PSEChannelMutator, '_assign_output_masks', no_masks)
    # q's kept channels are right, its dropped ones are not zero: the first
    # layer that reads them differs, and the error says where to look.
    with pytest.raises(ConfigError) as error:
        build(arch_cfg(dict(type='AddNet'), 32))
    message = str(error.value)
    assert "layer 'backbone.out' (PSEConv2d)" in message
    assert 'its input already holds values' in message
    assert 'an output mask missing' in message
    build(arch_cfg(dict(type='AddNet'), 32), self_check=False)


@pytest.mark.parametrize('execution', ['sliced', 'masked'])
def test_self_check_leaves_statistics_and_choices_alone(execution):
    algorithm = build(arch_cfg(dict(type='AddNet'), 32), self_check=False,
                      execution=execution)
    mutator = algorithm.mutator
    mutator.set_choices(mutator.min_choices)
    state = {k: v.clone() for k, v in algorithm.state_dict().items()}
    algorithm.self_check()
    assert mutator.current_choices == mutator.min_choices
    for key, value in algorithm.state_dict().items():
        assert torch.equal(value, state[key]), key


# candidate choices and num_subnets


@pytest.mark.parametrize('choices,accepted', [
    ([0.5, 1.5], 'floats in (0, 1]'),
    ([-0.5, 1.0], 'floats in (0, 1]'),
    ([1, 0.5], 'floats in (0, 1]'),
    ([0.25, 0.5], 'include 1.0'),
])
def test_bad_candidate_ratios_are_refused_at_build(choices, accepted):
    unit_cfg = dict(
        type='PSEMutableChannelUnit',
        default_args=dict(candidate_choices=choices, choice_mode='ratio'))
    with pytest.raises(ConfigError) as error:
        MODELS.build(mutator_cfg(channel_unit_cfg=unit_cfg))
    message = str(error.value)
    assert message.startswith(
        'mutator.channel_unit_cfg.default_args.candidate_choices=')
    assert accepted in message


def test_channel_numbers_beyond_a_unit_are_refused_naming_it():
    unit_cfg = dict(
        type='PSEMutableChannelUnit',
        default_args=dict(candidate_choices=[8, 64], choice_mode='number'))
    with pytest.raises(ConfigError) as error:
        build(arch_cfg(dict(type='ChannelsNet'), 32),
              mutator=mutator_cfg(16, channel_unit_cfg=unit_cfg))
    message = str(error.value)
    assert 'candidate_choices=[8, 64]' in message
    assert "unit 'backbone.conv_(0, 32)_32' has 32 channels" in message
    assert 'keep [8, 64] channels' in message


def test_rounding_to_the_divisor_keeps_the_max_width():
    """20 channels in multiples of 8: ratio 1.0 keeps all 20 (rounding
    would give 24), the other ratios round to 8 or 16, never beyond 20."""
    algorithm = build(arch_cfg(dict(type='ChannelsNet', channels=20), 20))
    unit, = [u for u in algorithm.mutator.mutable_units
             if u.num_channels == 20]
    assert unit.candidate_widths == [8, 16, 20]
    assert unit.width_of(1.0) == 20


def test_num_subnets_and_self_check_are_validated():
    with pytest.raises(ConfigError, match='model.num_subnets=True'):
        build(arch_cfg(dict(type='ChannelsNet'), 32), num_subnets=True)
    with pytest.raises(ConfigError, match="model.self_check='yes'; "
                       'accepted: True or False'):
        build(arch_cfg(dict(type='ChannelsNet'), 32), self_check='yes')


# a last, partial batch


@pytest.fixture
def warnings_logged():
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_a_partial_batch_trains_the_subnets_it_has_samples_for(
        warnings_logged):
    algorithm = build(arch_cfg(dict(type='AddNet'), 32))
    wrapper = OptimWrapper(torch.optim.SGD(algorithm.parameters(), lr=0.1))
    algorithm.train_step(batch(16), wrapper)  # the full batch size
    assert algorithm.last_records['kinds'] == ['max', 'min', 'rand2',
                                               'rand3']
    # 5 samples, 8x8 maps at the smallest norm: groups of one sample are
    # enough; K=4 groups of 2, 1, 1, 1.
    log = algorithm.train_step(batch(5, seed=1), wrapper)
    assert len(algorithm.last_records['kinds']) == 4
    assert torch.isfinite(log['loss'])
    # 3 samples: fewer than K groups: the first 3 subnets (max, min,
    # rand2) train, with a warning.
    log = algorithm.train_step(batch(3, seed=2), wrapper)
    assert algorithm.last_records['kinds'] == ['max', 'min', 'rand2']
    assert set(log) == {'loss', 'max.ce', 'min.ce', 'rand2.ce'}
    assert any('trains 3 of the 4 subnets' in r.getMessage()
               for r in warnings_logged)


def test_a_partial_batch_too_small_for_batch_norm_is_skipped(
        warnings_logged):
    """1x1 maps at a batch norm: a group needs 2 samples; a last batch of 5
    trains 2 subnets, one of a single sample is skipped (nothing trained),
    with a warning."""
    algorithm = build(arch_cfg(dict(type='OnePixelNet'), 32))
    wrapper = OptimWrapper(torch.optim.SGD(algorithm.parameters(), lr=0.1))
    algorithm.train_step(batch(8), wrapper)
    log = algorithm.train_step(batch(5, seed=1), wrapper)
    assert algorithm.last_records['kinds'] == ['max', 'min']  # 3 + 2
    assert torch.isfinite(log['loss'])
    before = {n: p.detach().clone() for n, p in algorithm.named_parameters()}
    assert algorithm.train_step(batch(1, seed=2), wrapper) == {}
    for name, value in algorithm.named_parameters():
        assert torch.equal(value, before[name]), name
    assert any('skipped a training batch of 1 sample' in r.getMessage()
               and 'drop_last=True' in r.getMessage()
               for r in warnings_logged)
    # loss() itself (as under DDP, which calls the forward directly) says
    # what to do.
    data = algorithm.data_preprocessor(batch(1, seed=2), True)
    with pytest.raises(ConfigError, match='train_dataloader.drop_last=True'):
        algorithm.loss(data['inputs'], data['data_samples'])


def test_a_full_batch_too_small_is_still_an_error():
    algorithm = build(arch_cfg(dict(type='AddNet'), 32))
    data = algorithm.data_preprocessor(batch(3), True)
    with pytest.raises(ConfigError,
                       match=r'num_subnets=4 is larger than the batch '
                       r'\(3 samples\).*train_dataloader.batch_size'):
        algorithm.loss(data['inputs'], data['data_samples'])


def runner_cfg(root, work_dir, **kwargs):
    cfg = dict(
        model=dict(
            type='mmrazor.PSENet',
            architecture=arch_cfg(dict(type='AddNet'), 32),
            mutator=mutator_cfg(16),
            data_preprocessor=dict(mean=[128.] * 3, std=[64.] * 3),
            execution='masked',
            seed=0),
        work_dir=str(work_dir),
        train_dataloader=dict(
            batch_size=8,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(
                type='mmpretrain.CustomDataset',
                data_root=root,
                ann_file='meta/train.txt',
                data_prefix='train',
                pipeline=[
                    dict(type='mmpretrain.LoadImageFromFile'),
                    dict(type='mmpretrain.Resize', scale=(16, 16)),
                    dict(type='mmpretrain.PackInputs'),
                ])),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', interval=1)),
        custom_hooks=[dict(type='mmrazor.PriorRecorderHook')],
        default_scope='mmrazor',
        log_level='WARNING')
    cfg.update(kwargs)
    from mmengine.config import Config
    return Config(cfg)


def test_an_epoch_with_a_partial_last_batch_completes(tmp_path):
    """11 images, batches of 8 (drop_last=False): the last batch holds 3
    samples, fewer than K=4: it trains 3 subnets and the epoch ends with
    its checkpoint."""
    from mmengine.runner import Runner
    root = write_image_folder(str(tmp_path / 'data'), 'train', 1, 11, 16)
    runner = Runner.from_cfg(runner_cfg(root, tmp_path / 'work'))
    runner.train()
    assert runner.iter == 2 and runner.epoch == 1
    prior = next(h for h in runner.hooks
                 if type(h).__name__ == 'PriorRecorderHook')
    assert prior.stats.num_records == 4 + 3
    assert (tmp_path / 'work' / 'epoch_1.pth').exists()
