"""The main job, end to end on the embedded MNIST digits, with a summary.

    python tools/demo.py [--work-dir work_dirs/demo] [--epochs N]

It runs the commands a user would type (printed as it goes):

1. prepare the embedded dataset;
2. train a PSE-Net MobileNetV2-1.5x supernet (K subnets per step in one
   pass, the prior recorded);
3. search it with the prior-sampling evolution search for 30% of the max
   subnet's FLOPs;
4. export the best subnet (sliced checkpoint, subnet files, ONNX);

then prints the FLOPs target, the found subnet's FLOPs, params and accuracy
against the max subnet's, and where the files are.
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
SEARCH_CONFIG = 'configs/demo/pse_mbv2_mnist_search.py'


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
    train_dir = osp.join(args.work_dir, 'supernet')
    search_dir = osp.join(args.work_dir, 'search')
    export_dir = osp.join(args.work_dir, 'export')
    run(['python', 'tools/prepare_data.py', 'mnist5k'])
    train = ['python', 'tools/train.py', CONFIG, '--work-dir', train_dir]
    if args.epochs:
        train += [
            '--cfg-options', f'train_cfg.max_epochs={args.epochs}',
            f'train_cfg.val_interval={args.epochs}'
        ]
    run(train)
    trained = time.time()
    with open(osp.join(ROOT, train_dir, 'last_checkpoint')) as f:
        checkpoint = osp.relpath(f.read().strip(), ROOT)
    run([
        'python', 'tools/search.py', SEARCH_CONFIG, checkpoint, '--work-dir',
        search_dir
    ])
    searched = time.time()
    run([
        'python', 'tools/export.py', CONFIG, checkpoint,
        osp.join(search_dir, 'best_subnet.json'), '--out-dir', export_dir,
        '--onnx'
    ])
    metrics = last_val_metrics(osp.join(ROOT, train_dir))
    with open(osp.join(ROOT, search_dir, 'best_subnet.json')) as f:
        best = json.load(f)
    with open(osp.join(ROOT, export_dir, 'summary.json')) as f:
        summary = json.load(f)
    import psenet_plugin  # noqa: F401  (quiet config loading)
    from mmengine.config import Config
    low, high = Config.fromfile(osp.join(
        ROOT, SEARCH_CONFIG)).train_cfg.constraints_range.flops

    print('\n== summary ==')
    print(f'FLOPs target:     {low:.2f} - {high:.2f} MFLOPs '
          f'(input {tuple(summary["input_shape"][1:])})')
    print(f'found subnet:     top-1 {best["score"]:.1f}%  '
          f'{best["flops"] / 1e6:.2f} MFLOPs  {best["params"] / 1e6:.3f} M '
          'params')
    for kind in ('max', 'min'):
        print(f'{kind} subnet:       top-1 '
              f'{metrics[f"{kind}_subnet.accuracy/top1"]:.1f}%  '
              f'{metrics[f"{kind}_subnet.flops"]:.2f} MFLOPs  '
              f'{metrics[f"{kind}_subnet.params"]:.3f} M params')
    print(f'supernet:         {checkpoint} (prior: '
          f'{osp.join(train_dir, "prior_stats.json")})')
    print(f'search:           {search_dir}/ (candidates.csv, pareto.png, '
          'best_fix_subnet.yaml)')
    for key, path in summary['files'].items():
        print(f'export {key + ":":<11} {path}')
    print(f'time:             {time.time() - start:.0f} s (train '
          f'{trained - start:.0f} s, search {searched - trained:.0f} s)')


if __name__ == '__main__':
    main()
