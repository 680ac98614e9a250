"""Builders shared by the tests: real mmpretrain supernets prepared by the
real PSE mutator, and small folders of real image files."""
import os
import os.path as osp

import numpy as np
import torch
from PIL import Image

ARCHS = {
    'mobilenet_v2':
    dict(
        backbone=dict(type='MobileNetV2', widen_factor=0.5),
        in_channels=1280),
    'resnet18':
    dict(backbone=dict(type='ResNet', depth=18), in_channels=512),
    'mobilenet_v2_1.5x':
    dict(
        backbone=dict(type='MobileNetV2', widen_factor=1.5),
        in_channels=1920),
    'resnet50':
    dict(backbone=dict(type='ResNet', depth=50), in_channels=2048),
}


def classifier_cfg(arch: str, num_classes: int = 10) -> dict:
    spec = ARCHS[arch]
    return dict(
        _scope_='mmpretrain',
        type='ImageClassifier',
        backbone=spec['backbone'],
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=num_classes,
            in_channels=spec['in_channels'],
            loss=dict(type='CrossEntropyLoss')))


def mutator_cfg(input_size: int = 32, **kwargs) -> dict:
    return dict(
        type='mmrazor.PSEChannelMutator',
        parse_cfg=dict(
            _scope_='mmrazor',
            type='ChannelAnalyzer',
            demo_input=(1, 3, input_size, input_size),
            tracer_type='FxTracer'),
        **kwargs)


def build_supernet(arch: str, input_size: int = 32, seed: int = 0):
    """(architecture, mutator): a real mmpretrain classifier made prunable
    by the PSE mutator, with non-trivial BN parameters."""
    from mmrazor.registry import MODELS
    torch.manual_seed(seed)
    architecture = MODELS.build(classifier_cfg(arch))
    mutator = MODELS.build(mutator_cfg(input_size))
    mutator.prepare_from_supernet(architecture)
    for module in architecture.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return architecture, mutator


def write_image_folder(root: str, split: str, num_classes: int,
                       per_class: int, size: int = 48, seed: int = 0):
    """Real JPEG files in mmpretrain's layout: <split>/<class>/<i>.JPEG and
    meta/<split>.txt with "<class>/<i>.JPEG <label>" lines. Each class has
    its own colour pattern, so the images are learnable."""
    rng = np.random.default_rng(seed)
    lines = []
    for label in range(num_classes):
        folder = osp.join(root, split, f'n{label:08d}')
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            base = rng.integers(0, 255, 3)
            pixels = np.clip(
                base + rng.normal(0, 30, (size, size, 3)), 0, 255)
            pixels[:, :size // (label + 2)] = 255 - base
            name = f'n{label:08d}/{i:04d}.JPEG'
            Image.fromarray(pixels.astype(np.uint8)).save(
                osp.join(root, split, name))
            lines.append(f'{name} {label}\n')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
        f.writelines(lines)
    return root
