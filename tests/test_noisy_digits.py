"""The ranking benchmark's harder task (benchmarks/noisy_digits.py) and the
config lines that point every step of the benchmark at it."""
import os
import os.path as osp
import sys

import numpy as np
import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'benchmarks'))

import noisy_digits  # noqa: E402
import supernet_quality  # noqa: E402


def test_degrade_adds_noise_pastes_fragments_and_is_seeded():
    black = np.zeros((8, 28, 28), np.uint8)
    one = noisy_digits.degrade(black, np.random.default_rng(0))
    assert one.dtype == np.uint8 and one.shape == black.shape
    assert np.array_equal(one,
                          noisy_digits.degrade(black,
                                               np.random.default_rng(0)))
    # noise of SIGMA grey levels clipped at 0: SIGMA / sqrt(2 pi) on average
    expected = noisy_digits.SIGMA / np.sqrt(2 * np.pi)
    assert abs(one.mean() - expected) < 0.05 * expected
    # images white on their left half: fragments of them land on the
    # black right halves (noise alone seldom reaches 150 from 0: 0.6%)
    halves = np.zeros((20, 28, 28), np.uint8)
    halves[:, :, :14] = 255
    out = noisy_digits.degrade(halves, np.random.default_rng(0))
    bright = (out[:, :, 14:] > 150).mean(axis=(1, 2))
    assert (bright > 0.1).sum() >= 5
    assert (out[:, :, :14] > 150).mean() > 0.9


def test_prepare_writes_mnist5k_layout_once_and_refuses_other_folders(
        mnist5k_root, tmp_path):
    from psenet_plugin.errors import ConfigError
    root = str(tmp_path / 'noisy')
    assert noisy_digits.prepare(root, mnist5k_root) == root
    for split, count in (('train', 4000), ('val', 1000)):
        with open(osp.join(root, 'meta', f'{split}.txt')) as f:
            files = [line.split() for line in f if line.strip()]
        with open(osp.join(mnist5k_root, 'meta', f'{split}.txt')) as f:
            assert [line.split() for line in f if line.strip()] == files
        assert len(files) == count
        assert all(osp.isfile(osp.join(root, split, rel)) for rel, _ in files)
    from PIL import Image
    rel = files[0][0]
    clean = np.asarray(Image.open(osp.join(mnist5k_root, 'val', rel)))
    noisy = np.asarray(Image.open(osp.join(root, 'val', rel)))
    assert noisy.shape == clean.shape[:2]
    assert np.abs(noisy.astype(int) - clean[..., 0]).mean() > 10
    # prepared: left alone
    stamp = os.stat(osp.join(root, 'val', rel)).st_mtime_ns
    noisy_digits.prepare(root, mnist5k_root)
    assert os.stat(osp.join(root, 'val', rel)).st_mtime_ns == stamp
    # another folder: refused, untouched
    other = tmp_path / 'mine'
    other.mkdir()
    (other / 'notes.txt').write_text('keep')
    with pytest.raises(ConfigError, match='mine'):
        noisy_digits.prepare(str(other), mnist5k_root)
    assert (other / 'notes.txt').read_text() == 'keep'


def test_task_lines_point_every_dataloader_of_each_config_at_the_root(
        tmp_path):
    import psenet_plugin  # noqa: F401
    from mmengine.config import Config
    root = 'data/elsewhere'
    for base in (supernet_quality.PSE_CONFIG,
                 supernet_quality.AUTOSLIM_CONFIG,
                 supernet_quality.SUBNET_CONFIG):
        path = str(tmp_path / 'cfg.py')
        supernet_quality.write_config(path, base,
                                      supernet_quality.data_text(root))
        cfg = Config.fromfile(path)
        assert cfg.train_dataloader.dataset.dataset.data_root == root
        assert cfg.heldout_dataloader.dataset.dataset.data_root == root
        assert cfg.val_dataloader.dataset.data_root == root
        assert cfg.test_dataloader.dataset.data_root == root
        # the tools' --cfg-options say the same
        options = supernet_quality.data_options(root)
        assert options[0] == '--cfg-options'
        cfg = Config.fromfile(osp.join(REPO, base))
        cfg.merge_from_dict(dict(o.split('=', 1) for o in options[1:]))
        assert cfg.train_dataloader.dataset.dataset.data_root == root
        assert cfg.val_dataloader.dataset.data_root == root
    assert supernet_quality.data_text(None) == ''
    assert supernet_quality.data_options(None) == []


