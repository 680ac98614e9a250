"""Supernet quality and ranking: PSE-Net against MMRazor's AutoSlim, at equal
wall-clock, against the same subnets trained standalone.

One command, one run, same data (the embedded digits: the 3,500 training
images of the held-out split, validation on the 1,000 val images), same
seeds, same schedule family:

1. Both supernets (``configs/demo/pse_mbv2_mnist.py`` and
   ``configs/baselines/autoslim_mbv2_1.5x_supernet_mnist5k.py``, MobileNetV2-
   1.5x at 32x32) train for the same wall-clock budget, one after the
   other, under ``TimedTrainLoop``: each trains until ``--budget`` seconds
   have passed, its learning rate set by the elapsed fraction of them (SGD,
   nesterov, linear warm-up over 5% then cosine to 0, the same learning
   rate and batch), so the machine's drift costs iterations, never the end
   of the schedule. (Iteration schedules sized by a probe of each step left
   one supernet 0.84x, then 1.18x the other's time.) The training time
   and iterations each really took are reported.
2. The max, min and ``--random`` random subnets with FLOPs in 25-45% of the
   max (the same subnets for both) are evaluated on both supernets,
   BN recalibrated per subnet on training images (``tools/eval_subnets.py``;
   AutoSlim's weights are read into the same PSE model, whose units and
   widths are the same).
3. The same subnets are trained standalone from scratch with one fixed
   recipe (``--standalone-epochs`` epochs, 3 by default: SGD at
   ``--standalone-lr``, 0.04 by default, cosine, after
   ``--standalone-warmup`` iterations of linear warm-up, none by
   default), with several seeds (``--seeds``, 2 by default;
   ``--second-seed`` N: only the max, the min and the first N in-band
   subnets, all by default):
   their standalone accuracy is the mean of the seeds, which divides the
   variance of the ranking's ground truth by their number. The difference
   between the first two seeds is the seed noise reported, and the ground
   truth is ranked against itself: the mean of the first half of the seeds
   against the mean of the second half (with 2 seeds, one seed against the
   other).
4. Reported: top-1 of max, min and the in-band subnets on both supernets;
   Kendall tau and Spearman rho between each supernet's estimate and the
   standalone accuracy (in-band and overall), and FLOPs alone as a
   predictor; the tau a perfect estimator would expect against this
   ground truth (:func:`perfect_tau`, from the truth's agreement with
   itself); a table (Markdown, JSON) and a scatter PNG.

``--task noisy_digits`` runs every step on a harder task built from the
same digits (``benchmarks/noisy_digits.py``: a fragment of another digit
and Gaussian noise in each image, written to ``data/mnist5k_noisy``): on
the clean digits every in-band subnet trains to within a few points of the
max and a second standalone seed ranks them at Kendall tau 0.23-0.45 only
(on the noisy digits at 0.69, in-band accuracies spread over 16 points).

    python benchmarks/supernet_quality.py [--budget 420] [--random 10]
        [--task digits|noisy_digits]
        [--standalone-epochs 3] [--standalone-lr 0.04]
        [--standalone-warmup 0] [--seeds 2] [--second-seed N]
        [--lr 0.02]
        [--pse-options KEY=VALUE ...] [--jobs N] [--out-dir DIR]
        [--truth RESULT_JSON] [--pse-from OUT_DIR]

Every finished step leaves a ``done.json`` in its work dir and is not run
again by a later call with the same ``--out-dir`` and the same settings (a
finished training step made with another config, e.g. another ``--lr``, is
an error). Delete a step's folder to redo it: e.g. ``rm -r DIR/pse*
DIR/eval_pse*`` and new ``--pse-options`` compare another PSE-Net
recipe with the same AutoSlim supernet and the same standalone subnets.
``--truth FILE`` trains the PSE-Net supernet only: the standalone
accuracies and AutoSlim's row come from FILE, a ``result.json`` of an
earlier run of the same subnets (same ``--seed``, ``--random``, ``--task``,
``--budget`` and ``--lr``; the committed ones under
``benchmarks/results/supernet_quality/``), so another PSE-Net recipe is
ranked against a ground truth already paid for in about 10 minutes
instead of an hour.
``--pse-from DIR`` is the other way round: the PSE-Net supernet and its
estimates come from DIR, an out dir of an earlier run of the same subnets
(its ``pse/``, ``pse.py`` and ``eval_pse.json`` are copied into the out
dir; the copied config must be the one this call would write), and
AutoSlim and the standalone subnets train, e.g. a ground truth with
another ``--standalone-lr`` for supernets already trained.

An out dir may be copied or moved (its records name their files relative
to it): ``cp -r DIR DIR2`` first keeps the first recipe's results; a
larger ``--random`` with the same ``--seed`` (after ``rm DIR/eval_*.json``)
adds subnets and keeps the standalone trainings of the first ones.

The CPU default takes about 45 minutes on 2 cores. On a GPU or ImageNet:
pass ``--pse-config``/``--autoslim-config`` (e.g. configs/pse_mbv2.py and
configs/baselines/autoslim_mbv2_1.5x_supernet_8xb256_in1k.py), a budget in
seconds of the whole training (hours), ``--lr`` of that setting and
``--standalone-epochs`` of a short ImageNet recipe; ``--launcher pytorch``
runs are not driven by this script (it runs single-process).
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
PSE_CONFIG = 'configs/demo/pse_mbv2_mnist.py'
AUTOSLIM_CONFIG = 'configs/baselines/autoslim_mbv2_1.5x_supernet_mnist5k.py'
SUBNET_CONFIG = 'configs/demo/pse_mbv2_mnist_subnet.py'


def run(cmd, log=None, threads=None):
    """Run ``cmd`` (``python ...``) with this interpreter; ``threads``:
    the torch/OpenMP threads it may use (default: torch's own choice)."""
    print('$ ' + ' '.join(cmd), flush=True)
    start = time.time()
    env = None
    if threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
    with open(log, 'w') if log else open(os.devnull, 'w') as out:
        result = subprocess.run([sys.executable] + cmd[1:], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    if result.returncode:
        sys.exit(f'error: {" ".join(cmd)} failed (exit {result.returncode})'
                 + (f'; see {log}' if log else ''))
    return time.time() - start


def scalars(work_dir):
    """mmengine's scalar records of the newest run in ``work_dir``."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data',
                                         'scalars.json')))
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        return [json.loads(line) for line in f]


def config_text(base, body):
    return f'_base_ = [{osp.join(ROOT, base)!r}]\n' + body


def write_config(path, base, body):
    with open(path, 'w') as f:
        f.write(config_text(base, body))
    return path


#: what --pse-from copies from an earlier out dir
_PSE_FILES = ('pse', 'pse.py', 'eval_pse.json')


def copy_pse(source, out_dir):
    """Copy the PSE-Net supernet of the out dir ``source`` (its training
    and its estimates) into ``out_dir``. Each file lands by a rename, so an
    interrupted copy leaves nothing half-written; files ``out_dir`` already
    holds must be the same as ``source``'s (a second call with the same
    ``--pse-from``), anything else is an error."""
    import filecmp
    import shutil
    done = _done(osp.join(source, 'pse'))
    if done is None or not all(
            osp.exists(osp.join(source, name)) for name in _PSE_FILES):
        sys.exit(f'error: --pse-from {source}: no finished PSE-Net supernet '
                 f'there; accepted: an out dir of this benchmark holding '
                 f'{", ".join(_PSE_FILES)} (pse/done.json)')
    for name in _PSE_FILES:
        src, dst = osp.join(source, name), osp.join(out_dir, name)
        if osp.exists(dst):
            same = (_done(dst) == done if name == 'pse' else
                    filecmp.cmp(src, dst, shallow=False))
            if not same:
                sys.exit(f'error: --pse-from {source}: {dst} already holds '
                         'another PSE-Net run; accepted: an out dir without '
                         f'{name}, or the one copied from {source}')
            continue
        tmp = dst + '.copying'
        if osp.isdir(tmp):
            shutil.rmtree(tmp)
        if osp.isdir(src):
            shutil.copytree(src, tmp)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def _reused(work, cfg_path, base, body):
    """The finished step's record, if ``work`` holds one made with this very
    config (``cfg_path`` as it would be written now); a finished step made
    with other settings (another ``--lr``, ``--budget``, ``--seed``...) is
    an error, not silently reused."""
    done = _done(work)
    if done is None:
        return None
    if osp.isfile(cfg_path):
        with open(cfg_path) as f:
            if f.read() != config_text(base, body):
                sys.exit(f'error: {work} was made with other settings than '
                         f'this call\'s (compare {cfg_path}); delete it to '
                         'redo that step, or pass another --out-dir')
    return done


#: --task -> the data root that replaces data/mnist5k in every step (None:
#: the configs' own)
TASKS = dict(digits=None, noisy_digits='data/mnist5k_noisy')
#: where the mnist5k configs name their data root
_DATA_KEYS = ('train_dataloader.dataset.dataset',
              'heldout_dataloader.dataset.dataset', 'val_dataloader.dataset',
              'test_dataloader.dataset')


def data_text(root):
    """Config lines that read the dataset from ``root`` ('' for None)."""
    if root is None:
        return ''
    lines = []
    for key in _DATA_KEYS:
        top, *path = key.split('.')
        value = f'data_root={root!r}'
        for part in reversed(path):
            value = f'{part}=dict({value})'
        lines.append(f'{top} = dict({value})')
    return '\n' + '\n'.join(lines) + '\n'


def data_options(root):
    """The same as ``--cfg-options`` of a tool."""
    if root is None:
        return []
    return ['--cfg-options'] + [f'{key}.data_root={root}'
                                for key in _DATA_KEYS]


def schedule(budget, lr, seed):
    """Training for ``budget`` seconds, the learning rate annealed by the
    elapsed time (psenet_plugin's ``TimedTrainLoop``)."""
    return f'''
optim_wrapper = dict(optimizer=dict(
    _delete_=True, type='SGD', lr={lr}, momentum=0.9, weight_decay=4e-5,
    nesterov=True))
param_scheduler = None
train_cfg = dict(_delete_=True, type='TimedTrainLoop', max_seconds={budget},
                 warmup_ratio=0.05, warmup_start_factor=0.1)
val_cfg = None
val_dataloader = None
val_evaluator = None
default_hooks = dict(logger=dict(interval=5),
                     checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                     interval=10**9, save_last=True,
                                     max_keep_ckpts=1))
randomness = dict(seed={seed})
'''


def _done(work):
    path = osp.join(work, 'done.json')
    if osp.isfile(path):
        with open(path) as f:
            return json.load(f)
    return None


def _mark_done(work, record):
    os.makedirs(work, exist_ok=True)
    with open(osp.join(work, 'done.json'), 'w') as f:
        json.dump(record, f)
    return record


def supernet_body(args, extra=''):
    """The config lines of a timed supernet training: the data first (the
    schedule then removes the val dataloader), ``extra`` last."""
    return args.data_text + schedule(args.budget, args.lr, args.seed) + extra


def train_supernet(name, config, args, extra=''):
    """Train the supernet of ``config`` for ``args.budget`` seconds; its
    record: iterations, training seconds, checkpoint."""
    work = osp.join(args.out_dir, name)
    cfg_path = osp.join(args.out_dir, f'{name}.py')
    body = supernet_body(args, extra)
    done = _reused(work, cfg_path, config, body)
    if done:
        return done
    cfg = write_config(cfg_path, config, body)
    run(['python', 'tools/train.py', cfg, '--work-dir', work],
        log=osp.join(args.out_dir, f'{name}.log'))
    with open(osp.join(work, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    return _mark_done(work, dict(
        iters=int(osp.basename(checkpoint)[len('iter_'):-len('.pth')]),
        train_seconds=_train_seconds(checkpoint),
        # relative to the out dir, which may be moved (an absolute path of
        # an earlier record stays what it is)
        checkpoint=osp.relpath(checkpoint, args.out_dir)))


def kendall_spearman(xs, ys):
    from scipy.stats import kendalltau, spearmanr
    if len(xs) < 3:
        return None, None
    return (float(kendalltau(xs, ys).statistic),
            float(spearmanr(xs, ys).statistic))


def tau_interval(xs, ys, draws=2000, seed=0):
    """The 5th and 95th percentiles of Kendall tau over ``draws`` bootstrap
    resamples of the (x, y) pairs: with 10 subnets the interval is about
    0.9 wide, the reason a single run's in-band tau is not a result.
    Resamples whose x or y are all tied are left out."""
    import numpy as np
    from scipy.stats import kendalltau
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) < 3:
        return None
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(draws):
        pick = rng.integers(0, len(xs), len(xs))
        if np.ptp(xs[pick]) == 0 or np.ptp(ys[pick]) == 0:
            continue
        taus.append(kendalltau(xs[pick], ys[pick]).statistic)
    return [float(q) for q in np.percentile(taus, [5, 95])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--budget', type=float, default=420,
                        help='training seconds of each supernet')
    parser.add_argument('--random', type=int, default=10)
    parser.add_argument('--standalone-epochs', type=int, default=3)
    parser.add_argument(
        '--standalone-lr', type=float, default=0.04,
        help='learning rate of the standalone trainings (SGD, cosine)')
    parser.add_argument(
        '--standalone-warmup', type=int, default=0,
        help='iterations of linear warm-up from 0.1x the standalone lr')
    parser.add_argument(
        '--seeds', type=int, default=2,
        help='standalone seeds of each subnet (its standalone accuracy '
        'is their mean)')
    parser.add_argument(
        '--second-seed', type=int,
        help='only the max, the min and the first N in-band subnets get '
        'more than one seed; default: all')
    parser.add_argument('--lr', type=float, default=0.02,
                        help='both supernets (the demo\'s schedule)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--jobs', type=int, default=1,
        help='standalone trainings run this many at a time, the cores '
        'shared among them (they are not timed; the supernets always train '
        'alone)')
    parser.add_argument(
        '--task', choices=sorted(TASKS), default='digits',
        help='digits: the embedded MNIST digits (data/mnist5k); '
        'noisy_digits: the same with a fragment of another digit and '
        'Gaussian noise in each image (benchmarks/noisy_digits.py, '
        'data/mnist5k_noisy): a task whose subnets differ more')
    parser.add_argument('--pse-config', default=PSE_CONFIG)
    parser.add_argument('--autoslim-config', default=AUTOSLIM_CONFIG)
    parser.add_argument('--subnet-config', default=SUBNET_CONFIG)
    parser.add_argument(
        '--pse-options', nargs='*', default=[],
        help='config lines for the PSE supernet, e.g. '
        '"model.num_subnets=6"')
    parser.add_argument(
        '--out-dir', default=osp.join(HERE, 'results', 'supernet_quality'))
    parser.add_argument(
        '--truth', help='result.json of an earlier run of the same subnets: '
        'its standalone accuracies and AutoSlim row are used, only the '
        'PSE-Net supernet trains')
    parser.add_argument(
        '--pse-from', metavar='OUT_DIR',
        help='an out dir of an earlier run of the same subnets: its '
        'PSE-Net supernet and estimates are copied and used, AutoSlim and '
        'the standalone subnets train')
    args = parser.parse_args()
    args.out_dir = osp.abspath(args.out_dir)
    if args.second_seed is None:
        args.second_seed = args.random
    if args.seeds < 1:
        sys.exit(f'error: --seeds {args.seeds}: accepted: 1 or more')
    if args.truth and args.pse_from:
        sys.exit('error: --truth and --pse-from: accepted: one of them '
                 '(--truth trains only PSE-Net, --pse-from all but it)')
    earlier = load_truth(args.truth, args) if args.truth else None
    os.makedirs(args.out_dir, exist_ok=True)
    if args.pse_from:
        copy_pse(osp.abspath(args.pse_from), args.out_dir)
    start = time.time()
    run(['python', 'tools/prepare_data.py', 'mnist5k'])
    data_root = TASKS[args.task]
    if data_root:
        run(['python', 'benchmarks/noisy_digits.py', '--root', data_root])
    args.data_text = data_text(data_root)
    pse_extra = ''.join(f'\n{line}\n'
                        for line in _options_to_python(args.pse_options))

    # 1. equal wall-clock: each supernet trains for the budget, its
    # learning rate annealed by the elapsed time
    supernets = {}
    trained = [('pse', args.pse_config)]
    if earlier is None:
        trained.append(('autoslim', args.autoslim_config))
    else:
        supernets['autoslim'] = earlier['supernets']['autoslim']
    for name, config in trained:
        supernets[name] = train_supernet(name, config, args,
                                         pse_extra if name == 'pse' else '')
        print(f'{name}: {supernets[name]["iters"]} iterations, '
              f'{supernets[name]["train_seconds"]:.0f} s of training',
              flush=True)

    # 2. the same subnets on both supernets
    estimates = {}
    for name, _ in trained:
        info = supernets[name]
        out = osp.join(args.out_dir, f'eval_{name}.json')
        if not osp.isfile(out):
            run([
                'python', 'tools/eval_subnets.py', args.pse_config,
                osp.join(args.out_dir, info['checkpoint']), '--random',
                str(args.random), '--seed',
                str(args.seed), '--out', out, '--work-dir',
                osp.join(args.out_dir, f'eval_{name}')
            ] + data_options(data_root),
                log=osp.join(args.out_dir, f'eval_{name}.log'))
        with open(out) as f:
            estimates[name] = json.load(f)
    subnets = estimates['pse']['subnets']
    units = estimates['pse']['units']
    if earlier is None:
        assert [s['widths'] for s in subnets] == [
            s['widths'] for s in estimates['autoslim']['subnets']
        ]
        # 3. standalone
        standalone = train_all_standalone(subnets, units, args)
    else:
        if architectures(earlier['subnets']) != architectures(subnets):
            sys.exit(f'error: --truth {args.truth}: other subnets than '
                     f'{args.out_dir}/eval_pse.json; accepted: a result of '
                     'the same --seed, --random and --task')
        estimates['autoslim'] = dict(subnets=[
            dict(top1=e) for e in earlier['supernets']['autoslim']
            ['estimates']
        ])
        standalone = [s['standalone'] for s in earlier['subnets']]

    report(args, supernets, estimates, subnets, standalone,
           time.time() - start)


def architectures(subnets):
    """What identifies each subnet of a result (its kind, FLOPs and
    parameters), to check that two results rank the same subnets."""
    return [(s['kind'], s['flops'], s['params']) for s in subnets]


#: the settings of a --truth file that must be this call's
_TRUTH_SETTINGS = (('seed', 'seed'), ('random_subnets', 'random'),
                   ('task', 'task'), ('budget_seconds', 'budget'),
                   ('lr', 'lr'), ('autoslim_config', 'autoslim_config'))
#: the settings of the standalone trainings, taken from a --truth file
_STANDALONE_SETTINGS = (('standalone_epochs', 'standalone_epochs'),
                        ('standalone_lr', 'standalone_lr'),
                        ('standalone_warmup', 'standalone_warmup'),
                        ('standalone_seeds', 'seeds'))


def load_truth(path, args):
    """The earlier ``result.json`` of ``--truth``, checked against this
    call's settings; the standalone settings of ``args`` become its."""
    try:
        with open(path) as f:
            earlier = json.load(f)
        setting = earlier['setting']
        # what the run reads of it, so a wrong file fails here
        earlier['supernets']['autoslim']['estimates']
        earlier['subnets'][0]['standalone']
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        sys.exit(f'error: --truth {path}: not a result.json of this '
                 f'benchmark ({type(e).__name__}: {e})')
    for key, name in _TRUTH_SETTINGS:
        if setting.get(key) != getattr(args, name):
            option = '--' + name.replace('_', '-')
            sys.exit(f'error: --truth {path} was made with {option} '
                     f'{setting.get(key)}, this call has '
                     f'{getattr(args, name)}; accepted: the same')
    for key, name in _STANDALONE_SETTINGS:
        setattr(args, name, setting[key])
    return earlier


def _options_to_python(options):
    """['model.batch_mode=1', 'model.mutator.x=2'] -> one line a top-level
    key, "model = dict(batch_mode=1, mutator=dict(x=2))": config lines merge
    into the base config's dicts, but a second line for the same key would
    replace the first."""
    tree = {}
    for option in options:
        key, value = option.split('=', 1)
        *path, leaf = key.split('.')
        node = tree
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                sys.exit(f'error: --pse-options sets {part} and a key '
                         f'inside it: {option}')
        node[leaf] = value

    def expr(value):
        if not isinstance(value, dict):
            return value
        return 'dict(' + ', '.join(f'{k}={expr(v)}'
                                   for k, v in value.items()) + ')'

    return [f'{key} = {expr(value)}' for key, value in tree.items()]


def _train_seconds(checkpoint):
    """The training seconds ``TimedTrainLoop`` kept in the checkpoint's
    message hub (from the first iteration's start to the last one's end;
    the logger's records average over its interval and miss a run shorter
    than it)."""
    import psenet_plugin  # noqa: F401  mmengine checkpoints, weights_only
    from psenet_plugin.engine.loops.timed_train_loop import SECONDS_KEY
    from psenet_plugin.structures.io import load_torch_file
    hub = load_torch_file(checkpoint)['message_hub']
    return float(hub['runtime_info'][SECONDS_KEY])


def standalone_runs(count, seed, seeds, several):
    """The standalone trainings ``(subnet index, seed)`` of ``count``
    subnets (max, min, then the in-band ones): ``seeds`` seeds from
    ``seed`` on for the max, the min and the first ``several`` in-band
    subnets, ``seed`` alone for the others."""
    return [(i, seed + k) for i in range(count)
            for k in range(seeds if i < 2 + several else 1)]


def threads_per_job(jobs):
    """The threads each of ``jobs`` trainings at a time gets (the cores
    shared among them); None for one job: torch's own choice."""
    return max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None


def read_out_dir(out_dir):
    """An out dir's ``result.json`` (the standalone ground truth and the
    setting) and ``eval_pse.json`` (the subnets' widths and PSE-Net's
    estimates)."""
    with open(osp.join(out_dir, 'result.json')) as f:
        result = json.load(f)
    with open(osp.join(out_dir, 'eval_pse.json')) as f:
        evaluated = json.load(f)
    return result, evaluated


def train_all_standalone(subnets, units, args):
    """Every subnet's standalone top-1 per seed, ``args.jobs`` trainings
    at a time."""
    from concurrent.futures import ThreadPoolExecutor
    jobs = max(1, args.jobs)
    threads = threads_per_job(jobs)
    runs = standalone_runs(len(subnets), args.seed, args.seeds,
                           args.second_seed)
    fixed = [fix_subnet(s, units, args.pse_config) for s in subnets]
    pool = ThreadPoolExecutor(jobs)
    try:
        futures = [
            pool.submit(train_standalone, subnets[i], fixed[i], seed, args,
                        threads) for i, seed in runs
        ]
        accs = [future.result() for future in futures]
    finally:  # a failed training: the runs not started are not started
        pool.shutdown(cancel_futures=True)
    standalone = [[] for _ in subnets]
    for (i, _), acc in zip(runs, accs):
        standalone[i].append(acc)
    for subnet, acc in zip(subnets, standalone):
        print(f'standalone {subnet["kind"]}: {acc}', flush=True)
    return standalone


def standalone_body(name, epochs, seed, data_text='', lr=0.04, warmup=0):
    """The config lines of a standalone training of the subnet in
    ``<out dir>/<name>/fix_subnet.json``, named from the config's own folder
    (mmengine's ``{{ fileDirname }}``): an out dir moved or copied keeps
    its finished trainings. SGD at ``lr``, cosine to 0 over ``epochs``,
    after a linear warm-up from 0.1x over ``warmup`` iterations if any."""
    schedulers = f'''
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=0,
         end={epochs}, convert_to_iter_based=True)'''
    if warmup:
        schedulers = f'''
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end={warmup}),''' + schedulers
    return f'''
model = dict(fix_subnet='{{{{ fileDirname }}}}/{name}/fix_subnet.json',
             init_cfg=None)
optim_wrapper = dict(optimizer=dict(lr={lr}))
param_scheduler = [{schedulers}
]
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
default_hooks = dict(checkpoint=dict(interval={epochs}, max_keep_ckpts=1))
randomness = dict(seed={seed})
''' + data_text


def train_standalone(subnet, fixed, seed, args, threads=None):
    name = f'standalone_{subnet["kind"]}_s{seed}'
    work = osp.join(args.out_dir, name)
    body = standalone_body(name, args.standalone_epochs, seed,
                           args.data_text, args.standalone_lr,
                           args.standalone_warmup)
    return train_fixed_subnet(work, osp.join(args.out_dir, f'{name}.py'),
                              args.subnet_config, body, fixed,
                              subnet['kind'], threads)


def train_fixed_subnet(work, cfg_path, base, body, widths, kind,
                       threads=None):
    """Train the subnet ``widths`` (mmrazor's subnet config, read from
    ``<work>/fix_subnet.json``, which ``body`` names) from scratch with the
    config ``base`` + ``body`` written to ``cfg_path``, beside the work dir:
    tools/train.py dumps the full config into the work dir under the same
    file name. A finished run of the same config and subnet is reused.
    ``threads``: see :func:`run`. Returns its last validation top-1."""
    fix = osp.join(work, 'fix_subnet.json')
    done = _reused(work, cfg_path, base, body)
    if done:
        with open(fix) as f:
            if json.load(f) != json.loads(json.dumps(widths)):
                sys.exit(f'error: {work} trained another {kind} '
                         f'subnet (compare {fix}; another --seed?); delete '
                         'it to redo that step, or pass another --out-dir')
        return done['top1']
    os.makedirs(work, exist_ok=True)
    with open(fix, 'w') as f:
        json.dump(widths, f)
    cfg = write_config(cfg_path, base, body)
    run(['python', 'tools/train.py', cfg, '--work-dir', work],
        log=osp.join(work, 'train.log'), threads=threads)
    accs = [r['accuracy/top1'] for r in scalars(work) if 'accuracy/top1' in r]
    return _mark_done(work, dict(top1=float(accs[-1])))['top1']


_MUTATOR = {}


def fix_subnet(subnet, units, pse_config):
    """mmrazor's mutator-mode subnet config of ``subnet`` (the model of
    ``pse_config``, built once)."""
    if 'mutator' not in _MUTATOR:
        import psenet_plugin  # noqa: F401
        from mmengine.config import Config
        from mmrazor.registry import MODELS
        cfg = Config.fromfile(osp.join(ROOT, pse_config))
        model = MODELS.build(cfg.model)
        _MUTATOR['mutator'] = model.mutator
    from psenet_plugin.structures.subnet import fix_subnet_config
    return fix_subnet_config(_MUTATOR['mutator'],
                             dict(zip(units, subnet['widths'])))


def standalone_truth(standalone):
    """The ground truth of the ranking: each subnet's mean standalone
    top-1 over its seeds (``standalone``: a list of top-1s per subnet, as in
    ``result.json``'s ``subnets[i]['standalone']``)."""
    return [statistics.mean(a) for a in standalone]


def truth_halves(standalone):
    """The ground truth split in two to rank itself: ``(h, first,
    second)``, the mean top-1 of the first ``h`` seeds and of the next
    ``h`` of each subnet that has the most seeds (``2 h`` or ``2 h + 1``;
    the others are left out). With two seeds, one seed against the other;
    with one, ``(0, [], [])``."""
    seeds = max(map(len, standalone), default=0)
    half = seeds // 2
    full = [a for a in standalone if half and len(a) == seeds]
    return (half, [statistics.mean(a[:half]) for a in full],
            [statistics.mean(a[half:2 * half]) for a in full])


def truth_factor(standalone, half):
    """How many times more seeds the ground truth averages than one of
    its halves of ``half`` seeds: the subnets' seed counts by their
    harmonic mean (the truth's noise variance goes with the mean of
    1 / count), over ``half``; 0 without halves. With ``--second-seed``
    some subnets have fewer seeds than others."""
    if not half or not standalone:
        return 0
    return len(standalone) / sum(1 / len(a) for a in standalone) / half


def perfect_tau(rho_half, factor):
    """The Kendall tau that a perfect estimator (each subnet's expected
    standalone accuracy) would expect against a ground truth that averages
    ``factor`` times as many seeds as each half whose rankings agree at
    Spearman ``rho_half``: the truth's reliability by the Spearman-Brown
    formula, ``R = f rho / (1 + (f - 1) rho)``, its correlation with the
    expected accuracies ``sqrt(R)``, and Greiner's relation for Gaussian
    noise, ``tau = 2 / pi * asin(r)``. The ceiling a supernet's tau is read
    against; None without a positive ``rho_half``."""
    import math
    if rho_half is None or rho_half <= 0 or factor <= 0:
        return None
    reliability = factor * rho_half / (1 + (factor - 1) * rho_half)
    return 2 / math.pi * math.asin(math.sqrt(min(1.0, reliability)))


def _seeds(first, count):
    """'seed 3' or 'the mean of seeds 3-4'."""
    if count == 0:
        return 'no seed'
    if count == 1:
        return f'seed {first}'
    return f'the mean of seeds {first}-{first + count - 1}'


def _shown(path):
    """``path`` relative to the repository when it lies inside it."""
    path = osp.abspath(path)
    return osp.relpath(path, ROOT) if path.startswith(ROOT + os.sep) \
        else path


def report(args, supernets, estimates, subnets, standalone, seconds):
    import numpy as np
    truth = standalone_truth(standalone)
    flops = [s['flops'] for s in subnets]
    band = list(range(2, len(subnets)))
    truth_band = [truth[i] for i in band]

    def ranking(est):
        """How ``est`` ranks the standalone accuracies, in-band and all."""
        est_band = [est[i] for i in band]
        tau_band, rho_band = kendall_spearman(est_band, truth_band)
        tau_all, rho_all = kendall_spearman(est, truth)
        return dict(tau_band=tau_band, rho_band=rho_band,
                    tau_band_interval=tau_interval(est_band, truth_band),
                    tau_all=tau_all, rho_all=rho_all)

    rows = {}
    for name in ('pse', 'autoslim'):
        est = [s['top1'] for s in estimates[name]['subnets']]
        rows[name] = dict(
            max=est[0],
            min=est[1],
            band_mean=float(np.mean([est[i] for i in band])),
            band_below_min=sum(est[i] < est[1] for i in band),
            **ranking(est),
            train_seconds=supernets[name]['train_seconds'],
            iters=supernets[name]['iters'],
            estimates=est)
    rows['flops_alone'] = ranking(flops)
    noise = [abs(a[0] - a[1]) for a in standalone if len(a) >= 2]
    # the ground truth against itself (with two seeds: a second standalone
    # training as the estimator)
    in_band = [standalone[i] for i in band]
    half, first, second = truth_halves(in_band)
    rows['seed_vs_seed'] = dict(
        zip(('tau_band', 'rho_band'), kendall_spearman(first, second)),
        tau_band_interval=tau_interval(first, second))
    rows['seed_vs_seed']['perfect_tau_band'] = perfect_tau(
        rows['seed_vs_seed']['rho_band'], truth_factor(in_band, half))
    result = dict(
        setting=dict(
            budget_seconds=args.budget,
            random_subnets=args.random,
            standalone_epochs=args.standalone_epochs,
            standalone_lr=args.standalone_lr,
            standalone_warmup=args.standalone_warmup,
            standalone_seeds=args.seeds,
            lr=args.lr,
            seed=args.seed,
            task=args.task,
            pse_config=args.pse_config,
            pse_options=args.pse_options,
            autoslim_config=args.autoslim_config,
            truth=_shown(args.truth) if args.truth else None),
        supernets=rows,
        subnets=[
            dict(kind=s['kind'], flops=s['flops'], params=s['params'],
                 standalone=a) for s, a in zip(subnets, standalone)
        ],
        seed_noise=dict(abs_diffs=noise,
                        mean=float(np.mean(noise)) if noise else None),
        total_seconds=seconds)
    with open(osp.join(args.out_dir, 'result.json'), 'w') as f:
        json.dump(result, f, indent=1)

    def fmt(x, spec='.3f'):
        return '-' if x is None else format(x, spec)

    lines = [
        f'Task: {args.task}.', '',
        '| | PSE-Net | AutoSlim | FLOPs alone |', '|---|---|---|---|',
        f'| training (s, iterations) | {rows["pse"]["train_seconds"]:.0f}, '
        f'{rows["pse"]["iters"]} | {rows["autoslim"]["train_seconds"]:.0f}, '
        f'{rows["autoslim"]["iters"]} | |',
        f'| max top-1 | {rows["pse"]["max"]:.2f} | '
        f'{rows["autoslim"]["max"]:.2f} | |',
        f'| min top-1 | {rows["pse"]["min"]:.2f} | '
        f'{rows["autoslim"]["min"]:.2f} | |',
        f'| in-band mean top-1 ({len(band)} subnets, 25-45% FLOPs) | '
        f'{rows["pse"]["band_mean"]:.2f} | '
        f'{rows["autoslim"]["band_mean"]:.2f} | |',
        f'| in-band subnets below the min subnet | '
        f'{rows["pse"]["band_below_min"]} | '
        f'{rows["autoslim"]["band_below_min"]} | |',
    ]
    def cell(row, key):
        value = rows[row][key]
        if key == 'tau_band_interval':
            return '-' if value is None else '{:.2f} to {:.2f}'.format(*value)
        return fmt(value)

    for key, label in (('tau_band', 'Kendall tau, in-band'),
                       ('tau_band_interval', 'its 90% bootstrap interval'),
                       ('rho_band', 'Spearman rho, in-band'),
                       ('tau_all', 'Kendall tau, all'),
                       ('rho_all', 'Spearman rho, all')):
        lines.append(f'| {label} | ' + ' | '.join(
            cell(row, key) for row in ('pse', 'autoslim', 'flops_alone'))
            + ' |')
    lines.append('')
    if args.truth:
        lines.append(f'Standalone accuracies and AutoSlim\'s row: from '
                     f'{_shown(args.truth)} (not retrained here). AutoSlim '
                     'trained in that run, at that run\'s machine speed: '
                     'compare its iterations with PSE-Net\'s before its '
                     'figures; PSE-Net recipes ranked this way compare '
                     'with each other.')
    ratio = rows['pse']['train_seconds'] / rows['autoslim']['train_seconds']
    lines.append(f'PSE-Net trained {ratio:.2f}x AutoSlim\'s time (budget '
                 f'{args.budget:.0f} s each, TimedTrainLoop: the learning '
                 'rate annealed by elapsed time).')
    warmup = (f', {args.standalone_warmup} iterations of warm-up'
              if args.standalone_warmup else ', no warm-up')
    lines.append(f'Standalone ({args.standalone_epochs} epochs, SGD lr '
                 f'{args.standalone_lr}{warmup}, cosine): max '
                 f'{truth[0]:.2f}, min {truth[1]:.2f}, in-band '
                 f'{min(truth[2:]):.2f}-{max(truth[2:]):.2f}; seed noise '
                 f'(|seed {args.seed} - seed {args.seed + 1}|, '
                 f'{len(noise)} subnets): '
                 f'{", ".join(f"{n:.2f}" for n in noise)}. The ground '
                 f'truth against itself ({_seeds(args.seed, half)} ranking '
                 f'{_seeds(args.seed + half, half)}, {len(first)} in-band '
                 'subnets): Kendall '
                 f'tau {fmt(rows["seed_vs_seed"]["tau_band"])}, Spearman rho '
                 f'{fmt(rows["seed_vs_seed"]["rho_band"])} (tau\'s 90% '
                 'bootstrap interval '
                 f'{cell("seed_vs_seed", "tau_band_interval")}): what '
                 f'retraining a subnet standalone {half or "-"} time(s) '
                 f'scores as an estimator; the ground truth is the mean of '
                 f'{args.seeds} seed(s), against which an estimator that '
                 'knew every subnet\'s expected accuracy would score tau '
                 f'{fmt(rows["seed_vs_seed"]["perfect_tau_band"], ".2f")} '
                 '(perfect_tau).')
    table = '\n'.join(lines)
    with open(osp.join(args.out_dir, 'result.md'), 'w') as f:
        f.write(table + '\n')
    print(table)

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, marker in (('pse', 'o'), ('autoslim', 's')):
        ax.scatter(truth, rows[name]['estimates'], marker=marker,
                   label=f'{name} (tau in-band '
                   f'{fmt(rows[name]["tau_band"], ".2f")})')
    for i, kind in ((0, 'max'), (1, 'min')):
        ax.annotate(kind, (truth[i], rows['pse']['estimates'][i]))
    ax.set_xlabel(f'standalone top-1 ({args.standalone_epochs} epochs, mean '
                  f'of {args.seeds} seed(s))')
    ax.set_ylabel('supernet estimate top-1 (BN recalibrated)')
    ax.legend()
    ax.set_title('Supernet estimate vs standalone accuracy')
    fig.tight_layout()
    fig.savefig(osp.join(args.out_dir, 'scatter.png'), dpi=120)
    print(f'written: {args.out_dir}/result.md, result.json, scatter.png '
          f'({seconds / 60:.1f} min)')


if __name__ == '__main__':
    main()
