"""Cost of one training step: PSE-Net's parallel pass against the baselines.

All variants train the same MobileNetV2-1.5x supernet on the same batch
(default 32 images of 128x128, CPU) and are timed round-robin in one process,
so machine noise hits them alike; the ratios to the plain step are what to
read:

* ``plain``: one forward/backward/SGD step of the max network (static, no
  masks) on the batch: the floor.
* ``pse``: PSENet.train_step, K subnets in one pass (interleaved groups,
  folded group-wise batch norm).
* ``pse_contiguous``: the same with contiguous groups (the per-group
  fallback path of batch norm).
* ``sequential_groups``: the K subnets one after another, each on its group
  of the batch (same samples per subnet as PSE, K passes).
* ``autoslim``: mmrazor's way, K subnets one after another on the whole
  batch (max, min, K-2 random), gradients accumulated, one step.

    python benchmarks/parallel_step.py [--batch 32] [--size 128] [--rounds 5]

Writes benchmarks/results/parallel_step.json.
"""
import psenet_plugin  # noqa: F401,I001  (first: fixes mmrazor's imports)
import argparse
import copy
import json
import os.path as osp
import statistics
import time

import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmpretrain.structures import DataSample
from mmrazor.registry import MODELS

from psenet_plugin.models import GroupLayout

HERE = osp.dirname(osp.abspath(__file__))


def build(size, layout='interleaved'):
    torch.manual_seed(0)
    return MODELS.build(
        dict(
            type='mmrazor.PSENet',
            architecture=dict(
                _scope_='mmpretrain',
                type='ImageClassifier',
                backbone=dict(type='MobileNetV2', widen_factor=1.5),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(
                    type='LinearClsHead', num_classes=1000,
                    in_channels=1920)),
            mutator=dict(
                type='mmrazor.PSEChannelMutator',
                parse_cfg=dict(
                    _scope_='mmrazor',
                    type='ChannelAnalyzer',
                    demo_input=(1, 3, size, size),
                    tracer_type='FxTracer')),
            group_layout=layout,
            data_preprocessor=dict(mean=[0.] * 3, std=[1.] * 3),
            seed=0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--num-subnets', type=int, default=4)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    device = torch.device(args.device)

    algorithm = build(args.size).to(device)
    contiguous = build(args.size, 'contiguous').to(device)
    contiguous.load_state_dict(algorithm.state_dict())
    static = copy.deepcopy(algorithm.architecture)
    algorithm.mutator.set_max_choices()
    for model in (algorithm, contiguous, static):
        model.train()

    inputs = torch.rand(args.batch, 3, args.size, args.size, device=device)
    labels = torch.randint(0, 1000, (args.batch, ), device=device)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    data = dict(inputs=list(inputs * 255), data_samples=samples)

    def optim(model):
        return OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-4))

    wrappers = {
        'pse': optim(algorithm),
        'pse_contiguous': optim(contiguous),
        'plain': optim(static),
    }
    wrappers['sequential_groups'] = wrappers['pse']
    wrappers['autoslim'] = wrappers['pse']
    arch, mutator = algorithm.architecture, algorithm.mutator

    def plain():
        logits = static.head(static.extract_feat(inputs))
        wrappers['plain'].update_params(F.cross_entropy(logits, labels))

    def sequential_groups():
        layout = GroupLayout(args.num_subnets)
        total = 0
        for k, subnet in enumerate(algorithm.sample_subnets()):
            mutator.set_choices(subnet)
            index = layout.indices(k, args.batch, device)
            logits = arch.head(arch.extract_feat(inputs[index]))
            total = total + F.cross_entropy(
                logits, labels[index]) * len(index) / args.batch
            # backward per subnet: activations of one subnet at a time
            total.backward()
            total = 0
        wrappers['pse'].step()
        wrappers['pse'].zero_grad()

    def autoslim():
        for subnet in algorithm.sample_subnets():
            mutator.set_choices(subnet)
            logits = arch.head(arch.extract_feat(inputs))
            (F.cross_entropy(logits, labels) / args.num_subnets).backward()
        wrappers['pse'].step()
        wrappers['pse'].zero_grad()

    variants = {
        'plain': plain,
        'pse': lambda: algorithm.train_step(data, wrappers['pse']),
        'pse_contiguous':
        lambda: contiguous.train_step(data, wrappers['pse_contiguous']),
        'sequential_groups': sequential_groups,
        'autoslim': autoslim,
    }
    for step in variants.values():  # warm-up
        step()
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            if device.type == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == 'cuda':
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)

    base = statistics.median(times['plain'])
    result = dict(
        setting=dict(
            model='MobileNetV2-1.5x',
            batch=args.batch,
            size=args.size,
            num_subnets=args.num_subnets,
            device=str(device),
            threads=torch.get_num_threads(),
            rounds=args.rounds),
        median_seconds={k: statistics.median(v)
                        for k, v in times.items()},
        ratio_to_plain={
            k: statistics.median(v) / base
            for k, v in times.items()
        })
    print(f'{"variant":<20} {"median s":>9} {"x plain":>8}')
    for name in variants:
        print(f'{name:<20} {result["median_seconds"][name]:>9.3f} '
              f'{result["ratio_to_plain"][name]:>8.2f}')
    out = osp.join(HERE, 'results', f'parallel_step_{device.type}.json')
    with open(out, 'w') as f:
        json.dump(result, f, indent=1)
    print(f'written: {osp.relpath(out)}')


if __name__ == '__main__':
    main()
