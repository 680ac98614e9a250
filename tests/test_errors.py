"""Bad input is one clear ``error:`` line naming the cause and what is
accepted (no traceback, exit code 2, nothing already written lost); the
search never answers outside the constraints in force; a work dir is used by
one run at a time.

The tools' ``main`` runs in this process where it can (a subprocess costs
the import of the whole stack).
"""
import importlib.util
import json
import os
import os.path as osp
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmrazor.registry import MODELS

from psenet_plugin import cli
from psenet_plugin.datasets.checks import check_dataset_files
from psenet_plugin.engine.loops.prior_evolution_search_loop import \
    PriorEvolutionSearchLoop
from psenet_plugin.errors import (ConfigError, CorruptFileError, DataError,
                                  WorkDirError)
from psenet_plugin.structures.prior import Prior, SubnetLossStats

from conftest import DEMO, DEMO_SEARCH, REPO, data_root_options

# helpers


def _tool(name):
    spec = importlib.util.spec_from_file_location(
        f'psenet_tool_{name}', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _error_line(capsys, monkeypatch, tool, *argv):
    """Run ``tools/<tool>.py ARGV`` in this process: it must exit with code
    2 and one ``error:`` line, without a traceback."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, 'argv', [f'tools/{tool}.py'] + list(argv))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.run(_tool(tool).main)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err[-2000:]
    assert 'Traceback' not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], \
        err[-2000:]
    return errors[0]


@pytest.fixture(scope='module')
def demo_model():
    """The demo supernet (PSENet, MobileNetV2-1.5x, 32 px), untrained."""
    cfg = Config.fromfile(osp.join(REPO, DEMO))
    return MODELS.build(cfg.model)


def _loop(model, ranges=None, **attributes):
    """The search loop's own code on ``model``, without a runner (nothing
    is evaluated): ``ranges`` in millions, as ``constraints_range``."""
    loop = object.__new__(PriorEvolutionSearchLoop)
    loop.model = model
    loop.flops_convention = attributes.pop('flops_convention', 'all')
    loop.constraints_range = attributes.pop(
        'constraints_range', ranges or dict(flops=(4.03, 4.45)))
    loop.table = model.flops_table.with_convention(loop.flops_convention)
    loop.unit_names = loop.table.unit_names
    loop.candidate_widths = model.mutator.candidate_widths(loop.unit_names)
    loop.ranges = loop._check_constraints_range()
    loop.prior_source, loop.prior_required, loop.prior_fit = \
        'uniform', False, {}
    loop.rng, loop.archive, loop.population = random.Random(0), [], []
    loop.references = {}
    loop.num_candidates, loop.top_k, loop.score_key = 8, 2, 'accuracy/top1'
    loop.ratio_seeds = attributes.pop('ratio_seeds', 4)  # the demo search's
    loop._epoch, loop._max_epochs = 0, 3
    for key, value in attributes.items():
        setattr(loop, '_runner' if key == 'runner' else key, value)
    loop.prior = loop._build_prior()
    return loop


def _tiny_digits(mnist5k_root, root, per_class=4):
    """A small mmpretrain CustomDataset folder of real digit PNGs (the
    first ``per_class`` images of each class of the embedded data)."""
    for split in ('train', 'val'):
        lines, taken = [], {}
        with open(osp.join(mnist5k_root, 'meta', f'{split}.txt')) as f:
            for line in f:
                name, label = line.split()
                if taken.get(label, 0) == per_class:
                    continue
                taken[label] = taken.get(label, 0) + 1
                os.makedirs(osp.join(root, split, osp.dirname(name)),
                            exist_ok=True)
                shutil.copy(
                    osp.join(mnist5k_root, split, name),
                    osp.join(root, split, name))
                lines.append(line)
        os.makedirs(osp.join(root, 'meta'), exist_ok=True)
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
    return str(root)


def _dataset_cfg(root, num_classes=10):
    return dict(
        model=dict(
            type='PSENet',
            architecture=dict(head=dict(num_classes=num_classes))),
        train_dataloader=dict(
            dataset=dict(
                type='HeldOutSplit',
                part='train',
                dataset=dict(
                    type='CustomDataset',
                    data_root=root,
                    ann_file='meta/train.txt',
                    data_prefix='train'))))


# the search: resume, feasibility, params constraints, empty population


@pytest.mark.parametrize('key, old, new', [
    ('constraints_range', dict(flops=(4.03, 4.45)), dict(flops=(5.0, 5.5))),
    ('score_key', 'accuracy/top1', 'accuracy/top5'),
    ('flops_convention', 'all', 'conv_linear'),
])
def test_resume_under_other_settings_is_refused_naming_both(
        demo_model, tmp_path, key, old, new):
    path = tmp_path / 'search_state.json'
    first = _loop(demo_model, **{key: old})
    first.archive = [dict(widths=[8] * len(first.unit_names), score=50.,
                          flops=1., params=1.)]
    path.write_text(json.dumps(first._state()))

    again = _loop(demo_model, **{key: new})
    with pytest.raises(ConfigError) as error:
        again._load_state(str(path))
    message = str(error.value)
    shown = {'constraints_range': ('dict(flops=(4.03, 4.45))',
                                   'dict(flops=(5, 5.5))'),
             'score_key': ("'accuracy/top1'", "'accuracy/top5'"),
             'flops_convention': ("'all'", "'conv_linear'")}[key]
    assert f'searched with train_cfg.{key}={shown[0]}' in message
    assert f'this run has train_cfg.{key}={shown[1]}' in message
    assert again.archive == []  # nothing taken over

    same = _loop(demo_model, runner=_Runner(tmp_path), **{key: old})
    same._load_state(str(path))
    assert same.archive == first.archive


class _Runner:

    def __init__(self, work_dir):
        self.work_dir = str(work_dir)
        self.logger = MMLogger.get_current_instance()


def test_best_subnet_is_inside_the_constraints_in_force(demo_model):
    """A candidate outside the constraints (however it got into the
    archive) is never the best subnet."""
    loop = _loop(demo_model)
    inside = loop.prior.sample(loop.rng)
    inside = loop._repair(inside)
    outside = np.array([c[-1] for c in loop.candidate_widths], float)
    assert inside is not None and not loop._feasible(outside)
    loop.archive = [
        dict(widths=[int(w) for w in outside], score=99., flops=1e9),
        dict(widths=[int(w) for w in inside], score=50., flops=4e6),
    ]
    assert [c['score'] for c in loop.top_k_records()] == [50.]
    assert loop._best()['score'] == 50.
    loop.archive = loop.archive[:1]
    with pytest.raises(ConfigError, match='no candidate fits'):
        loop._best()


def test_params_only_constraint_is_fitted_and_repaired(demo_model, tmp_path):
    """dict(params=(lo, hi)) alone: the prior is fitted to the params range
    and every candidate is repaired into it (it used to leave an empty
    population and end in IndexError)."""
    table = demo_model.flops_table
    loop = _loop(demo_model, dict(params=(0.5, 0.6)))
    population = loop._next_population()
    assert len(population) == loop.num_candidates
    params = table.params_batch(np.array([c['widths'] for c in population],
                                         float))
    assert ((params >= 0.5e6) & (params <= 0.6e6)).all()
    # Prior.fit meets a params target as it meets a FLOPs target.
    candidates = loop.candidate_widths
    prior = Prior.fit(SubnetLossStats(), table, candidates, 0.55e6,
                      metric='params')
    assert table.params_batch(prior.expected_widths())[0] == \
        pytest.approx(0.55e6, rel=1e-3)
    assert Prior.load(_saved(prior, tmp_path)).metric == 'params'


def _saved(prior, tmp_path):
    path = str(tmp_path / 'prior.json')
    prior.save(path)
    return path


def test_flops_band_no_candidate_fits_is_one_clear_error(demo_model):
    loop = _loop(demo_model, dict(flops=(4.19999, 4.20001)))
    with pytest.raises(ConfigError) as error:
        loop._draw_population()
    message = str(error.value)
    assert message.startswith('train_cfg.constraints_range: no candidate '
                              'fits flops=(4.19999, 4.20001) M')
    # the feasible range: the min and max subnets' FLOPs and params
    assert '0.638 to 14.133 MFLOPs' in message
    assert 'M params' in message and '--flops-tolerance' in message


def test_flops_convention_key_is_checked():
    with pytest.raises(ConfigError,
                       match="flops_convention='macs'; accepted: 'all', "
                       "'conv_linear'"):
        PriorEvolutionSearchLoop(None, None, None, flops_convention='macs')


# the work-dir lock


def test_second_search_on_a_locked_work_dir_is_refused(
        mnist5k_root, tmp_path, capsys, monkeypatch):
    work_dir = tmp_path / 'search'
    (work_dir).mkdir()
    (work_dir / 'search_state.json').write_text('{"kept": true}')
    checkpoint = tmp_path / 'supernet.pth'
    checkpoint.write_bytes(b'not read: the lock comes first')
    with cli.work_dir_lock(str(work_dir)):
        error = _error_line(
            capsys, monkeypatch, 'search', DEMO_SEARCH, str(checkpoint),
            '--work-dir', str(work_dir), '--cfg-options',
            f'train_cfg.dataloader.dataset.data_root={mnist5k_root}',
            f'train_dataloader.dataset.data_root={mnist5k_root}')
    assert error.startswith(f'error: work dir {work_dir} is in use by '
                            f'process {os.getpid()} (')
    assert 'started 20' in error and '--work-dir' in error
    assert (work_dir / 'search_state.json').read_text() == '{"kept": true}'
    assert not (work_dir / cli.LOCK_NAME).exists()  # released


def test_training_is_refused_while_another_process_holds_the_lock(
        mnist5k_root, tmp_path, capsys, monkeypatch):
    work_dir = tmp_path / 'train'
    holder = subprocess.Popen(
        [sys.executable, '-c',
         'import sys, time; from psenet_plugin import cli\n'
         'with cli.work_dir_lock(sys.argv[1]):\n'
         '    print("locked", flush=True); time.sleep(60)',
         str(work_dir)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        error = _error_line(capsys, monkeypatch, 'train', DEMO,
                            '--work-dir', str(work_dir), '--cfg-options',
                            *data_root_options(mnist5k_root))
    finally:
        holder.kill()
        holder.wait()
    assert f'is in use by process {holder.pid} (' in error
    # The holder was killed: its lock file is left, and taken over.
    assert (work_dir / cli.LOCK_NAME).exists()
    with cli.work_dir_lock(str(work_dir)):
        info = json.loads((work_dir / cli.LOCK_NAME).read_text())
        assert info['pid'] == os.getpid()


def test_lock_file_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen(['true'])
    dead.wait()
    lock = tmp_path / cli.LOCK_NAME
    lock.write_text(json.dumps(dict(pid=dead.pid, command='search.py',
                                    started='2026-01-01 00:00:00')))
    with cli.work_dir_lock(str(tmp_path)):
        assert json.loads(lock.read_text())['pid'] == os.getpid()
        with pytest.raises(WorkDirError,
                           match=f'in use by process {os.getpid()}'):
            with cli.work_dir_lock(str(tmp_path)):
                pass
    assert not lock.exists()


def _read_only_dir(tmp_path):
    folder = tmp_path / 'read_only'
    folder.mkdir()
    folder.chmod(0o555)
    candidates = [str(folder), '/sys/fs']  # root ignores the mode bits
    for path in candidates:
        try:
            open(osp.join(path, '.probe'), 'w').close()
            os.remove(osp.join(path, '.probe'))
        except OSError:
            return path
    pytest.skip('no read-only folder on this machine')


@pytest.mark.parametrize('tool', ['train', 'search'])
def test_read_only_or_uncreatable_work_dir_is_one_clear_error(
        tool, mnist5k_root, tmp_path, capsys, monkeypatch):
    (tmp_path / 'a_file').write_text('')
    checkpoint = tmp_path / 'supernet.pth'
    checkpoint.write_bytes(b'')
    config = [DEMO] if tool == 'train' else [DEMO_SEARCH, str(checkpoint)]
    options = ['--cfg-options'] + (
        data_root_options(mnist5k_root) if tool == 'train' else [
            f'train_cfg.dataloader.dataset.data_root={mnist5k_root}',
            f'train_dataloader.dataset.data_root={mnist5k_root}'
        ])
    uncreatable = str(tmp_path / 'a_file' / 'work')
    error = _error_line(capsys, monkeypatch, tool, *config, '--work-dir',
                        uncreatable, *options)
    assert error.startswith(f"error: work dir '{uncreatable}' cannot be "
                            'created (Not a directory); accepted: a folder '
                            'you can write to')
    read_only = _read_only_dir(tmp_path)
    error = _error_line(capsys, monkeypatch, tool, *config, '--work-dir',
                        read_only, *options)
    assert error.startswith(f"error: work dir '{read_only}' is not "
                            'writable (')


# one-line errors of the tools


def test_typo_in_a_model_key_names_the_key_and_the_likely_one(
        mnist5k_root, tmp_path, capsys, monkeypatch):
    error = _error_line(capsys, monkeypatch, 'train', DEMO, '--work-dir',
                        str(tmp_path), '--cfg-options', 'model.num_subnet=4',
                        *data_root_options(mnist5k_root))
    assert error.startswith("error: model.num_subnet: PSENet has no "
                            "argument 'num_subnet'; did you mean "
                            "'num_subnets'? accepted: architecture, ")


def test_typo_in_a_nested_key_is_named_by_its_config_path():
    cfg = Config.fromfile(osp.join(REPO, DEMO))
    cfg.model.architecture.backbone.widen_factr = 1.0
    with pytest.raises(TypeError) as error:
        MODELS.build(cfg.model)
    translated = cli.translate_build_error(error.value, cfg)
    assert str(translated).startswith(
        "model.architecture.backbone.widen_factr: MobileNetV2 has no "
        "argument 'widen_factr'; did you mean 'widen_factor'?")


def test_cfg_options_without_equals_sign_is_one_clear_error(
        capsys, monkeypatch):
    error = _error_line(capsys, monkeypatch, 'train', DEMO, '--cfg-options',
                        'train_cfg.max_epochs', '2')
    assert error == (
        "error: --cfg-options 'train_cfg.max_epochs': each item is "
        'key=value, e.g. train_cfg.max_epochs=2 or model.num_subnets=4 '
        '(lists as key="[a,b]", no spaces)')


def test_config_with_a_syntax_error_names_file_and_line(
        tmp_path, capsys, monkeypatch):
    config = tmp_path / 'broken.py'
    config.write_text("_base_ = ['x.py']\nmodel = dict(type='PSENet',\n"
                      'num_subnets=4 4)\n')
    error = _error_line(capsys, monkeypatch, 'train', str(config))
    assert error.startswith(f"error: config file '{config}' is not valid "
                            'Python: ')
    assert 'line 3' in error


def test_missing_image_and_label_outside_num_classes_are_named(
        mnist5k_root, tmp_path):
    root = _tiny_digits(mnist5k_root, tmp_path / 'digits')
    check_dataset_files(_dataset_cfg(root))  # as prepared: fine
    ann = osp.join(root, 'meta', 'train.txt')
    lines = open(ann).read().splitlines()
    name, label = lines[5].split()

    with pytest.raises(DataError) as error:
        check_dataset_files(_dataset_cfg(root, num_classes=8))
    assert str(error.value).startswith(
        "train_dataloader.dataset.ann_file='meta/train.txt': line 33 of "
        f'{ann} has label 8, outside model.architecture.head.num_classes=8;'
        ' accepted: labels 0 .. 7')

    os.remove(osp.join(root, 'train', name))
    with pytest.raises(DataError) as error:
        check_dataset_files(_dataset_cfg(root))
    assert str(error.value).startswith(
        f"train_dataloader.dataset.ann_file='meta/train.txt': line 6 of "
        f"{ann} names {name!r}, but "
        f"{osp.join(root, 'train', name)!r} does not exist (1 listed "
        'image(s) missing)')


def test_missing_image_stops_training_before_it_starts(
        mnist5k_root, tmp_path, capsys, monkeypatch):
    root = _tiny_digits(mnist5k_root, tmp_path / 'digits')
    name = open(osp.join(root, 'meta', 'val.txt')).readline().split()[0]
    os.remove(osp.join(root, 'val', name))
    error = _error_line(capsys, monkeypatch, 'train', DEMO, '--work-dir',
                        str(tmp_path / 'work'), '--cfg-options',
                        *data_root_options(root))
    assert error.startswith("error: val_dataloader.dataset.ann_file="
                            "'meta/val.txt': line 1 of ")
    assert not (tmp_path / 'work').exists()  # before anything is written


def test_truncated_png_names_the_file(mnist5k_root, tmp_path, capsys,
                                      monkeypatch):
    """A PNG cut short decodes to nothing; mmcv asserts inside a dataloader
    worker; the tool names the file."""
    root = _tiny_digits(mnist5k_root, tmp_path / 'digits')
    truncated = []
    for line in open(osp.join(root, 'meta', 'train.txt')):
        name, label = line.split()
        if label == '3':
            path = osp.join(root, 'train', name)
            data = open(path, 'rb').read()
            open(path, 'wb').write(data[:len(data) // 2])
            truncated.append(path)
    error = _error_line(
        capsys, monkeypatch, 'train', DEMO, '--work-dir',
        str(tmp_path / 'work'), '--no-validate', '--cfg-options',
        *data_root_options(root), 'train_cfg.max_epochs=1',
        'train_dataloader.batch_size=8', 'train_dataloader.num_workers=1',
        'model.num_subnets=2')
    assert error.startswith('error: image ')
    assert error.split()[2] in truncated
    assert 'cannot be decoded (truncated, or not an image file)' in error


def test_truncated_checkpoint_given_to_search_is_one_clear_error(
        mnist5k_root, tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'w': torch.zeros(1000)}}, checkpoint)
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[:len(data) // 2])
    error = _error_line(
        capsys, monkeypatch, 'search', DEMO_SEARCH, str(checkpoint),
        '--work-dir', str(tmp_path / 'search'), '--cfg-options',
        f'train_cfg.dataloader.dataset.data_root={mnist5k_root}',
        f'train_dataloader.dataset.data_root={mnist5k_root}')
    assert error.startswith(f"error: checkpoint '{checkpoint}' cannot be "
                            'read (')
    assert 'is it truncated' in error


def test_checkpoint_of_another_model_is_refused(demo_model, tmp_path):
    """mmengine loads load_from non-strictly (warnings only): a plain
    mmpretrain checkpoint or a supernet of another width would be searched
    at random weights."""
    # the supernet's own checkpoint fits
    own = tmp_path / 'own.pth'
    torch.save({'state_dict': demo_model.state_dict()}, own)
    cli.check_checkpoint_fits(demo_model, str(own), DEMO)
    # a plain mmpretrain classifier
    plain = tmp_path / 'plain.pth'
    torch.save({'state_dict': demo_model.architecture.state_dict()}, plain)
    with pytest.raises(ConfigError) as error:
        cli.check_checkpoint_fits(demo_model, str(plain), DEMO)
    assert f"checkpoint '{plain}' does not fit the model of {DEMO}" in \
        str(error.value)
    assert 'a plain mmpretrain classifier, not a supernet?' in \
        str(error.value)
    # the weights of a supernet of another width (widen_factor 1.0)
    cfg = Config.fromfile(osp.join(REPO, DEMO)).model.architecture
    cfg.backbone.widen_factor, cfg.head.in_channels = 1.0, 1280
    narrow = tmp_path / 'narrow.pth'
    torch.save({'state_dict': {f'architecture.{k}': v for k, v in
                               MODELS.build(cfg).state_dict().items()}},
               narrow)
    with pytest.raises(ConfigError) as error:
        cli.check_checkpoint_fits(demo_model, str(narrow), DEMO)
    assert "'architecture.backbone.conv1.conv.weight' has shape " \
        '(32, 3, 3, 3) in the checkpoint and (48, 3, 3, 3) in the model' \
        in str(error.value)


@pytest.mark.parametrize('content', [b'{"format": "psenet-prior-stats/2", "u',
                                     b'\x89PNG\r\n\x1a\n\x00garbage'])
def test_corrupt_prior_file_names_the_file(demo_model, tmp_path, content):
    path = tmp_path / 'prior_stats.json'
    path.write_bytes(content)
    with pytest.raises(CorruptFileError, match=f"prior file '{path}' cannot "
                       'be read'):
        SubnetLossStats.load(str(path))
    # A prior the config names is never silently replaced by uniform
    # sampling when it is broken (prior_required or not).
    with pytest.raises(CorruptFileError) as error:
        _loop(demo_model, prior_source=str(path))
    assert str(error.value).startswith(
        f"train_cfg.prior='{path}': prior file '{path}' cannot be read (")
