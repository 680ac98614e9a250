"""Write an embedded dataset: mnist5k (an mmpretrain CustomDataset folder),
digits_det (COCO-format detection) or digits_seg (mmseg segmentation).

Example::

    python tools/prepare_data.py mnist5k            # -> data/mnist5k
    python tools/prepare_data.py mnist5k --root /tmp/mnist5k
    python tools/prepare_data.py digits_det         # -> data/digits_det
    python tools/prepare_data.py digits_seg         # -> data/digits_seg

A folder already prepared (every listed image present) is left alone; a
damaged one (written here, an image missing) is prepared again. A non-empty
folder this tool did not write is refused, untouched.
"""
import argparse
import sys
import time

try:
    import psenet_plugin  # noqa: F401  compat fixes
    from psenet_plugin import cli
except ImportError as e:  # unsupported or missing dependencies
    sys.exit(f'error: {e}')


def parse_args():
    from psenet_plugin.datasets import EMBEDDED_DATASETS
    from psenet_plugin.datasets.digits_tasks import TASK_DATASETS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('name',
                        choices=sorted(EMBEDDED_DATASETS) +
                        sorted(TASK_DATASETS),
                        help='which embedded dataset')
    parser.add_argument('--root', help='output folder (default: data/<name>)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='rewrite even if the folder is already prepared (only a folder '
        'written by this tool is ever replaced)')
    return parser.parse_args()


def dataset_checks(name):
    """(is_prepared, check_replaceable, is_ours, damage, prepare) of the
    embedded dataset ``name``, each taking a root (prepare: root, force)."""
    from psenet_plugin.datasets import digits_tasks, embedded
    if name in digits_tasks.TASK_DATASETS:
        d = digits_tasks
        return (lambda r: d.is_prepared(r, name),
                lambda r: d.check_replaceable(r, name),
                lambda r: d.is_ours(r, name), lambda r: d.damage(r, name),
                lambda r, force: d.TASK_DATASETS[name](r, force=force))
    return (embedded.is_prepared, embedded.check_replaceable,
            embedded.is_ours, embedded.damage,
            lambda r, force: embedded.prepare_dataset(name, r, force=force))


def main():
    args = parse_args()
    root = args.root or f'data/{args.name}'
    is_prepared, check_replaceable, is_ours, damage, prepare = \
        dataset_checks(args.name)
    if is_prepared(root) and not args.force:
        print(f'{args.name}: already prepared in {root}')
        return
    check_replaceable(root)
    if is_ours(root) and not args.force:
        print(f'{args.name}: {root} is damaged ({damage(root)}); preparing '
              'it again')
    start = time.time()
    prepare(root, force=args.force)
    print(f'{args.name}: written to {root} in {time.time() - start:.1f}s')


if __name__ == '__main__':
    cli.run(main)
