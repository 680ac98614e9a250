"""Cost of a FLOPs check per candidate: the analytic table against mmrazor.

mmrazor's EvolutionSearchLoop checks every candidate with
``check_subnet_resources``: set the subnet, deep-copy the supernet, slice it
to a static model, and count it with ``ResourceEstimator``. The table
(``psenet_plugin.structures.FlopsTable``) evaluates the same number from the
unit widths. Both run here on the same random candidates, in one process.

    python benchmarks/flops_table.py [--model mobilenet_v2_1.5x|resnet50]
        [--candidates 20]

Writes benchmarks/results/flops_table_<model>.json.
"""
import psenet_plugin  # noqa: F401,I001  (first: fixes mmrazor's imports)
import argparse
import json
import os.path as osp
import random
import time

import numpy as np
import torch
from mmrazor.engine.runner.utils import check_subnet_resources
from mmrazor.registry import MODELS, TASK_UTILS


HERE = osp.dirname(osp.abspath(__file__))
MODELS_ = {
    'mobilenet_v2_1.5x': (dict(type='MobileNetV2', widen_factor=1.5), 1920),
    'resnet50': (dict(type='ResNet', depth=50), 2048),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='mobilenet_v2_1.5x',
                        choices=sorted(MODELS_))
    parser.add_argument('--candidates', type=int, default=20)
    args = parser.parse_args()
    backbone, channels = MODELS_[args.model]
    algorithm = MODELS.build(
        dict(
            type='mmrazor.PSENet',
            architecture=dict(
                _scope_='mmpretrain',
                type='ImageClassifier',
                backbone=backbone,
                neck=dict(type='GlobalAveragePooling'),
                head=dict(
                    type='LinearClsHead', num_classes=1000,
                    in_channels=channels)),
            seed=0)).eval()
    mutator = algorithm.mutator
    rng = random.Random(0)
    subnets = [
        mutator.sample_choices('random', rng)
        for _ in range(args.candidates)
    ]
    estimator = TASK_UTILS.build(
        dict(
            type='mmrazor.ResourceEstimator',
            flops_params_cfg=dict(input_shape=(1, 3, 224, 224))))

    start = time.perf_counter()
    mmrazor_flops = [
        check_subnet_resources(algorithm, s, estimator,
                               dict(flops=(0, 1e9)))[1]['flops']
        for s in subnets
    ]
    per_mmrazor = (time.perf_counter() - start) / len(subnets)

    table = algorithm.flops_table  # built once (one forward pass)
    repeats = 200
    start = time.perf_counter()
    for _ in range(repeats):
        table_flops = [table.flops(mutator.widths_of(s)) for s in subnets]
    per_table = (time.perf_counter() - start) / (repeats * len(subnets))
    vectors = np.stack([table.vector(mutator.widths_of(s)) for s in subnets])
    start = time.perf_counter()
    for _ in range(repeats):
        table.flops_batch(vectors)
    per_batch = (time.perf_counter() - start) / (repeats * len(subnets))

    result = dict(
        model=args.model,
        candidates=len(subnets),
        threads=torch.get_num_threads(),
        seconds_per_candidate=dict(
            mmrazor_check_subnet_resources=per_mmrazor,
            table=per_table,
            table_batched=per_batch),
        speedup=dict(table=per_mmrazor / per_table,
                     table_batched=per_mmrazor / per_batch),
        mmrazor_mflops=mmrazor_flops,
        table_mflops=[f / 1e6 for f in table_flops])
    print(f'{args.model}, {len(subnets)} random candidates, per candidate:')
    print(f'  mmrazor check_subnet_resources  {per_mmrazor * 1e3:9.2f} ms')
    print(f'  FlopsTable (dict of widths)     {per_table * 1e6:9.2f} us  '
          f'({per_mmrazor / per_table:,.0f}x faster)')
    print(f'  FlopsTable (batched vectors)    {per_batch * 1e6:9.2f} us  '
          f'({per_mmrazor / per_batch:,.0f}x faster)')
    gap = np.mean(np.array(mmrazor_flops) / (np.array(table_flops) / 1e6))
    print(f'  mmrazor\'s ResourceEstimator counts {gap:.4f}x the table\'s '
          'FLOPs: its own convention; the table follows mmengine\'s '
          '(equal on the sliced static model, tests/test_flops_table.py)')
    out = osp.join(HERE, 'results', f'flops_table_{args.model}.json')
    with open(out, 'w') as f:
        json.dump(result, f, indent=1)
    print(f'written: {osp.relpath(out)}')


if __name__ == '__main__':
    main()
