"""Summarise a subnet of a PSE-Net supernet: FLOPs, params and widths.

    python tools/subnet_summary.py CONFIG SUBNET [--out-dir DIR]
        [--input-shape 1 3 224 224] [--flops-convention all|conv_linear]
        [--cfg-options k=v ...]

CONFIG: the supernet (or search) config; SUBNET: best_subnet.json /
subnet.json (this plugin) or best_fix_subnet.yaml / fix_subnet.yaml
(mmrazor's mutator mode). No checkpoint is needed: FLOPs, params and
widths depend on the architecture only.

Prints two tables: per unit, the min, chosen and max channels; per layer
(a convolution or linear layer with the batch norm that follows it, and
poolings), its input and output channels, FLOPs and params, counted by the
plugin's exact FLOPs table (``FlopsTable``: the rows sum to its totals,
which equal mmengine's count on the sliced model). Writes ``widths.png``
(the subnet's channels per unit against the supernet's and the min
subnet's) and ``summary.json`` (both tables) to ``--out-dir`` (default:
``<work_dir>/summary_<subnet file name>``, the work dir as in
``tools/export.py``).
"""
import argparse
import sys

try:
    import psenet_plugin  # noqa: F401  compat fixes, plugin registration
    from psenet_plugin import cli
except ImportError as e:  # unsupported or missing dependencies
    sys.exit(f'error: {e}')


def parse_args():
    parser = argparse.ArgumentParser(
        description='FLOPs, params and widths of a subnet')
    parser.add_argument('config', help='supernet or search config')
    parser.add_argument('subnet', help='subnet file (json or yaml)')
    parser.add_argument(
        '--out-dir',
        help='where widths.png and summary.json go (default: '
        '<work_dir>/summary_<subnet file name>, as tools/export.py)')
    parser.add_argument(
        '--input-shape',
        type=int,
        nargs=4,
        help='N C H W of the FLOPs count (default: the config\'s '
        'model.input_shape, else the mutator\'s demo input)')
    parser.add_argument(
        '--flops-convention',
        help='which layers the FLOPs count: all (mmengine\'s count, the '
        'default) or conv_linear (multiply-adds of convolutions and linear '
        'layers, the papers\' convention)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=cli.CfgOptionsAction,
        help='override settings of the config (key=value)')
    return parser.parse_args()


def _channels(terms, widths):
    return sum(widths[unit] if unit is not None else size
               for unit, size in terms)


def layer_rows(table, widths):
    """Per layer of ``table`` (a :class:`FlopsTable`), the subnet's channels,
    FLOPs and params; a batch norm joins the row of the convolution or
    linear layer before it. The rows sum to ``table.flops(widths)`` and
    ``table.params(widths)``.

    Returns:
        list[dict]: ``name``, ``type``, ``in``, ``out``, ``flops``,
        ``params`` each.
    """
    from psenet_plugin.structures.flops import MAC_OPS
    rows = []
    for layer in table.layers:
        c_in = _channels(layer['in'], widths)
        # A pooling's output channels are its input's (no terms recorded).
        c_out = _channels(layer['out'], widths) if layer['out'] else c_in
        counted = table.convention == 'all' or layer['op'] in MAC_OPS
        flops = (layer['fa'] * c_in * c_out + layer['fb'] * c_out +
                 layer['fd'] * c_in) if counted else 0.0
        params = (layer['pa'] * c_in * c_out + layer['pb'] * c_out +
                  layer['pd'] * c_in)
        if layer['op'] == 'batch_norm' and rows and \
                rows[-1]['op'] in MAC_OPS and rows[-1]['out'] == c_in:
            row = rows[-1]
            row['type'] += '+BN'
            row['flops'] += flops
            row['params'] += params
            continue
        rows.append(
            dict(
                name=layer['name'],
                type=layer['kind'],
                op=layer['op'],
                **{'in': int(c_in)},
                out=int(c_out),
                flops=float(flops),
                params=float(params)))
    return rows


