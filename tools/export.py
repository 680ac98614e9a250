"""Export a subnet of a PSE-Net supernet (or of another one-shot channel
supernet: mmrazor's AutoSlim) as a physically smaller model.

    python tools/export.py CONFIG CHECKPOINT SUBNET [--out-dir DIR] [--onnx]
        [--calibrate N] [--input-shape 1 3 224 224] [--cfg-options k=v ...]

CONFIG: the supernet (or search) config; CHECKPOINT: the supernet; SUBNET:
best_subnet.json / best_fix_subnet.yaml from tools/search.py, or any
subnet.json, mmrazor mutator-mode subnet file, or the mutable-mode files
mmrazor's own loops write (best_fix_subnet.yaml of EvolutionSearchLoop,
FLOPS_<n>M.yaml of AutoSlimGreedySearchLoop), all read as plain data.
Writes subnet_static.pth (sliced weights), subnet.json, fix_subnet.yaml
(for mmrazor's sub_model and configs/pse_mbv2_subnet.py), subnet.onnx with
--onnx, and summary.json.
The output folder is written whole: the files go to a staging folder beside
it, which replaces it once all are written (a failure leaves an earlier
export as it was); a folder holding anything else is refused, not deleted.

The supernet's batch norm running statistics are averages over subnets of
other widths. Before slicing, the supernet set to the subnet has them
recalibrated on N images of the config's ``train_dataloader``, as
mmrazor's ``SubnetValLoop`` and the search do (same images at every run:
seeded sampler and augmentations). N defaults to the calibration size the
config uses for its subnets (``val_cfg.calibrate_sample_num``, or
``train_cfg.calibrate_sample_num`` of a search config); ``--calibrate 0``
keeps the supernet's statistics.
"""
import argparse
import inspect
import os.path as osp
import sys

try:
    import psenet_plugin  # noqa: F401  compat fixes, plugin registration
    from psenet_plugin import cli
except ImportError as e:  # unsupported or missing dependencies
    sys.exit(f'error: {e}')


def parse_args():
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description='Export a subnet')
    parser.add_argument('config', help='supernet or search config')
    parser.add_argument('checkpoint', help='supernet checkpoint')
    parser.add_argument('subnet', help='subnet file (json or yaml)')
    parser.add_argument(
        '--out-dir',
        help='output folder (default: <work_dir>/export_<subnet name>)')
    parser.add_argument(
        '--onnx', action='store_true', help='also write subnet.onnx')
    parser.add_argument(
        '--calibrate',
        type=int,
        metavar='N',
        help='recalibrate the batch norm statistics of the subnet on N '
        'images of train_dataloader (default: the config\'s '
        'val_cfg.calibrate_sample_num, or train_cfg.calibrate_sample_num of '
        'a search config); 0: keep the supernet\'s statistics')
    parser.add_argument(
        '--input-shape',
        type=int,
        nargs=4,
        help='N C H W of the FLOPs count and the ONNX input (default: the '
        'mutator\'s demo input)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config (key=value)')
    return parser.parse_args()


def _loop_default(loop_type):
    """The ``calibrate_sample_num`` default of a loop type, or None."""
    from mmrazor.registry import LOOPS
    cls = LOOPS.get(loop_type) if isinstance(loop_type, str) else loop_type
    if not inspect.isclass(cls):
        return None
    parameter = inspect.signature(cls).parameters.get('calibrate_sample_num')
    return None if parameter is None else parameter.default


def calibration_size(cfg, config_path: str) -> tuple:
    """(N, the config key): the number of training images the config
    recalibrates its subnets' BN statistics on (``val_cfg`` of a training
    config, ``train_cfg`` of a search config)."""
    from psenet_plugin.errors import ConfigError
    hint = ('pass --calibrate N (training images) to recalibrate the BN '
            'statistics, or --calibrate 0 to keep the supernet\'s')
    for key in ('val_cfg', 'train_cfg'):
        loop = cfg.get(key) or {}
        if 'calibrate_sample_num' in loop:
            value = loop['calibrate_sample_num']
        else:
            value = _loop_default(loop.get('type'))
            if value is None:
                continue
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f'{config_path}: {key}.calibrate_sample_num='
                              f'{value!r} (no BN calibration); {hint}')
        return value, f'{key}.calibrate_sample_num'
    raise ConfigError(f'{config_path}: no BN calibration size in the config '
                      '(val_cfg.calibrate_sample_num, or '
                      f'train_cfg.calibrate_sample_num of a search); {hint}')


def load_supernet(model, checkpoint: str, config_path: str) -> None:
    """Load the supernet checkpoint into ``model`` strictly, refusing one
    that is unreadable (truncated, not a torch file) or of another model (a
    plain mmpretrain classifier, a supernet of another width) with one
    error naming it."""
    from mmengine.runner.checkpoint import load_state_dict

    from psenet_plugin.errors import ConfigError
    state = cli.read_checkpoint(checkpoint)
    cli.check_checkpoint_fits(model, checkpoint, config_path, state)
    extra = sorted(set(state) - set(model.state_dict()))
    if extra:
        raise ConfigError(
            f'checkpoint {checkpoint!r} does not fit the model of '
            f'{config_path}: it holds {len(extra)} weights the model does '
            f'not have, e.g. {extra[0]!r}; accepted: a checkpoint trained '
            'from this config (tools/train.py)')
    load_state_dict(model, state, strict=True)


