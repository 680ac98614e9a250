"""Check, before a runner is built, that the datasets a config uses exist.

Without this, a missing folder surfaces as a traceback from deep inside
mmengine's dataset building. Here it is one error naming the config key, the
missing path and the command that prepares it.
"""
import os.path as osp
from typing import Iterator, Tuple

from ..errors import DataNotPreparedError
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