def main():
    import os.path as osp

    from mmengine.logging import MMLogger
    from mmrazor.registry import MODELS

    from psenet_plugin.errors import ConfigError
    from psenet_plugin.models import PSENet
    from psenet_plugin.structures.flops import FLOPS_CONVENTIONS
    from psenet_plugin.structures.io import atomic_write_json
    from psenet_plugin.structures.subnet import (load_subnet,
                                                 read_subnet_file)
    from psenet_plugin.visualization import require_matplotlib, widths_plot

    args = parse_args()
    if args.input_shape and min(args.input_shape) < 1:
        shape = ' '.join(map(str, args.input_shape))
        raise ConfigError(f'--input-shape {shape}; accepted: N C H W, each '
                          '>= 1')
    if args.flops_convention is not None and \
            args.flops_convention not in FLOPS_CONVENTIONS:
        raise ConfigError(f'--flops-convention {args.flops_convention}; '
                          f'accepted: {", ".join(FLOPS_CONVENTIONS)}')
    # The cheap checks first: the subnet file (read safely), matplotlib.
    read_subnet_file(args.subnet)
    require_matplotlib()
    cfg = cli.load_config(args.config)
    cli.merge_cfg_options(cfg, args.cfg_options)
    cli.set_work_dir(cfg, args.config, None)
    stem = osp.splitext(osp.basename(args.subnet))[0]
    out_dir = args.out_dir or osp.join(cfg.work_dir, f'summary_{stem}')
    model_type = cfg.model.get('type')
    model_cls = MODELS.get(model_type) if isinstance(model_type,
                                                     str) else model_type
    if not (isinstance(model_cls, type) and issubclass(model_cls, PSENet)):
        raise ConfigError(f'{args.config}: model.type={model_type!r} is not '
                          'a PSENet supernet')
    if args.input_shape:
        cfg.model.input_shape = tuple(args.input_shape)
    # mmrazor's tracer reports every node it maps at INFO: keep the
    # summary readable.
    MMLogger.get_instance('subnet_summary', log_level='WARNING')
    model = MODELS.build(cfg.model)
    mutator = model.mutator
    widths = load_subnet(args.subnet, mutator)
    convention = args.flops_convention or (cfg.get('train_cfg') or {}).get(
        'flops_convention', 'all')
    table = model.flops_table.with_convention(convention)
    names = table.unit_names
    candidates = mutator.candidate_widths(names)
    max_widths = {n: c[-1] for n, c in zip(names, candidates)}
    min_widths = {n: c[0] for n, c in zip(names, candidates)}

    units = [
        dict(
            name=n,
            min=min_widths[n],
            width=int(widths[n]),
            max=max_widths[n]) for n in names
    ]
    rows = layer_rows(table, widths)
    totals = {
        kind: dict(flops=table.flops(w), params=table.params(w))
        for kind, w in (('subnet', widths), ('max', max_widths),
                        ('min', min_widths))
    }

    print(f'{"unit":<46} {"min":>5} {"width":>5} {"max":>5} {"% max":>6}')
    for u in units:
        print(f'{u["name"]:<46} {u["min"]:>5} {u["width"]:>5} '
              f'{u["max"]:>5} {100 * u["width"] / u["max"]:>6.1f}')
    print(f'\n{"layer":<40} {"type":<18} {"in":>5} {"out":>5} '
          f'{"MFLOPs":>9} {"params":>9}')
    for r in rows:
        print(f'{r["name"]:<40} {r["type"]:<18} {r["in"]:>5} {r["out"]:>5} '
              f'{r["flops"] / 1e6:>9.4f} {r["params"]:>9.0f}')
    subnet, top, low = (totals[k] for k in ('subnet', 'max', 'min'))
    print(f'{"total":<40} {"":<18} {"":>5} {"":>5} '
          f'{subnet["flops"] / 1e6:>9.4f} {subnet["params"]:>9.0f}')
    shape = tuple(model.flops_input_shape)
    print(f'\nsubnet:   {subnet["flops"] / 1e6:.4f} MFLOPs '
          f'({100 * subnet["flops"] / top["flops"]:.1f}% of max), '
          f'{subnet["params"] / 1e6:.4f} M params '
          f'({100 * subnet["params"] / top["params"]:.1f}% of max) at input '
          f'{shape}, FLOPs convention {convention!r}')
    print(f'max:      {top["flops"] / 1e6:.4f} MFLOPs, '
          f'{top["params"] / 1e6:.4f} M params')
    print(f'min:      {low["flops"] / 1e6:.4f} MFLOPs, '
          f'{low["params"] / 1e6:.4f} M params')

    name = osp.basename(args.subnet)
    plot = widths_plot(
        osp.join(out_dir, 'widths.png'), names,
        [widths[n] for n in names], [max_widths[n] for n in names],
        [min_widths[n] for n in names],
        title=f'{name}: {subnet["flops"] / 1e6:.2f} MFLOPs '
        f'({100 * subnet["flops"] / top["flops"]:.0f}% of max), '
        f'{subnet["params"] / 1e6:.3f} M params',
        label=name)
    summary = osp.join(out_dir, 'summary.json')
    atomic_write_json(
        summary,
        dict(
            config=args.config,
            subnet_file=args.subnet,
            input_shape=list(shape),
            flops_convention=convention,
            units=units,
            layers=rows,
            totals=totals))
    print(f'widths:   {plot}\nsummary:  {summary}')


if __name__ == '__main__':
    cli.run(main)
