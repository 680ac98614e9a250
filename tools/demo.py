"""The main job, end to end on the embedded MNIST digits, with a summary.

    python tools/demo.py [--work-dir work_dirs/demo] [--epochs N]

It runs the same commands a user would type (printed as it goes):
prepare the embedded dataset, train, and report the validation accuracy
and where the checkpoint is.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = 'configs/baselines/autoslim_mbv2_1.5x_supernet_mnist5k.py'


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
    parser.add_argument('--epochs', type=int, default=1)
    args = parser.parse_args()

    start = time.time()
    run(['python', 'tools/prepare_data.py', 'mnist5k'])
    run([
        'python', 'tools/train.py', CONFIG, '--work-dir', args.work_dir,
        '--cfg-options', f'train_cfg.max_epochs={args.epochs}',
        f'param_scheduler.end={args.epochs}'
    ])
    metrics = last_val_metrics(osp.join(ROOT, args.work_dir))
    elapsed = time.time() - start

    print('\n== summary ==')
    print(f'config:      {CONFIG}')
    print(f'epochs:      {args.epochs}')
    for key in sorted(metrics):
        if 'accuracy' in key or key.endswith('flops'):
            print(f'{key:<12} {metrics[key]:.2f}')
    print(f'checkpoint:  {osp.join(args.work_dir, f"epoch_{args.epochs}.pth")}')
    print(f'time:        {elapsed:.0f} s')


if __name__ == '__main__':
    main()