def test_supernet_config_trains_on_the_task_for_the_budget(tmp_path):
    import argparse

    import psenet_plugin  # noqa: F401
    from mmengine.config import Config
    args = argparse.Namespace(budget=30, lr=0.02, seed=3,
                              data_text=supernet_quality.data_text('d/x'))
    for base in (supernet_quality.PSE_CONFIG,
                 supernet_quality.AUTOSLIM_CONFIG):
        path = str(tmp_path / 'cfg.py')
        supernet_quality.write_config(
            path, base,
            supernet_quality.supernet_body(args, 'model = dict(seed=3)'))
        cfg = Config.fromfile(path)
        assert cfg.train_dataloader.dataset.dataset.data_root == 'd/x'
        # no validation during a timed training (mmengine wants all three
        # val keys None together)
        assert cfg.val_dataloader is None and cfg.val_cfg is None
        assert cfg.val_evaluator is None
        assert cfg.param_scheduler is None
        assert cfg.train_cfg == dict(type='TimedTrainLoop', max_seconds=30,
                                     warmup_ratio=0.05,
                                     warmup_start_factor=0.1)
        assert cfg.randomness.seed == 3 and cfg.model.seed == 3


def test_a_moved_out_dir_keeps_its_standalone_trainings(tmp_path):
    import shutil

    import psenet_plugin  # noqa: F401
    from mmengine.config import Config
    name = 'standalone_random3_s1'
    body = supernet_quality.standalone_body(
        name, 3, 1, supernet_quality.data_text('d/x'))
    first = tmp_path / 'first'
    first.mkdir()
    supernet_quality.write_config(str(first / f'{name}.py'),
                                  supernet_quality.SUBNET_CONFIG, body)
    supernet_quality._mark_done(str(first / name), dict(top1=71.5))
    cfg = Config.fromfile(str(first / f'{name}.py'))
    # the subnet file is named from the config's own folder
    assert cfg.model.fix_subnet == str(first / name / 'fix_subnet.json')
    assert cfg.randomness.seed == 1
    assert cfg.train_cfg.max_epochs == 3
    moved = tmp_path / 'moved'
    shutil.copytree(first, moved)
    # the same call in the new place finds the finished training
    assert supernet_quality._reused(
        str(moved / name), str(moved / f'{name}.py'),
        supernet_quality.SUBNET_CONFIG, body) == dict(top1=71.5)
    assert Config.fromfile(str(moved / f'{name}.py')).model.fix_subnet == \
        str(moved / name / 'fix_subnet.json')


def test_standalone_recipe_takes_its_learning_rate_and_warm_up(tmp_path):
    import psenet_plugin  # noqa: F401
    from mmengine.config import Config
    path = str(tmp_path / 'standalone_max_s0.py')
    supernet_quality.write_config(
        path, supernet_quality.SUBNET_CONFIG,
        supernet_quality.standalone_body('standalone_max_s0', 4, 0, '',
                                         lr=0.02, warmup=60))
    cfg = Config.fromfile(path)
    assert cfg.optim_wrapper.optimizer.lr == 0.02
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ('LinearLR', 60,
                                                              0.1)
    assert (cosine.type, cosine.end) == ('CosineAnnealingLR', 4)
    # without a warm-up: the cosine alone (the recipe of earlier results)
    supernet_quality.write_config(
        path, supernet_quality.SUBNET_CONFIG,
        supernet_quality.standalone_body('standalone_max_s0', 3, 0, ''))
    cfg = Config.fromfile(path)
    assert cfg.optim_wrapper.optimizer.lr == 0.04
    assert [s.type for s in cfg.param_scheduler] == ['CosineAnnealingLR']
