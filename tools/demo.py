"""The main job, end to end on the embedded MNIST digits, with a summary.

    python tools/demo.py [--work-dir work_dirs/demo] [--epochs N]

It runs the commands a user would type (printed as it goes):

1. prepare the embedded dataset;
2. train a PSE-Net MobileNetV2-1.5x supernet (K subnets per step in one
   pass, the prior recorded);
3. search it with the prior-sampling evolution search for 30% of the max
   subnet's FLOPs;
4. export the best subnet (sliced checkpoint with BN statistics
   recalibrated for it, subnet files, ONNX);
5. evaluate on the validation set, which the search never saw (it scored
   candidates on images held out of the training set): the found subnet,
   the max and min subnets and ``--random`` random subnets in the search's
   FLOPs range, each with BN recalibrated (``tools/eval_subnets.py``), and
   the exported model as an ordinary mmpretrain model (``tools/test.py``);
6. draw the pictures (``<work_dir>/pictures/``: the found subnet's widths
   against the supernet's, the search's scores against FLOPs, the max and
   min subnets' training curves);

then prints the FLOPs target, the found subnet's FLOPs, params and
validation accuracy against the min subnet's, the random in-range subnets'
mean and the max subnet's, and where the files are.
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = 'configs/demo/pse_mbv2_mnist.py'
SEARCH_CONFIG = 'configs/demo/pse_mbv2_mnist_search.py'
SUBNET_CONFIG = 'configs/demo/pse_mbv2_mnist_subnet.py'


def run(cmd):
    print('$ ' + ' '.join(cmd), flush=True)
    subprocess.run([sys.executable] + cmd[1:], cwd=ROOT, check=True)


def draw_pictures(work_dir):
    """The found subnet's widths, the search and the training curves as
    PNGs in ``<work_dir>/pictures`` (psenet_plugin/visualization.py); a
    picture that cannot be drawn is reported, not fatal."""
    from psenet_plugin.errors import PSENetError
    from psenet_plugin.visualization import run_pictures
    try:
        drawn = run_pictures(osp.join(ROOT, work_dir))
    except PSENetError as error:
        return {'(none)': f'not drawn: {error}'}
    return {
        key: osp.join(work_dir, 'pictures', osp.basename(path))
        for key, path in drawn.items()
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument(
        '--epochs', type=int, help='override the config\'s max_epochs')
    parser.add_argument(
        '--random',
        type=int,
        default=5,
        help='random subnets in the FLOPs range to compare with (default 5)')
    parser.add_argument('--seed', type=int, help='training and search seed')
    args = parser.parse_args()

    start = time.time()
    train_dir = osp.join(args.work_dir, 'supernet')
    search_dir = osp.join(args.work_dir, 'search')
    export_dir = osp.join(args.work_dir, 'export')
    run(['python', 'tools/prepare_data.py', 'mnist5k'])
    train = ['python', 'tools/train.py', CONFIG, '--work-dir', train_dir]
    options = []
    if args.epochs:
        options += [
            f'train_cfg.max_epochs={args.epochs}',
            f'train_cfg.val_interval={args.epochs}'
        ]
    if args.seed is not None:
        options += [f'randomness.seed={args.seed}', f'model.seed={args.seed}']
    run(train + (['--cfg-options'] + options if options else []))
    trained = time.time()
    with open(osp.join(ROOT, train_dir, 'last_checkpoint')) as f:
        checkpoint = osp.relpath(f.read().strip(), ROOT)
    run([
        'python', 'tools/search.py', SEARCH_CONFIG, checkpoint, '--work-dir',
        search_dir
    ] + ([] if args.seed is None else
         ['--cfg-options', f'train_cfg.seed={args.seed}']))
    searched = time.time()
    run([
        'python', 'tools/export.py', CONFIG, checkpoint,
        osp.join(search_dir, 'best_subnet.json'), '--out-dir', export_dir,
        '--onnx'
    ])
    with open(osp.join(ROOT, search_dir, 'best_subnet.json')) as f:
        best = json.load(f)
    with open(osp.join(ROOT, export_dir, 'summary.json')) as f:
        summary = json.load(f)
    import psenet_plugin  # noqa: F401  (quiet config loading)
    from mmengine.config import Config

    from psenet_plugin.models.psenet import WITH_MIN
    search_cfg = Config.fromfile(osp.join(ROOT, SEARCH_CONFIG))
    low, high = search_cfg.train_cfg.constraints_range.flops
    strategy = search_cfg.model.get('sample_strategy', 'sandwich')
    evaluated = osp.join(args.work_dir, 'eval_subnets.json')
    run([
        'python', 'tools/eval_subnets.py', CONFIG, checkpoint, '--subnet',
        osp.join(search_dir, 'best_subnet.json'), '--random',
        str(args.random), '--flops-range',
        str(low),
        str(high), '--out', evaluated, '--work-dir',
        osp.join(args.work_dir, 'eval')
    ])
    tested = osp.join(args.work_dir, 'exported_test.json')
    run([
        'python', 'tools/test.py', SUBNET_CONFIG,
        osp.join(export_dir, 'subnet_static.pth'), '--work-dir',
        osp.join(args.work_dir, 'test'), '--out', tested, '--out-item',
        'metrics', '--cfg-options', f'model.fix_subnet='
        f'{osp.join(export_dir, "fix_subnet.yaml")}', 'model.init_cfg=None'
    ])
    evaluated_at = time.time()
    pictures = draw_pictures(args.work_dir)
    with open(osp.join(ROOT, evaluated)) as f:
        results = {r['kind']: r for r in json.load(f)['subnets']}
    with open(osp.join(ROOT, tested)) as f:
        exported_top1 = json.load(f)['accuracy/top1']
    found = results['best_subnet.json']
    randoms = [r for k, r in results.items() if k.startswith('random')]
    random_mean = sum(r['top1'] for r in randoms) / max(1, len(randoms))

    def line(label, record):
        return (f'{label:<30} top-1 {record["top1"]:5.1f}%  '
                f'{record["flops"] / 1e6:6.2f} MFLOPs  '
                f'{record["params"] / 1e6:.3f} M params')

    print('\n== summary (validation set, which the search never saw; BN '
          'recalibrated per subnet) ==')
    print(f'FLOPs target:                  {low:.2f} - {high:.2f} MFLOPs '
          f'(input {tuple(summary["input_shape"][1:])})')
    print(line('found subnet:', found) +
          f'  (search score on held-out training images '
          f'{best["score"]:.1f}%)')
    print(f'exported model (tools/test.py) top-1 {exported_top1:5.1f}%')
    print(line('min subnet:', results['min']) +
          ('' if strategy in WITH_MIN else
           f'  (not trained on its own: sample_strategy={strategy!r})'))
    print(f'{len(randoms)} random subnets in range:    top-1 '
          f'{random_mean:5.1f}% mean ('
          f'{min(r["top1"] for r in randoms):.1f} - '
          f'{max(r["top1"] for r in randoms):.1f})' if randoms else '')
    print(line('max subnet:', results['max']))
    verdict = found['top1'] > max(results['min']['top1'], random_mean)
    print(f'found subnet beats the min subnet and the random mean: '
          f'{"yes" if verdict else "NO"}')
    print(f'supernet:         {checkpoint} (prior: '
          f'{osp.join(train_dir, "prior_stats.json")})')
    print(f'search:           {search_dir}/ (candidates.csv, pareto.png, '
          'best_fix_subnet.yaml)')
    for key, path in summary['files'].items():
        print(f'export {key + ":":<11} {path}')
    for key, path in pictures.items():
        print(f'picture {key + ":":<10} {path}')
    print(f'time:             {time.time() - start:.0f} s (train '
          f'{trained - start:.0f} s, search {searched - trained:.0f} s, '
          f'export and evaluation {evaluated_at - searched:.0f} s)')
    summary_path = osp.join(ROOT, args.work_dir, 'demo_summary.json')
    with open(summary_path, 'w') as f:
        json.dump(
            dict(
                found=found,
                exported_top1=exported_top1,
                min=results['min'],
                max=results['max'],
                random_mean=random_mean,
                randoms=randoms,
                search_score=best['score'],
                flops_range=[low, high],
                seconds=time.time() - start), f, indent=1)


if __name__ == '__main__':
    main()
