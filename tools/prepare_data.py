"""Write an embedded dataset as an mmpretrain CustomDataset folder.

Example::

    python tools/prepare_data.py mnist5k            # -> data/mnist5k
    python tools/prepare_data.py mnist5k --root /tmp/mnist5k
"""
import argparse
import sys
import time

from psenet_plugin.datasets import EMBEDDED_DATASETS, prepare_dataset
from psenet_plugin.datasets.embedded import is_prepared


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('name', choices=sorted(EMBEDDED_DATASETS),
                        help='which embedded dataset')
    parser.add_argument('--root', help='output folder (default: data/<name>)')
    parser.add_argument('--force', action='store_true',
                        help='rewrite even if the folder is already prepared')
    return parser.parse_args()


def main():
    args = parse_args()
    root = args.root or f'data/{args.name}'
    if is_prepared(root) and not args.force:
        print(f'{args.name}: already prepared in {root}')
        return
    start = time.time()
    prepare_dataset(args.name, root, force=args.force)
    print(f'{args.name}: written to {root} in {time.time() - start:.1f}s')


if __name__ == '__main__':
    sys.exit(main())
