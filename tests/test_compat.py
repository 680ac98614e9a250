"""Each compat fix: the defect exists on the installed stack (shown in a
fresh interpreter without psenet_plugin), and the fix removes it."""
import pickle
import re

import pytest
import torch

from conftest import run_python


def test_mmrazor_fails_to_import_on_torch2_without_the_fix():
    result = run_python(['-c', 'import mmrazor.models'])
    assert result.returncode != 0
    assert '`torch>=1.13` is not installed properly' in result.stderr


def test_mmrazor_pruning_and_engine_import_with_the_fix():
    result = run_python(
        ['-c', 'import psenet_plugin, mmrazor.models, mmrazor.engine; '
         'from mmrazor.models import OneShotChannelMutator, AutoSlim'])
    assert result.returncode == 0, result.stderr


def test_using_mmrazor_quantization_raises_one_clear_error():
    from mmrazor.registry import MODELS
    from mmrazor.structures.quantization import (BackendConfigs,
                                                 get_native_backend_config)

    from psenet_plugin.compat.quantization import \
        QuantizationUnavailableError
    assert set(BackendConfigs) == {'academic', 'native', 'tensorrt',
                                   'openvino'}
    with pytest.raises(QuantizationUnavailableError, match='torch 1.13.x'):
        BackendConfigs['native']
    with pytest.raises(QuantizationUnavailableError, match=re.escape(torch.__version__)):
        get_native_backend_config()
    with pytest.raises(QuantizationUnavailableError,
                       match='backend_config.tensorrt'):
        import mmrazor.structures.quantization.backend_config.tensorrt  # noqa
    qscheme = dict(qdtype='qint8', bit=8, is_symmetry=True)
    with pytest.raises(QuantizationUnavailableError, match='openvino'):
        MODELS.build(
            dict(
                _scope_='mmrazor',
            type='OpenVINOQuantizer',
                global_qconfig=dict(
                    w_observer=dict(type='mmrazor.MinMaxObserver'),
                    a_observer=dict(type='mmrazor.MinMaxObserver'),
                    w_fake_quant=dict(type='mmrazor.FakeQuantize'),
                    a_fake_quant=dict(type='mmrazor.FakeQuantize'),
                    w_qscheme=qscheme,
                    a_qscheme=qscheme)))


def _train_one_iter_checkpoint(tmp_path):
    """A real mmengine checkpoint: a Runner trains one iteration of an
    mmpretrain classifier and saves it (message hub, numpy scalars and
    all)."""
    from mmengine.runner import Runner
    from torch.utils.data import Dataset

    class Digits(Dataset):

        def __len__(self):
            return 4

        def __getitem__(self, i):
            from mmpretrain.structures import DataSample
            return dict(
                inputs=torch.rand(3, 16, 16),
                data_samples=DataSample().set_gt_label(i % 2))

    runner = Runner(
        model=dict(
            type='ImageClassifier',
            backbone=dict(type='ResNet', depth=18),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=2,
                in_channels=512)),
        work_dir=str(tmp_path),
        default_scope='mmpretrain',
        train_dataloader=dict(
            dataset=Digits(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=4,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1)))
    runner.train()
    return tmp_path / 'epoch_1.pth'


def test_mmengine_checkpoints_load_with_weights_only(tmp_path):
    path = _train_one_iter_checkpoint(tmp_path)
    # Without the fix, torch's weights_only default refuses the file.
    result = run_python([
        '-c', 'import torch, sys; torch.load(sys.argv[1])',
        str(path)
    ])
    assert result.returncode != 0
    assert 'HistoryBuffer' in result.stderr
    # With it, the default (weights_only=True) load works.
    checkpoint = torch.load(path)
    assert checkpoint['meta']['epoch'] == 1
    assert 'train/loss' in checkpoint['message_hub']['log_scalars']


def test_checkpoint_allow_list_refuses_other_getattr(tmp_path):
    from mmengine.logging import HistoryBuffer

    class Sneaky:

        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    path = tmp_path / 'sneaky.pth'
    torch.save({'x': Sneaky()}, path)
    with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
        torch.load(path)


def _mmpretrain_classifier():
    from mmrazor.registry import MODELS
    return MODELS.build(
        dict(
            _scope_='mmpretrain',
            type='ImageClassifier',
            backbone=dict(type='MobileNetV2', widen_factor=0.5),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10,
                      in_channels=1280)))


