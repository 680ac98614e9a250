"""Export a subnet of a PSE-Net supernet as a physically smaller model.

    python tools/export.py CONFIG CHECKPOINT SUBNET [--out-dir DIR] [--onnx]
        [--input-shape 1 3 224 224] [--cfg-options k=v ...]

CONFIG: the supernet (or search) config; CHECKPOINT: the supernet; SUBNET:
best_subnet.json / best_fix_subnet.yaml from tools/search.py (or any
subnet.json / mmrazor mutator-mode subnet file). Writes subnet_static.pth
(sliced weights), subnet.json, fix_subnet.yaml (for mmrazor's sub_model and
configs/pse_mbv2_subnet.py), subnet.onnx with --onnx, and summary.json.
"""
import argparse
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


def main():
    from mmengine.runner import load_checkpoint
    from mmrazor.registry import MODELS

    from psenet_plugin.errors import ConfigError
    from psenet_plugin.structures.export import export_subnet
    from psenet_plugin.structures.subnet import load_subnet

    args = parse_args()
    cli.check_checkpoint(args.checkpoint)
    cfg = cli.load_config(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cli.set_work_dir(cfg, args.config, None)
    model = MODELS.build(cfg.model)
    if not hasattr(model, 'flops_table'):
        raise ConfigError(f'{args.config}: model.type='
                          f'{cfg.model.get("type")!r} is not a PSENet '
                          'supernet')
    if args.input_shape:
        model.input_shape = tuple(args.input_shape)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model.eval()
    widths = load_subnet(args.subnet, model.mutator)
    name = osp.splitext(osp.basename(args.subnet))[0]
    out_dir = args.out_dir or osp.join(cfg.work_dir, f'export_{name}')
    summary = export_subnet(
        model,
        widths,
        out_dir,
        model.flops_input_shape,
        onnx=args.onnx,
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
    for key, path in summary['files'].items():
        print(f'{key + ":":<11} {path}')


if __name__ == '__main__':
    cli.run(main)
