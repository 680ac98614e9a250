"""What one unit's width does to a subnet trained standalone: the same
subnet with that unit at its narrowest or its widest candidate, trained
from scratch with the benchmark's standalone recipe (or another), several
seeds and schedules.

Takes a subnet of an out dir of ``supernet_quality.py`` (``--subnet``, an
index into its ``eval_pse.json``: 0 max, 1 min, then the in-band ones) and
a unit (``--unit``, the start of its name), and trains both variants with
``--epochs`` epochs each, ``--seeds`` seeds, SGD at ``--lr`` with
``--warmup`` iterations of linear warm-up, cosine to 0 (the benchmark's
``standalone_body``). Prints the validation top-1 of every run and writes
``<work-dir>/result.json``; a finished run is reused.

    python benchmarks/unit_width_effect.py work_dirs/sqt_s0 --subnet 5 \
        --unit backbone.conv2 --epochs 3 12 [--lr 0.04 --warmup 0]
"""
import argparse
import os
import os.path as osp
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import supernet_quality as sq  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='an out dir of supernet_quality.py')
    parser.add_argument('--subnet', type=int, default=5)
    parser.add_argument('--unit', default='backbone.conv2')
    parser.add_argument('--epochs', type=int, nargs='+', default=[3, 12])
    parser.add_argument('--seeds', type=int, default=2)
    parser.add_argument('--lr', type=float, default=0.04)
    parser.add_argument('--warmup', type=int, default=0)
    parser.add_argument('--jobs', type=int, default=2)
    parser.add_argument('--work-dir',
                        default=osp.join(sq.ROOT, 'work_dirs',
                                         'unit_width_effect'))
    args = parser.parse_args()
    result, evaluated = sq.read_out_dir(args.out_dir)
    units = evaluated['units']
    matches = [i for i, name in enumerate(units)
               if name.startswith(args.unit)]
    if len(matches) != 1:
        sys.exit(f'error: --unit {args.unit}: matches {len(matches)} units '
                 'of eval_pse.json; accepted: the start of one unit\'s name')
    unit = matches[0]
    subnets = evaluated['subnets']
    if not 0 <= args.subnet < len(subnets):
        sys.exit(f'error: --subnet {args.subnet}; accepted: 0 to '
                 f'{len(subnets) - 1}')
    subnet = subnets[args.subnet]
    widths = [subnets[1]['widths'][unit], subnets[0]['widths'][unit]]
    data_text = sq.data_text(sq.TASKS[result['setting']['task']])
    os.makedirs(args.work_dir, exist_ok=True)
    runs = []
    for width in widths:
        variant = dict(subnet, widths=[
            width if u == unit else w for u, w in enumerate(subnet['widths'])
        ])
        fixed = sq.fix_subnet(variant, units, sq.PSE_CONFIG)
        for epochs in args.epochs:
            for seed in range(args.seeds):
                name = (f'{subnet["kind"]}_w{width}_e{epochs}_s{seed}_'
                        f'lr{args.lr:g}_wu{args.warmup}')
                runs.append((name, width, epochs, seed, fixed))

    def train(run):
        name, _, epochs, seed, fixed = run
        body = sq.standalone_body(name, epochs, seed, data_text, args.lr,
                                  args.warmup)
        return sq.train_fixed_subnet(
            osp.join(args.work_dir, name),
            osp.join(args.work_dir, f'{name}.py'), sq.SUBNET_CONFIG, body,
            fixed, name, threads=sq.threads_per_job(args.jobs))

    with ThreadPoolExecutor(args.jobs) as pool:
        accs = list(pool.map(train, runs))
    print(f'{subnet["kind"]} of {args.out_dir}, {units[unit]} at '
          f'{widths[0]} or {widths[1]}; lr {args.lr:g}, warm-up '
          f'{args.warmup} iterations; validation top-1 per seed:')
    runs_out = []
    for width in widths:
        for epochs in args.epochs:
            tops = [a for (_, w, e, _, _), a in zip(runs, accs)
                    if (w, e) == (width, epochs)]
            runs_out.append(dict(width=width, epochs=epochs, top1=tops))
            print(f'  width {width:>5}, {epochs:>3} epochs: '
                  + ' / '.join(f'{t:.1f}' for t in tops))
    from psenet_plugin.structures.io import atomic_write_json
    atomic_write_json(
        osp.join(args.work_dir, 'result.json'),
        dict(out_dir=args.out_dir, subnet=args.subnet, unit=units[unit],
             lr=args.lr, warmup=args.warmup, runs=runs_out))


if __name__ == '__main__':
    main()
