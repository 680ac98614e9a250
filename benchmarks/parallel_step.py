"""Cost of one training step: PSE-Net's parallel step against a plain
mmpretrain model and MMRazor's AutoSlim.

All variants train a MobileNetV2-1.5x (1000 classes) on the same batch, each
through its own ``train_step`` (data preprocessor, loss, one optimizer step),
timed round-robin in one process, so machine noise hits them alike; the
ratios to the plain step are what to read:

* ``plain``: a plain mmpretrain ``ImageClassifier`` (no mutator, no dynamic
  ops): the floor.
* ``pse_sliced``: PSENet, ``execution='sliced'``: K subnets (max, min, K-2
  random), each on its group of the batch through its own sliced weights.
* ``pse_masked``: PSENet, ``execution='masked'``: the same K subnets in one
  full-width pass, channels masked per sample.
* ``autoslim``: MMRazor's ``AutoSlim`` (its own mutator and dynamic ops,
  in-place distillation as in its config): K subnets one after another, each
  on the whole batch.

Every PSE variant draws the same subnets at every step (same seed).

    python benchmarks/parallel_step.py [--batch 32] [--size 224] [--rounds 5]
    python benchmarks/parallel_step.py --size 32 --batch 64   # the demo's

Writes benchmarks/results/parallel_step_<device>_<size>px.json.
"""
import psenet_plugin  # noqa: F401,I001  (first: fixes mmrazor's imports)
import argparse
import json
import os
import os.path as osp
import statistics
import time

import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmpretrain.structures import DataSample
from mmrazor.registry import MODELS

from psenet_plugin.structures.io import atomic_write_text

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)


def architecture():
    return dict(
        _scope_='mmpretrain',
        type='ImageClassifier',
        backbone=dict(type='MobileNetV2', widen_factor=1.5),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=1000,
            in_channels=1920,
            loss=dict(type='CrossEntropyLoss')),
        data_preprocessor=dict(
            type='mmpretrain.ClsDataPreprocessor',
            mean=[0.] * 3,
            std=[1.] * 3))


def parse_cfg(size):
    return dict(
        _scope_='mmrazor',
        type='ChannelAnalyzer',
        demo_input=(1, 3, size, size),
        tracer_type='FxTracer')


def build_pse(size, num, execution):
    torch.manual_seed(0)
    return MODELS.build(
        dict(
            type='mmrazor.PSENet',
            architecture=architecture(),
            mutator=dict(
                type='mmrazor.PSEChannelMutator', parse_cfg=parse_cfg(size)),
            num_subnets=num,
            execution=execution,
            seed=0))


def build_autoslim(size, num):
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/_base_/models/autoslim_mbv2_1.5x.py'))
    model = cfg.model
    model.architecture = architecture()
    model.num_random_samples = num - 2
    model.mutator.parse_cfg.demo_input = (1, 3, size, size)
    model.data_preprocessor = model.architecture.pop('data_preprocessor')
    torch.manual_seed(0)
    return MODELS.build(model.to_dict())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--num-subnets', type=int, default=4)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--variants', default='plain,pse_sliced,pse_masked,'
                        'autoslim')
    args = parser.parse_args()
    device = torch.device(args.device)
    num = args.num_subnets
    names = args.variants.split(',')

    builders = {
        'plain': lambda: PRETRAIN_MODELS.build(architecture()),
        'pse_sliced': lambda: build_pse(args.size, num, 'sliced'),
        'pse_masked': lambda: build_pse(args.size, num, 'masked'),
        'autoslim': lambda: build_autoslim(args.size, num),
    }
    models = {name: builders[name]().to(device) for name in names}
    for model in models.values():
        model.train()  # (some algorithms' train() returns None)

    g = torch.Generator().manual_seed(0)
    data = dict(
        inputs=[(torch.rand(3, args.size, args.size, generator=g) *
                 255).to(device) for _ in range(args.batch)],
        data_samples=[
            DataSample().set_gt_label(int(y))
            for y in torch.randint(0, 1000, (args.batch, ), generator=g)
        ])

    def step(name):
        model = models[name]
        # AutoSlim calls update_params once per subnet: accumulate them
        # into one optimizer step, as its config does.
        wrapper = wrappers[name]
        model.train_step(data, wrapper)

    # AutoSlim reads the loop's progress from the message hub.
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 0)
    hub.update_info('max_iters', 10**6)
    wrappers = {
        name: OptimWrapper(
            torch.optim.SGD(model.parameters(), lr=1e-5),
            accumulative_counts=num if name == 'autoslim' else 1)
        for name, model in models.items()
    }
    for name in names:  # warm-up
        step(name)
    times = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            if device.type == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(name)
            if device.type == 'cuda':
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)

    medians = {k: statistics.median(v) for k, v in times.items()}
    base = medians.get('plain')
    result = dict(
        setting=dict(
            model='MobileNetV2-1.5x',
            batch=args.batch,
            size=args.size,
            num_subnets=num,
            device=(torch.cuda.get_device_name(device)
                    if device.type == 'cuda' else 'cpu'),
            threads=torch.get_num_threads(),
            rounds=args.rounds),
        median_seconds=medians,
        ratio_to_plain={k: v / base
                        for k, v in medians.items()} if base else {})
    if 'autoslim' in medians:
        result['ratio_to_autoslim'] = {
            k: v / medians['autoslim']
            for k, v in medians.items()
        }
    print(f'{"variant":<12} {"median s":>9} {"x plain":>8} {"x autoslim":>11}')
    for name in names:
        line = f'{name:<12} {medians[name]:>9.3f}'
        line += f' {medians[name] / base:>8.2f}' if base else f' {"":>8}'
        if 'autoslim' in medians:
            line += f' {medians[name] / medians["autoslim"]:>11.2f}'
        print(line)
    os.makedirs(osp.join(HERE, 'results'), exist_ok=True)
    out = osp.join(HERE, 'results',
                   f'parallel_step_{device.type}_{args.size}px.json')
    atomic_write_text(out, json.dumps(result, indent=1))
    print(f'written: {osp.relpath(out)}')


if __name__ == '__main__':
    main()