@pytest.mark.parametrize('demo_input', [
    dict(type='mmrazor.DefaultDemoInput', scope='mmcls',
         input_shape=(2, 3, 32, 32)),
    dict(type='mmrazor.DefaultDemoInput', input_shape=(2, 3, 32, 32)),
    dict(type='mmrazor.DefaultMMPretrainDemoInput',
         input_shape=(2, 3, 32, 32)),
])
def test_demo_inputs_drive_mmpretrain_classifiers_in_loss_mode(demo_input):
    from mmrazor.registry import TASK_UTILS
    model = _mmpretrain_classifier()
    data = TASK_UTILS.build(demo_input).get_data(model)
    assert [s.gt_label.item() for s in data['data_samples']] == [0, 1]
    data['mode'] = 'loss'
    losses = model(**data)
    assert losses['loss'].ndim == 0


def test_mmcls_scope_demo_input_fails_without_the_fix(monkeypatch):
    from mmrazor.models.task_modules.demo_inputs import default_demo_inputs
    from mmrazor.models.task_modules.demo_inputs.demo_inputs import \
        DefaultMMClsDemoInput
    from mmrazor.registry import TASK_UTILS

    # Put back mmrazor's own entry for the scope, as before the fix.
    monkeypatch.setitem(default_demo_inputs.default_demo_input_class_for_scope,
                        'mmcls', DefaultMMClsDemoInput)
    demo_input = TASK_UTILS.build(
        dict(type='mmrazor.DefaultDemoInput', scope='mmcls',
             input_shape=(1, 3, 32, 32)))
    with pytest.raises(ModuleNotFoundError, match="No module named 'mmcls'"):
        demo_input.get_data(_mmpretrain_classifier())


def test_channel_analyzer_traces_mmpretrain_models_in_loss_mode():
    import logging

    from mmengine.logging import MMLogger
    from mmrazor.registry import TASK_UTILS

    class Records(logging.Handler):

        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    analyzer = TASK_UTILS.build(
        dict(
            type='mmrazor.ChannelAnalyzer',
            demo_input=(1, 3, 32, 32),
            tracer_type='FxTracer'))
    # MMLogger does not propagate to pytest's caplog: listen on it directly.
    logger = MMLogger.get_current_instance()
    records = Records()
    logger.addHandler(records)
    try:
        units = analyzer.analyze(_mmpretrain_classifier())
    finally:
        logger.removeHandler(records)
    assert len(units) == 25  # MobileNetV2: the 25 coupled channel groups
    # mmrazor tries 'loss' mode first and logs when it fails.
    assert not [m for m in records.messages if 'Forward failed' in m]


def test_unsupported_versions_are_refused_with_the_accepted_range():
    from psenet_plugin.compat.versions import (check_versions,
                                               installed_versions)
    from psenet_plugin.errors import UnsupportedVersionError
    check_versions()  # this environment is supported
    versions = installed_versions()
    with pytest.raises(UnsupportedVersionError) as error:
        check_versions({**versions, 'mmcv': '2.2.0'})
    assert 'mmcv 2.2.0 is installed; accepted: mmcv>=2.0.0,<=2.1.0' in str(
        error.value)
    with pytest.raises(UnsupportedVersionError, match='torch>=2.11,<2.15'):
        check_versions({**versions, 'torch': '1.13.1'})
    with pytest.raises(UnsupportedVersionError,
                       match='mmrazor is not installed'):
        check_versions({**versions, 'mmrazor': None})


def test_expected_stack_warnings_are_silenced_on_import():
    result = run_python(['-W', 'default', '-c', 'import psenet_plugin'])
    assert result.returncode == 0, result.stderr
    assert 'MultiScaleDeformableAttention' not in result.stderr
    unfixed = run_python(
        ['-W', 'default', '-c', 'import mmcv.cnn.bricks.transformer'])
    assert 'MultiScaleDeformableAttention' in unfixed.stderr


@pytest.mark.parametrize('with_fix', [False, True])
def test_mmengine_pytorch_launcher_starts_without_a_gpu(with_fix):
    import os
    env = dict(
        os.environ,
        RANK='0',
        LOCAL_RANK='0',
        WORLD_SIZE='1',
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(29600 + with_fix))
    code = ('import psenet_plugin; ' if with_fix else '') + (
        'from mmengine.dist import init_dist, get_world_size; '
        "init_dist('pytorch', backend='gloo'); print(get_world_size())")
    result = run_python(['-c', code], env=env)
    if with_fix or torch.cuda.is_available():
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == '1'
    else:  # the upstream defect: torch.cuda.set_device without a GPU
        assert 'NVIDIA driver' in result.stderr


