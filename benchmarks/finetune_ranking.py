"""Does a short fine-tune of each subnet before evaluation rank the in-band
subnets of a PSE-Net supernet better?

Reads an out dir of ``supernet_quality.py`` (its PSE-Net checkpoint, the
subnets of ``eval_pse.json`` and the standalone ground truth of
``result.json``). For each ``--iters`` N, every subnet starts from the
supernet's weights, trains N iterations alone (SGD, momentum 0.9, constant
``--lr``, the config's training batches of the run's task: every subnet
the same batches with the same augmentations, whatever ran before it in
the call), has its batch norm recalibrated on the same training images
as ``tools/eval_subnets.py`` and is scored on the validation set; then the
supernet's weights come back for the next subnet. Prints Kendall tau of
the in-band scores against the ground truth (with its 90% bootstrap
interval) and against the supernet's own estimates, and writes
``DIR/finetune_<N>.json``.

    python benchmarks/finetune_ranking.py work_dirs/sq_noisy20 --iters 20 60

A standalone training of the benchmark is 3 epochs, 165 iterations: 60
iterations cost a third of one.
"""
import argparse
import copy
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from supernet_quality import (_DATA_KEYS, PSE_CONFIG, ROOT,  # noqa: E402
                              TASKS, kendall_spearman, read_out_dir,
                              standalone_truth, tau_interval)


def build(config, checkpoint, data_root, work_dir):
    """A test runner of the supernet with its weights loaded, the val
    evaluator and dataloader, and the training config's loaders."""
    from psenet_plugin import cli
    cfg = cli.load_config(config)
    cli.set_work_dir(cfg, config, work_dir)
    if data_root:
        cli.merge_cfg_options(
            cfg, {f'{key}.data_root': data_root for key in _DATA_KEYS})
    cfg.load_from = checkpoint
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    cfg.test_cfg = dict()
    cfg.custom_hooks = []
    cli.set_dataloader_defaults(cfg)
    runner = cli.build_runner(cfg)
    runner.load_or_resume()
    return runner, cfg


def load_out_dir(out_dir):
    """An out dir of ``supernet_quality.py``: its ``result.json``, its
    ``eval_pse.json`` and the path of its PSE-Net checkpoint."""
    result, evaluated = read_out_dir(out_dir)
    with open(osp.join(out_dir, 'pse', 'done.json')) as f:
        checkpoint = osp.join(out_dir, json.load(f)['checkpoint'])
    return result, evaluated, checkpoint


def check_units(evaluated, names, out_dir, config):
    """The subnets of ``eval_pse.json`` must name the units of the model
    built from ``config``."""
    if evaluated['units'] != names:
        sys.exit(f'error: {out_dir}/eval_pse.json: other units than '
                 f'{config}\'s; accepted: the benchmark\'s PSE config')


def finetune(model, batches, iters, lr):
    """``iters`` SGD steps of the subnet the mutator is set to."""
    import torch
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                                weight_decay=4e-5)
    done = 0
    while done < iters:
        for batch in batches:
            data = model.data_preprocessor(batch, True)
            losses = model.architecture(data['inputs'], data['data_samples'],
                                        mode='loss')
            loss = sum(v for k, v in losses.items() if 'loss' in k)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == iters:
                break


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='an out dir of supernet_quality.py')
    parser.add_argument('--iters', type=int, nargs='+', default=[20, 60])
    parser.add_argument('--lr', type=float, default=0.02)
    parser.add_argument('--config', default=PSE_CONFIG)
    args = parser.parse_args()

    import psenet_plugin  # noqa: F401
    from psenet_plugin.structures.export import (CalibrationLoader,
                                                 calibrate_bn,
                                                 evaluate_subnet)
    from psenet_plugin.structures.io import atomic_write_json
    out_dir = osp.abspath(args.out_dir)
    result, evaluated, checkpoint = load_out_dir(out_dir)
    truth = standalone_truth([s['standalone'] for s in result['subnets']])
    estimates = [s['top1'] for s in evaluated['subnets']]
    runner, cfg = build(osp.join(ROOT, args.config), checkpoint,
                        TASKS[result['setting']['task']],
                        osp.join(out_dir, 'finetune'))
    model = runner.model
    mutator, names = model.mutator, model.flops_table.unit_names
    check_units(evaluated, names, out_dir, args.config)
    evaluator = runner.build_evaluator(cfg.test_evaluator)
    val = runner.build_dataloader(cfg.test_dataloader)
    evaluator.dataset_meta = val.dataset.metainfo
    calibration = CalibrationLoader(cfg.train_dataloader,
                                    default_scope=cfg.get('default_scope'))
    # the fine-tune's batches too: the same ones, in the same order, with
    # the same augmentations for every subnet (a shared loader with
    # persistent workers gave each subnet the augmentations where the one
    # before it stopped, so a subnet's score depended on what ran before
    # it: --iters 20 60 against --iters 60 alone)
    train = calibration
    weights = copy.deepcopy(model.state_dict())
    band = slice(2, None)
    print(f'{"iterations":>10} {"tau in-band (90%)":>22} {"vs supernet":>12}'
          f' {"in-band mean":>13} {"below min":>10}')
    for iters in args.iters:
        scores = []
        for subnet in evaluated['subnets']:
            model.load_state_dict(weights)
            choice = dict(zip(names, subnet['widths']))
            mutator.set_choices(mutator.choices_of(choice))
            finetune(model, train, iters, args.lr)
            calibrate_bn(model, choice, calibration, evaluated['calibrate'],
                         runner.logger)
            metrics = evaluate_subnet(model, choice, val, evaluator)
            scores.append(metrics['accuracy/top1'])
        tau = kendall_spearman(scores[band], truth[band])[0]
        low, high = tau_interval(scores[band], truth[band])
        own = kendall_spearman(scores[band], estimates[band])[0]
        mean = sum(scores[band]) / len(scores[band])
        below = sum(s < scores[1] for s in scores[band])
        print(f'{iters:>10} {tau:>6.2f} ({low:5.2f} to {high:5.2f}) '
              f'{own:>12.2f} {mean:>13.1f} {below:>10}', flush=True)
        atomic_write_json(
            osp.join(out_dir, f'finetune_{iters}.json'),
            dict(iters=iters, lr=args.lr,
                 checkpoint=osp.relpath(checkpoint, out_dir),
                 top1=scores, tau_band=tau, tau_band_interval=[low, high],
                 tau_band_vs_supernet=own, band_mean=mean,
                 band_below_min=below))
    model.load_state_dict(weights)


if __name__ == '__main__':
    main()
