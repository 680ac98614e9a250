"""Check, before a runner is built, that the datasets a config uses exist
and fit the model.

Without this, a missing folder surfaces as a traceback from deep inside
mmengine's dataset building, a missing image or a label outside the model's
classes only when a batch reaches it (an epoch later, or as a device-side
assertion on a GPU). Here each is one error naming the config key, the file
or line at fault and what is accepted.
"""
import os
import os.path as osp
from typing import Dict, Iterator, Optional, Set, Tuple

from ..errors import DataError, DataNotPreparedError
from .embedded import DEFAULT_ROOTS

# Config keys that may hold a dataloader (or a loop holding one), by what
# a run does: training validates, testing tests, searching calibrates on the
# training data and evaluates with its loop's dataloader.
KEYS_USED_BY = dict(
    train=('train_dataloader', 'val_dataloader', 'train_cfg', 'val_cfg'),
    test=('test_dataloader', 'test_cfg'),
    search=('train_dataloader', 'train_cfg'))


SPLIT_KEYS = ('type', 'part', 'heldout', 'seed', 'dataset')


def _datasets(node, key: str) -> Iterator[Tuple[str, dict]]:
    """Yield (config key path, dataset dict) for every dict below ``node``
    that names a ``data_root`` or an ``ann_file``."""
    if isinstance(node, dict) and node.get('type') == 'HeldOutSplit' and \
            isinstance(node.get('dataset'), dict):
        # Its other keys go into the wrapped dataset (see HeldOutSplit).
        options = {k: v for k, v in node.items() if k not in SPLIT_KEYS}
        yield from _datasets(dict(node['dataset'], **options), key)
        return
    if isinstance(node, dict):
        if 'data_root' in node or 'ann_file' in node:
            yield key, node
        for child_key, child in node.items():
            if child_key != 'pipeline':
                yield from _datasets(child, f'{key}.{child_key}')
    elif isinstance(node, (list, tuple)):
        for i, child in enumerate(node):
            yield from _datasets(child, f'{key}[{i}]')


def _prepare_hint(data_root: str) -> str:
    name = osp.basename(osp.normpath(data_root))
    if name in DEFAULT_ROOTS:
        root = '' if osp.normpath(data_root) == osp.normpath(
            DEFAULT_ROOTS[name]) else f' --root {data_root}'
        return (f'It is the embedded dataset {name!r}: prepare it with '
                f'`python tools/prepare_data.py {name}{root}`.')
    return ('Prepare the dataset there (see README.md, "Data"), or point the '
            'key at it with --cfg-options.')


def check_datasets_prepared(cfg, run: str = 'train') -> None:
    """Raise :class:`DataNotPreparedError` if a dataset folder or annotation
    file that ``run`` will read is missing.

    Args:
        cfg (mmengine.Config | dict): the full config.
        run (str): ``'train'``, ``'test'`` or ``'search'``: which of the
            config's dataloaders are checked. Defaults to ``'train'``.
    """
    for top in KEYS_USED_BY[run]:
        node = cfg.get(top)
        if not node:
            continue
        for key, dataset in _datasets(node, top):
            data_root = dataset.get('data_root') or ''
            if data_root and not osp.isdir(data_root):
                raise DataNotPreparedError(
                    f'{key}.data_root={data_root!r} does not exist. ' +
                    _prepare_hint(data_root))
            ann_file = dataset.get('ann_file') or ''
            if ann_file:
                path = osp.join(data_root, ann_file)
                if not osp.isfile(path):
                    raise DataNotPreparedError(
                        f'{key}.ann_file={ann_file!r}: {path!r} does not '
                        'exist. ' + _prepare_hint(data_root or
                                                  osp.dirname(path)))


# Dataset types whose annotation file is mmpretrain's "<image> <label>"
# lines (``CustomDataset`` and its subclasses of the same format).
LISTED_TYPES = ('CustomDataset', 'ImageNet')


def _num_classes(cfg) -> Tuple[Optional[int], str]:
    """The classifier head's ``num_classes`` and its config key."""

    def find(node, key):
        if isinstance(node, dict):
            head = node.get('head')
            if isinstance(head, dict) and isinstance(
                    head.get('num_classes'), int):
                return head['num_classes'], f'{key}.head.num_classes'
            for child_key, child in node.items():
                found = find(child, f'{key}.{child_key}')
                if found[0] is not None:
                    return found
        return None, ''

    return find(cfg.get('model'), 'model')