def check_onnx() -> None:
    """--onnx needs the ``onnx`` package (torch's exporter and the summary's
    parameter count use it)."""
    from psenet_plugin.errors import ConfigError
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigError('--onnx needs the `onnx` package, which is not '
                          'installed: pip install onnx (or run without '
                          '--onnx)') from None


def main():
    from mmengine.logging import MMLogger
    from mmrazor.registry import MODELS

    from psenet_plugin.datasets import check_datasets_prepared
    from psenet_plugin.errors import ConfigError
    from psenet_plugin.models import PSENet
    from psenet_plugin.models.channel_widths import (channel_supernet,
                                                     demo_input_shape)
    from psenet_plugin.structures.export import (EXPORT_FILES,
                                                 CalibrationLoader,
                                                 calibrate_bn, export_subnet)
    from psenet_plugin.structures.io import (check_output_folder,
                                             check_torch_file)
    from psenet_plugin.structures.subnet import (load_subnet,
                                                 read_subnet_file)

    args = parse_args()
    if args.calibrate is not None and args.calibrate < 0:
        raise ConfigError(f'--calibrate {args.calibrate}; accepted: a number '
                          'of training images >= 1, or 0 (keep the '
                          'supernet\'s BN statistics)')
    if args.input_shape and min(args.input_shape) < 1:
        shape = ' '.join(map(str, args.input_shape))
        raise ConfigError(f'--input-shape {shape}; accepted: N C H W, each '
                          '>= 1')
    if args.onnx:
        check_onnx()
    # The files first (cheap, and the subnet file read safely), then the
    # output folder, then the model.
    cli.check_checkpoint(args.checkpoint)
    check_torch_file(args.checkpoint, 'supernet checkpoint')
    read_subnet_file(args.subnet)
    cfg = cli.load_config(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cli.set_work_dir(cfg, args.config, None)
    name = osp.splitext(osp.basename(args.subnet))[0]
    out_dir = args.out_dir or osp.join(cfg.work_dir, f'export_{name}')
    check_output_folder(out_dir, EXPORT_FILES)
    logger = MMLogger.get_instance('export', log_level='INFO')
    if args.calibrate is None:
        num_calibration, source = calibration_size(cfg, args.config)
        logger.info(f'BN calibration on {num_calibration} training images '
                    f'({source} of {args.config}; --calibrate N to change)')
    else:
        num_calibration, source = args.calibrate, '--calibrate'
    if num_calibration and not cfg.get('train_dataloader'):
        raise ConfigError(
            f'{args.config}: `train_dataloader` is not set; BN calibration '
            f'({source}={num_calibration}) reads training images from it; '
            'set it, or pass --calibrate 0 to keep the supernet\'s BN '
            'statistics')
    model_type = cfg.model.get('type')
    model_cls = MODELS.get(model_type) if isinstance(model_type,
                                                     str) else model_type
    is_pse = inspect.isclass(model_cls) and issubclass(model_cls, PSENet)
    if args.input_shape and is_pse:  # its FLOPs table is built at it
        cfg.model.input_shape = tuple(args.input_shape)
    # PSENet, or another one-shot channel supernet (mmrazor's AutoSlim)
    model = channel_supernet(MODELS.build(cfg.model),
                             f'{args.config}: model.type={model_type!r}')
    load_supernet(model, args.checkpoint, args.config)
    model.eval()
    widths = load_subnet(args.subnet, model.mutator)
    if num_calibration:
        check_datasets_prepared(
            dict(train_dataloader=cfg.train_dataloader), 'train')
        loader = CalibrationLoader(
            cfg.train_dataloader, default_scope=cfg.get('default_scope'))
        if len(loader.dataloader.dataset) == 0:
            raise ConfigError(f'{args.config}: train_dataloader.dataset '
                              'holds no images; BN calibration reads '
                              'training images from it (or pass '
                              '--calibrate 0)')
        num_calibration = calibrate_bn(model, widths, loader,
                                       num_calibration, logger)
    else:
        logger.warning(
            '--calibrate 0: the exported BN running statistics are the '
            'supernet\'s (averages over subnets of other widths), not '
            'this subnet\'s: expect a much lower accuracy than the search '
            'reported')
    summary = export_subnet(
        model,
        widths,
        out_dir,
        tuple(args.input_shape or getattr(model, 'flops_input_shape', None)
              or demo_input_shape(model.mutator)),
        onnx=args.onnx,
        bn_calibration_images=num_calibration,
        meta=dict(
            config=args.config,
            supernet=args.checkpoint,
            subnet_file=args.subnet))

    print(f'{"layer":<42} {"type":<22} {"in":>5} {"out":>5}')
    for row in summary['layers']:
        print(f'{row["name"]:<42} {row["type"]:<22} '
              f'{row["in_channels"]:>5} {row["out_channels"]:>5}')
    print(f'\nsubnet:   {summary["flops"] / 1e6:.3f} MFLOPs, '
          f'{summary["params"] / 1e6:.4f} M params '
          f'(supernet {summary["supernet_flops"] / 1e6:.3f} MFLOPs, '
          f'{summary["supernet_params"] / 1e6:.4f} M) at input '
          f'{tuple(summary["input_shape"])}')
    print('BN stats: ' + (
        f'recalibrated on {num_calibration} images of train_dataloader'
        if num_calibration else 'the supernet\'s (--calibrate 0)'))
    for key, path in summary['files'].items():
        print(f'{key + ":":<11} {path}')


if __name__ == '__main__':
    cli.run(main)
