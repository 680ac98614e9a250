"""A harder task built from the embedded digits, for the ranking benchmark.

On the clean digits a 3-epoch standalone training ranks the subnets at
25-45% of the max FLOPs no better than its own second seed does (Kendall
tau 0.45; 0.28 after 8 epochs): every subnet is near the max's accuracy.
Here each ``data/mnist5k`` image gets a 14x14 fragment of another image of
its split pasted at a random place (at 0.8 of its brightness, kept where
brighter) and Gaussian noise of ``SIGMA`` grey levels, clipped to 0-255::

    python benchmarks/noisy_digits.py [--root data/mnist5k_noisy]

The folder has mnist5k's layout (``train/``, ``val/``, ``meta/``), so the
mnist5k configs read it with the data root changed. Drawn from a fixed
seed: the same files on every machine; a prepared folder is left alone, a
new one is written beside the target and renamed into place, and a folder
with another manifest is refused, untouched.
"""
import argparse
import json
import os
import os.path as osp
import sys

import numpy as np

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
SIGMA = 60.0
FRAGMENTS = 1
FRAGMENT = 14
FRAGMENT_GAIN = 0.8
SEED = 7
DEFAULT_ROOT = 'data/mnist5k_noisy'


def manifest():
    return dict(name='mnist5k_noisy', source='mnist5k', sigma=SIGMA,
                fragments=FRAGMENTS, fragment=FRAGMENT,
                fragment_gain=FRAGMENT_GAIN, seed=SEED)


def degrade(images, rng):
    """``images`` (uint8 [N, H, W]) with fragments of one another pasted
    and noise added (uint8 [N, H, W])."""
    n, height, width = images.shape
    out = images.astype(np.float32)
    for i in range(n):
        for _ in range(FRAGMENTS):
            other = images[int(rng.integers(n))].astype(np.float32)
            y, x = rng.integers(0, height - FRAGMENT + 1, 2)
            ty, tx = rng.integers(0, height - FRAGMENT + 1, 2)
            region = out[i, ty:ty + FRAGMENT, tx:tx + FRAGMENT]
            np.maximum(region,
                       FRAGMENT_GAIN * other[y:y + FRAGMENT, x:x + FRAGMENT],
                       out=region)
    out += rng.normal(0, SIGMA, out.shape)
    return out.clip(0, 255).astype(np.uint8)


def prepare(root=DEFAULT_ROOT, source='data/mnist5k'):
    """Write the noisy digits to ``root`` from the prepared mnist5k at
    ``source`` (prepared first when missing). Returns ``root``."""
    import psenet_plugin  # noqa: F401
    from PIL import Image

    from psenet_plugin.datasets.embedded import (MANIFEST, read_manifest,
                                                 prepare_dataset,
                                                 write_dataset_folder)
    from psenet_plugin.errors import ConfigError
    if read_manifest(root) == manifest():
        return root

    def refuse_others():
        if osp.lexists(root) and (not osp.isdir(root) or os.listdir(root)):
            raise ConfigError(
                f'dataset folder {root!r} exists and is not the noisy '
                f'digits of this version ({MANIFEST} differs); it is left '
                'untouched: delete it or pass another --root')

    refuse_others()
    prepare_dataset('mnist5k', source)

    def write(staging):
        rng = np.random.default_rng(SEED)
        os.makedirs(osp.join(staging, 'meta'))
        for name in ('classes.txt', 'train.txt', 'val.txt'):
            with open(osp.join(source, 'meta', name)) as f, open(
                    osp.join(staging, 'meta', name), 'w') as out:
                out.write(f.read())
        for split in ('train', 'val'):
            with open(osp.join(source, 'meta', f'{split}.txt')) as f:
                files = [line.split()[0] for line in f if line.strip()]
            images = np.stack([
                np.asarray(
                    Image.open(osp.join(source, split, rel)).convert('L'))
                for rel in files
            ])
            for rel, image in zip(files, degrade(images, rng)):
                path = osp.join(staging, split, rel)
                os.makedirs(osp.dirname(path), exist_ok=True)
                Image.fromarray(image).save(path)
        with open(osp.join(staging, MANIFEST), 'w') as f:
            json.dump(manifest(), f, indent=1)

    return write_dataset_folder(root, 'mnist5k_noisy', write, refuse_others)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default=DEFAULT_ROOT)
    parser.add_argument('--source', default='data/mnist5k')
    args = parser.parse_args()
    os.chdir(ROOT)
    from psenet_plugin.errors import PSENetError
    try:
        print(prepare(args.root, args.source))
    except PSENetError as error:
        sys.exit(f'error: {error}')


if __name__ == '__main__':
    main()
