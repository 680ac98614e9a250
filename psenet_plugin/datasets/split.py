"""A held-out slice of a training set, for scoring search candidates.

The search must not select on the data it reports: candidates are scored on
images held out of the training set (and out of supernet training), and the
chosen subnet is reported on the validation set, which the search never
sees. ``HeldOutSplit`` splits any dataset config into two disjoint parts by
a seeded permutation, so that the training config and the search config
name the same split::

    train_dataloader = dict(dataset=dict(
        type='HeldOutSplit', part='train', heldout=500, dataset=...))
    heldout_dataloader = dict(dataset=dict(
        type='HeldOutSplit', part='heldout', heldout=500, dataset=...))
"""
from typing import Union

import numpy as np
from mmengine.registry import DATASETS

from ..errors import ConfigError

PARTS = ('train', 'heldout')


@DATASETS.register_module()
def HeldOutSplit(dataset: Union[dict, object],
                 part: str = 'train',
                 heldout: Union[int, float] = 0.1,
                 seed: int = 0,
                 **dataset_options):
    """One part of a dataset split into a training and a held-out part.

    Args:
        dataset (dict | BaseDataset): the dataset to split (an mmengine
            ``BaseDataset``, e.g. mmpretrain's ``CustomDataset`` or
            ``ImageNet``), or its config.
        part (str): ``'train'`` (what is not held out) or ``'heldout'``.
            Defaults to ``'train'``.
        heldout (int | float): the held-out part's size: a number of samples,
            or a fraction of the dataset in (0, 1). Defaults to 0.1.
        seed (int): seed of the permutation that picks the held-out
            samples. Defaults to 0.
        **dataset_options: other keys go into the wrapped dataset's config,
            so the usual overrides keep working on a split dataset
            (``--cfg-options train_dataloader.dataset.data_root=...``,
            ``...dataset.indices=256``: the split then applies to those).

    Returns:
        BaseDataset: the part, as ``dataset.get_subset`` (same class, same
        metainfo), samples in their original order.
    """
    if part not in PARTS:
        raise ConfigError(f'HeldOutSplit part={part!r}; accepted: '
                          f'{", ".join(map(repr, PARTS))}')
    if isinstance(dataset, dict):
        dataset = DATASETS.build(dict(dataset, **dataset_options))
    elif dataset_options:
        raise ConfigError(
            f'HeldOutSplit: unknown key(s) {sorted(dataset_options)}; '
            'accepted: dataset, part, heldout, seed (and, when dataset is a '
            'config, keys of that dataset)')
    if not hasattr(dataset, 'get_subset'):
        raise ConfigError(
            f'HeldOutSplit dataset: {type(dataset).__name__} has no '
            'get_subset; accepted: an mmengine BaseDataset (or its config)')
    dataset.full_init()
    total = len(dataset)
    if isinstance(heldout, float) and 0 < heldout < 1:
        size = int(round(heldout * total))
    elif isinstance(heldout, int) and not isinstance(heldout, bool):
        size = heldout
    else:
        raise ConfigError(f'HeldOutSplit heldout={heldout!r}; accepted: a '
                          'number of samples or a fraction in (0, 1)')
    if not 0 < size < total:
        raise ConfigError(
            f'HeldOutSplit heldout={heldout!r} holds out {size} of the '
            f'{total} samples; accepted: at least 1 and fewer than {total}')
    order = np.random.default_rng(seed).permutation(total)
    chosen = order[:size] if part == 'heldout' else order[size:]
    return dataset.get_subset(sorted(int(i) for i in chosen))
