"""Write an embedded dataset as an mmpretrain CustomDataset folder.

Example::

    python tools/prepare_data.py mnist5k            # -> data/mnist5k
    python tools/prepare_data.py mnist5k --root /tmp/mnist5k

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('name', choices=sorted(EMBEDDED_DATASETS),
                        help='which embedded dataset')
    parser.add_argument('--root', help='output folder (default: data/<name>)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='rewrite even if the folder is already prepared (only a folder '
        'written by this tool is ever replaced)')
    return parser.parse_args()


def main():
    from psenet_plugin.datasets import prepare_dataset
    from psenet_plugin.datasets.embedded import (check_replaceable, damage,
                                                 is_ours, is_prepared)

    args = parse_args()
    root = args.root or f'data/{args.name}'
    if is_prepared(root) and not args.force:
        print(f'{args.name}: already prepared in {root}')
        return
    check_replaceable(root)
    if is_ours(root) and not args.force:
        print(f'{args.name}: {root} is damaged ({damage(root)}); preparing '
              'it again')
    start = time.time()
    prepare_dataset(args.name, root, force=args.force)
    print(f'{args.name}: written to {root} in {time.time() - start:.1f}s')


if __name__ == '__main__':
    cli.run(main)