def _prefix(dataset: dict) -> str:
    data_root = dataset.get('data_root') or ''
    prefix = dataset.get('data_prefix') or ''
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path') or prefix.get('img') or ''
    prefix = osp.expanduser(str(prefix))
    return prefix if osp.isabs(prefix) else osp.join(data_root, prefix)


def _check_listed(key: str, dataset: dict, num_classes: Optional[int],
                  classes_key: str) -> None:
    """Every image of the annotation file exists; every label is an
    integer in [0, num_classes)."""
    ann_file = dataset['ann_file']
    path = osp.join(dataset.get('data_root') or '', ann_file)
    prefix = _prefix(dataset)
    with_label = dataset.get('with_label', True)
    listing: Dict[str, Set[str]] = {}
    missing, first = 0, None
    with open(path, encoding='utf-8', errors='replace') as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if with_label:
                parts = line.rsplit(' ', 1)
                if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                    raise DataError(
                        f'{key}.ann_file={ann_file!r}: line {number} of '
                        f'{path} is {line[:80]!r}; accepted: "<image path> '
                        '<integer label>" lines')
                name, label = parts[0], int(parts[1])
                if num_classes is not None and not 0 <= label < num_classes:
                    raise DataError(
                        f'{key}.ann_file={ann_file!r}: line {number} of '
                        f'{path} has label {label}, outside {classes_key}='
                        f'{num_classes}; accepted: labels 0 .. '
                        f'{num_classes - 1} (or set {classes_key} to the '
                        'number of classes of the data)')
            else:
                name = line
            image = osp.join(prefix, name)
            folder, base = osp.split(image)
            if folder not in listing:
                try:
                    listing[folder] = set(os.listdir(folder or '.'))
                except OSError:
                    listing[folder] = set()
            if base not in listing[folder]:
                missing += 1
                first = first or (number, name, image)
    if missing:
        number, name, image = first
        raise DataError(
            f'{key}.ann_file={ann_file!r}: line {number} of {path} names '
            f'{name!r}, but {image!r} does not exist ({missing} listed '
            'image(s) missing); accepted: every listed image under '
            f'{key}.data_prefix ({prefix!r}); prepare the dataset again or '
            'remove the lines')


def _check_folders(key: str, dataset: dict, num_classes: Optional[int],
                   classes_key: str) -> None:
    """A dataset read from class folders has at most num_classes of them."""
    if num_classes is None:
        return
    classes = (dataset.get('metainfo') or {}).get('classes')
    if classes is None:
        prefix = _prefix(dataset)
        if not osp.isdir(prefix):
            return
        classes = [d for d in os.listdir(prefix)
                   if osp.isdir(osp.join(prefix, d))]
    if len(classes) > num_classes:
        raise DataError(
            f'{key}: the dataset has {len(classes)} classes, more than '
            f'{classes_key}={num_classes}; accepted: at most {num_classes} '
            f'classes (or set {classes_key} to {len(classes)})')


def check_dataset_files(cfg, run: str = 'train') -> None:
    """Raise :class:`DataError` if an image an annotation file lists is
    missing, or a label is outside the model head's ``num_classes``.

    Checked for mmpretrain's ``CustomDataset`` and ``ImageNet`` (one
    ``os.listdir`` per image folder and one read of the annotation file:
    about a second for ImageNet's 1.28 M images); other dataset types are
    left to their own loading. Call it after
    :func:`check_datasets_prepared`.

    Args:
        cfg (mmengine.Config | dict): the full config.
        run (str): ``'train'``, ``'test'`` or ``'search'``. Defaults to
            ``'train'``.
    """
    num_classes, classes_key = _num_classes(cfg)
    seen = set()
    for top in KEYS_USED_BY[run]:
        node = cfg.get(top)
        if not node:
            continue
        for key, dataset in _datasets(node, top):
            kind = str(dataset.get('type', '')).split('.')[-1]
            if kind not in LISTED_TYPES:
                continue
            ident = (dataset.get('data_root'), dataset.get('ann_file'),
                     _prefix(dataset))
            if ident in seen:
                continue
            seen.add(ident)
            if dataset.get('ann_file'):
                _check_listed(key, dataset, num_classes, classes_key)
            else:
                _check_folders(key, dataset, num_classes, classes_key)
