"""The main job, end to end on the embedded MNIST digits, with a summary.

    python tools/demo.py [--work-dir work_dirs/demo] [--epochs N]

It runs the same commands a user would type (printed as it goes):
prepare the embedded dataset, train a PSE-Net supernet (K subnets per step
in one pass), and report the max and min subnets' validation accuracy,
FLOPs and parameters, and where the checkpoint and the prior are.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = 'configs/demo/pse_mbv2_mnist.py'


def run(cmd):
    print('$ ' + ' '.join(cmd), flush=True)
    subprocess.run([sys.executable] + cmd[1:], cwd=ROOT, check=True)


def last_val_metrics(work_dir):
    """The last validation record of mmengine's scalar log."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data',
                                         'scalars.json')))
    metrics = {}
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        for line in f:
            record = json.loads(line)
            if any('accuracy' in k for k in record):
                metrics = record
    return metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument(
        '--epochs', type=int, help='override the config\'s max_epochs')
    args = parser.parse_args()

    start = time.time()
    run(['python', 'tools/prepare_data.py', 'mnist5k'])
    train = ['python', 'tools/train.py', CONFIG, '--work-dir', args.work_dir]
    if args.epochs:
        train += [
            '--cfg-options', f'train_cfg.max_epochs={args.epochs}',
            f'train_cfg.val_interval={args.epochs}'
        ]
    run(train)
    work_dir = osp.join(ROOT, args.work_dir)
    metrics = last_val_metrics(work_dir)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = osp.relpath(f.read().strip(), ROOT)
    elapsed = time.time() - start

    print('\n== summary ==')
    print(f'config:           {CONFIG}')
    for kind in ('max', 'min'):
        print(f'{kind} subnet:       top-1 '
              f'{metrics[f"{kind}_subnet.accuracy/top1"]:.1f}%  '
              f'{metrics[f"{kind}_subnet.flops"]:.2f} MFLOPs  '
              f'{metrics[f"{kind}_subnet.params"]:.3f} M params')
    print(f'checkpoint:       {checkpoint}')
    print(f'prior statistics: {osp.join(args.work_dir, "prior_stats.json")}')
    print(f'time:             {elapsed:.0f} s')


if __name__ == '__main__':
    main()