@pytest.mark.parametrize('with_fix', [False, True])
def test_mutator_mode_subnet_config_keeps_one_shot_unit_choices(with_fix):
    """mmrazor's sub_model in 'mutator' mode, given a OneShotMutableChannel
    unit's choice (an AutoSlim subnet): pruned with the fix; without it the
    choice is reset to the max width and the model is the supernet."""
    import copy

    from mmengine.config import Config
    from mmrazor.registry import MODELS, sub_model

    from psenet_plugin.compat import unit_choice
    from psenet_plugin.structures.subnet import fix_subnet_config

    from conftest import REPO
    cfg = Config.fromfile(
        f'{REPO}/configs/baselines/autoslim_mbv2_1.5x_supernet_mnist5k.py')
    supernet = MODELS.build(copy.deepcopy(cfg.model))
    first = supernet.mutator.mutable_units[0]  # backbone.conv1: 48 channels
    widths = {u.name: u.mutable_channel.num_channels
              for u in supernet.mutator.mutable_units}
    widths[first.name] = 24
    subnet = fix_subnet_config(supernet.mutator, widths)
    if not with_fix:
        unit_choice.remove()
    try:
        static = sub_model(cfg=copy.deepcopy(cfg.model.architecture),
                           fix_subnet=subnet, mode='mutator')
    finally:
        unit_choice.apply()
    channels = static.backbone.conv1.conv.out_channels
    assert channels == (24 if with_fix else 48)


@pytest.mark.parametrize('with_fix', [False, True])
def test_two_runners_of_one_config_in_one_second_log_to_their_own_files(
        with_fix, tmp_path, monkeypatch):
    """mmengine names a Runner's logger after the config and the second:
    without the fix the second Runner of the same second reuses the first's
    logger and writes into the first run's log file."""
    import os
    import time

    from mmengine.config import Config
    from mmengine.model import BaseModel
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    from psenet_plugin.compat import runner_names

    class Toy(BaseModel):

        def forward(self, inputs, data_samples=None, mode='tensor'):
            return inputs

    config = tmp_path / 'same_name.py'
    config.write_text('answer = 42\n')
    now = time.time()
    monkeypatch.setattr(time, 'time', lambda: now)  # one and the same second
    if not with_fix:
        runner_names.remove()
    # the Runners' default scope ('mmengine') must not outlive the test
    with DefaultScope.overwrite_default_scope('mmengine'):
        try:
            runners = [
                Runner(model=Toy(), work_dir=str(tmp_path / f'run{i}'),
                       cfg=Config.fromfile(str(config))) for i in range(2)
            ]
        finally:
            runner_names.apply()
    runners[1].logger.info('a line of the second run')
    for handler in runners[1].logger.handlers:
        handler.flush()

    def log_text(runner):
        path = os.path.join(runner.log_dir, f'{runner.timestamp}.log')
        return open(path).read() if os.path.exists(path) else ''

    second_in_first = 'a line of the second run' in log_text(runners[0])
    second_in_own = 'a line of the second run' in log_text(runners[1])
    if with_fix:
        assert runners[1].logger is not runners[0].logger
        assert second_in_own and not second_in_first
    else:  # the upstream defect
        assert runners[1].logger is runners[0].logger
        assert second_in_first and not second_in_own


@pytest.mark.parametrize('with_fix', [False, True])
def test_two_subsets_of_one_dataset_get_their_own_pipeline(with_fix,
                                                           mnist5k_root):
    """mmengine's get_subset deep-copies with one memo for the whole
    process: without the fix the second subset of a dataset gets the first
    subset's pipeline object (and an id reused later, an earlier subset in
    place of an attribute); with it every subset has its own copy."""
    from mmpretrain.datasets import CustomDataset

    from psenet_plugin.compat import dataset_subset
    dataset = CustomDataset(
        data_root=mnist5k_root, ann_file='meta/train.txt',
        data_prefix='train', pipeline=[dict(type='LoadImageFromFile')])
    if not with_fix:
        dataset_subset.remove()
    try:
        first, second = dataset.get_subset([0, 1]), dataset.get_subset([2])
    finally:
        dataset_subset.apply()
    assert (first.pipeline is second.pipeline) is not with_fix
    assert first.pipeline is not dataset.pipeline
    # each subset reads its own samples through a working pipeline
    assert len(first) == 2 and len(second) == 1
    assert first[1]['img'].shape == (28, 28, 3)
    assert first.get_data_info(0) == dataset.get_data_info(0)
