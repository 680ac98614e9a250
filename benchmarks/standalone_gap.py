"""The cost of weight sharing: the demo supernet's max and min subnets
against the same architectures trained standalone with the same recipe.

    python benchmarks/standalone_gap.py [--demo-dir work_dirs/demo_s1]
        [--seed 1] [--out-dir benchmarks/results/standalone_gap] [--tag T]

Reads the supernet's figures from ``<demo-dir>/eval_subnets.json`` (written
by ``tools/demo.py``: validation top-1 with BN recalibrated per subnet), then
trains the max and the min subnet from scratch as plain mmpretrain models
(mmrazor's ``sub_model`` of ``configs/demo/pse_mbv2_mnist_subnet.py``) with
the demo supernet's own schedule: the same 3,500 training images, batch 64,
SGD lr 0.02 nesterov, 60 warm-up iterations then cosine to 0 over 16 epochs
(``configs/_base_/schedules/mnist5k_pse.py``), the same seed. Each standalone
subnet sees every training image once an epoch; inside the supernet it sees a
quarter of each batch (split mode, K=4). Writes ``result.{md,json}``.
About 8 minutes on 2 cores.
"""
import argparse
import json
import os.path as osp
import sys

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)

from supernet_quality import (fix_subnet, standalone_body,  # noqa: E402
                              train_fixed_subnet)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo-dir', default='work_dirs/demo_s1')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--epochs', type=int, default=16)
    parser.add_argument('--lr', type=float, default=0.02)
    parser.add_argument('--pse-config',
                        default='configs/demo/pse_mbv2_mnist.py')
    parser.add_argument(
        '--subnet-config', default='configs/demo/pse_mbv2_mnist_subnet.py')
    parser.add_argument(
        '--out-dir', default=osp.join(HERE, 'results', 'standalone_gap'))
    parser.add_argument(
        '--tag', help='names the result files result_<tag>_s<seed>.* '
        '(e.g. the supernet recipe); the standalone runs are shared')
    args = parser.parse_args()
    with open(osp.join(args.demo_dir, 'eval_subnets.json')) as f:
        evaluated = json.load(f)
    units = evaluated['units']
    rows = []
    for subnet in evaluated['subnets']:
        if subnet['kind'] not in ('max', 'min'):
            continue
        name = f'{subnet["kind"]}_s{args.seed}'
        work = osp.join(args.out_dir, name)
        # the demo's recipe: lr after 60 iterations of warm-up, cosine
        body = standalone_body(name, args.epochs, args.seed, lr=args.lr,
                               warmup=60)
        alone = train_fixed_subnet(work, osp.join(args.out_dir, name + '.py'),
                                   args.subnet_config, body,
                                   fix_subnet(subnet, units,
                                              args.pse_config),
                                   subnet['kind'])
        rows.append(dict(kind=subnet['kind'], flops=subnet['flops'],
                         supernet=subnet['top1'], standalone=alone,
                         gap=alone - subnet['top1']))
        print(f'{subnet["kind"]}: supernet {subnet["top1"]:.1f}, standalone '
              f'{alone:.1f}, gap {alone - subnet["top1"]:.1f}', flush=True)
    result = dict(demo_dir=args.demo_dir, seed=args.seed, epochs=args.epochs,
                  lr=args.lr, rows=rows)
    name = f'result_{args.tag}_s{args.seed}' if args.tag else \
        f'result_s{args.seed}'
    with open(osp.join(args.out_dir, name + '.json'), 'w') as f:
        json.dump(result, f, indent=1)
    lines = [f'Demo supernet `{args.demo_dir}` against standalone training, '
             f'{args.epochs} epochs, lr {args.lr}, seed {args.seed} '
             '(validation top-1):', '',
             '| subnet | MFLOPs | in the supernet | standalone | gap |',
             '|---|---|---|---|---|']
    lines += [f'| {r["kind"]} | {r["flops"] / 1e6:.2f} | {r["supernet"]:.1f}'
              f' | {r["standalone"]:.1f} | {r["gap"]:.1f} |' for r in rows]
    with open(osp.join(args.out_dir, name + '.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
