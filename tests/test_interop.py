"""MMRazor interoperability: MMRazor's loops on PSENet supernets (with
correct FLOPs), their subnet files exported by tools/export.py, the prior
search on MMRazor's AutoSlim supernet, and the prior recorder under
MMRazor's distillation. Real mmrazor/mmpretrain classes, embedded digits,
a few images and candidates each."""
import copy
import glob
import importlib.util
import json
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmrazor.registry import MODELS, TASK_UTILS
from mmrazor.structures import export_fix_subnet

from psenet_plugin.errors import ConfigError
from psenet_plugin.models.channel_widths import ChannelWidths, flops_table_of
from psenet_plugin.structures.subnet import load_subnet

from conftest import DEMO, DEMO_SEARCH, REPO, run_python

AUTOSLIM = 'configs/baselines/autoslim_mbv2_1.5x_supernet_mnist5k.py'
SHAPE = (1, 3, 32, 32)  # the demo input


def _small_data(cfg, root, train=64, val=32):
    """Every dataloader of ``cfg`` on ``root``, a few images, in process."""
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if not loader:
            continue
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.batch_size = 32
        dataset = loader.dataset
        inner = dataset.get('dataset', dataset)
        inner.data_root = root
        dataset.indices = train if key == 'train_dataloader' else val
    held = cfg.get('heldout_dataloader')
    if held:
        held.num_workers = 0
        held.dataset.dataset.data_root = root
        held.dataset.indices = val


def _config(path, root, work_dir, **keys):
    cfg = Config.fromfile(osp.join(REPO, path))
    _small_data(cfg, root)
    cfg.merge_from_dict(keys)
    if cfg.get('train_cfg') and cfg.train_cfg.get('dataloader'):
        loader = cfg.train_cfg.dataloader
        loader.num_workers = 0
        loader.dataset.dataset.data_root = root
        loader.dataset.indices = 32
    cfg.work_dir = str(work_dir)
    cfg.default_hooks = dict(logger=dict(type='LoggerHook', interval=1))
    cfg.env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
    return cfg


def _checkpoint(model_cfg, path):
    """An (untrained) supernet checkpoint: search and export only need its
    weights to fit."""
    model = MODELS.build(copy.deepcopy(model_cfg))
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


def _log(work_dir):
    return '\n'.join(
        open(p).read()
        for p in glob.glob(osp.join(str(work_dir), '*', '*.log')))


def _evolution_cfg(root, work_dir, checkpoint, estimator):
    cfg = _config(DEMO_SEARCH, root, work_dir)
    cfg.train_cfg = dict(
        type='mmrazor.EvolutionSearchLoop',
        dataloader=cfg.heldout_dataloader,
        evaluator=cfg.val_evaluator if cfg.get('val_evaluator') else dict(
            type='Accuracy', topk=(1, )),
        max_epochs=1,
        num_candidates=2,
        top_k=1,
        num_mutation=1,
        num_crossover=1,
        calibrate_sample_num=32,
        constraints_range=dict(flops=(0., 100.)),
        estimator_cfg=estimator,
        score_key='accuracy/top1')
    cfg.load_from = checkpoint
    return cfg


@pytest.fixture(scope='module')
def demo_checkpoint(tmp_path_factory):
    cfg = Config.fromfile(osp.join(REPO, DEMO))
    return _checkpoint(cfg.model,
                       tmp_path_factory.mktemp('demo') / 'supernet.pth')


@pytest.fixture(scope='module')
def mmrazor_search(mnist5k_root, demo_checkpoint, tmp_path_factory):
    """MMRazor's EvolutionSearchLoop run on the demo PSENet supernet, FLOPs
    from the plugin's estimator: (runner, work dir)."""
    work_dir = tmp_path_factory.mktemp('evolution')
    cfg = _evolution_cfg(
        mnist5k_root, work_dir, demo_checkpoint,
        dict(type='mmrazor.SubnetFlopsEstimator', input_shape=SHAPE))
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner, work_dir


def test_mmrazor_evolution_search_on_psenet_counts_exact_flops(
        mmrazor_search):
    """EvolutionSearchLoop hands the estimator each candidate's sliced
    static copy: its FLOPs and params equal the exact table's."""
    runner, work_dir = mmrazor_search
    loop = runner.train_loop
    model = runner.model
    table = model.flops_table
    assert osp.isfile(work_dir / 'best_fix_subnet.yaml')
    checked = 0
    for subnet, flops, params in zip(loop.candidates.subnets,
                                     loop.candidates.resources('flops'),
                                     loop.candidates.resources('params')):
        widths = model.mutator.widths_of(subnet)
        assert flops == pytest.approx(table.flops(widths) / 1e6, rel=1e-9)
        assert params == pytest.approx(table.params(widths) / 1e6,
                                       rel=1e-9)
        checked += 1
    assert checked >= 1


def test_mmrazor_best_fix_subnet_exports(mmrazor_search, demo_checkpoint,
                                         tmp_path):
    """tools/export.py reads MMRazor's mutable-mode best_fix_subnet.yaml
    (its unit names are positions in the mutator) and exports that
    subnet."""
    runner, work_dir = mmrazor_search
    best = str(work_dir / 'best_fix_subnet.yaml')
    mutator = runner.model.mutator
    widths = load_subnet(best, mutator)
    chosen = runner.train_loop.top_k_candidates.subnets[0]
    assert widths == mutator.widths_of(chosen)
    out = tmp_path / 'export'
    result = run_python([
        'tools/export.py', DEMO, demo_checkpoint, best, '--out-dir',
        str(out), '--calibrate', '0'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / 'subnet.json') as f:
        assert json.load(f)['widths'] == widths


def test_autoslim_greedy_search_file_loads_into_psenet(
        mnist5k_root, demo_checkpoint, tmp_path):
    """MMRazor's AutoSlimGreedySearchLoop (a test loop, train_cfg=None as
    in MMRazor's own AutoSlim search config) finishes on a PSENet supernet
    and its FLOPS_<n>M.yaml reads back as the subnet it found."""
    cfg = _config(DEMO, mnist5k_root, tmp_path)
    cfg.train_cfg = cfg.train_dataloader = None
    cfg.optim_wrapper = None
    cfg.param_scheduler = None
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = dict(
        type='mmrazor.AutoSlimGreedySearchLoop',
        dataloader=cfg.test_dataloader,
        evaluator=cfg.test_evaluator,
        # one greedy step below the max subnet (14.13 MFLOPs)
        target_flops=(14.1, ),
        estimator_cfg=dict(
            type='mmrazor.SubnetFlopsEstimator', input_shape=SHAPE))
    cfg.test_dataloader.dataset.indices = 8
    cfg.load_from = demo_checkpoint
    runner = Runner.from_cfg(cfg)
    runner.test()
    files = glob.glob(str(tmp_path / 'FLOPS_*M.yaml'))
    assert len(files) == 1
    model = runner.model
    widths = load_subnet(files[0], model.mutator)
    flops = model.flops_table.flops(widths) / 1e6
    assert flops <= 14.1
    assert f'FLOPS_{flops:.2f}M.yaml' == osp.basename(files[0])


@pytest.mark.parametrize('estimator', ['mmrazor', 'plugin'])
def test_subnet_val_loop_reports_each_subnets_flops(mnist5k_root, tmp_path,
                                                    estimator):
    """SubnetValLoop on a PSENet supernet: with MMRazor's default estimator
    the min and max subnets are counted on their sliced static copies (as
    MMRazor's search counts them), with the plugin's by the exact
    table."""
    cfg = _config(DEMO, mnist5k_root, tmp_path)
    cfg.val_cfg = dict(type='mmrazor.SubnetValLoop', calibrate_sample_num=32)
    if estimator == 'mmrazor':
        cfg.val_cfg.estimator_cfg = dict(
            type='mmrazor.ResourceEstimator',
            flops_params_cfg=dict(input_shape=SHAPE))
    else:
        cfg.val_cfg.estimator_cfg = dict(type='mmrazor.SubnetFlopsEstimator')
    runner = Runner.from_cfg(cfg)
    runner.val()  # SubnetValLoop returns nothing: read what it logged
    hub = runner.message_hub
    model = runner.model
    expected = {}
    for kind in ('max', 'min'):
        getattr(model.mutator, f'set_{kind}_choices')()
        if estimator == 'mmrazor':
            _, sliced = export_fix_subnet(model, slice_weight=True)
            counted = TASK_UTILS.build(
                dict(type='mmrazor.ResourceEstimator',
                     flops_params_cfg=dict(input_shape=SHAPE))).estimate(
                         sliced.architecture)
            expected[kind] = counted['flops']
        else:
            expected[kind] = model.flops_table.flops(
                model.mutator.current_widths) / 1e6
        reported = hub.get_scalar(f'val/{kind}_subnet.flops').current()
        assert reported == pytest.approx(expected[kind], rel=1e-6)
    assert expected['min'] < 0.1 * expected['max']


def test_prior_search_finishes_on_an_autoslim_supernet(
        mnist5k_root, tmp_path):
    """PriorEvolutionSearchLoop on MMRazor's AutoSlim supernet (no prior
    recorded): uniform draws repaired into the FLOPs range, said in the
    log; the best subnet lies in the range and its fix_subnet.yaml holds
    the AutoSlim units' own candidate choices."""
    cfg = _config(AUTOSLIM, mnist5k_root, tmp_path)
    checkpoint = _checkpoint(cfg.model, tmp_path / 'autoslim.pth')
    cfg.train_cfg = dict(
        type='mmrazor.PriorEvolutionSearchLoop',
        dataloader=cfg.heldout_dataloader,
        evaluator=cfg.val_evaluator,
        max_epochs=2,
        num_candidates=3,
        top_k=2,
        num_mutation=1,
        num_crossover=1,
        calibrate_sample_num=32,
        constraints_range=dict(flops=(4.0, 4.5)),
        seed=0)
    cfg.train_cfg.dataloader.dataset.indices = 32
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.load_from = checkpoint
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert 'no prior was recorded for this AutoSlim supernet' in _log(
        tmp_path)
    with open(tmp_path / 'best_subnet.json') as f:
        best = json.load(f)
    assert 4.0e6 <= best['flops'] <= 4.5e6
    model = runner.model
    widths = load_subnet(str(tmp_path / 'best_fix_subnet.yaml'),
                         model.mutator)
    assert widths == best['widths']
    assert flops_table_of(model).flops(widths) == pytest.approx(
        best['flops'])
    view = ChannelWidths(model.mutator)
    view.set_widths(widths)
    assert view.current_widths == widths


def test_autoslim_subnet_exports_as_a_smaller_model_that_computes_it(
        tmp_path):
    """tools/export.py on an AutoSlim supernet: the exported weights, in
    the model mmrazor's sub_model builds from the exported fix_subnet.yaml,
    give the supernet set to that subnet's logits, with fewer params and
    FLOPs."""
    from mmrazor.registry import sub_model
    cfg = Config.fromfile(osp.join(REPO, AUTOSLIM))
    checkpoint = _checkpoint(cfg.model, tmp_path / 'autoslim.pth')
    supernet = MODELS.build(copy.deepcopy(cfg.model))
    supernet.load_state_dict(torch.load(checkpoint)['state_dict'])
    view = ChannelWidths(supernet.mutator)
    widths = {name: widths[len(widths) // 3] for name, widths in zip(
        view.unit_names, view.candidate_widths())}
    subnet = tmp_path / 'subnet.json'
    subnet.write_text(json.dumps(dict(format='psenet-subnet/1',
                                      widths=widths)))
    out = tmp_path / 'export'
    result = run_python([
        'tools/export.py', AUTOSLIM, checkpoint, str(subnet), '--out-dir',
        str(out), '--calibrate', '0'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    static = sub_model(cfg=copy.deepcopy(cfg.model.architecture),
                       fix_subnet=str(out / 'fix_subnet.yaml'),
                       mode='mutator')
    static.load_state_dict(
        torch.load(out / 'subnet_static.pth')['state_dict'], strict=True)
    view.set_widths(widths)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    supernet.eval(), static.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            static(x, mode='tensor'), supernet.architecture(x, mode='tensor'),
            rtol=1e-4, atol=1e-4)
    with open(out / 'summary.json') as f:
        summary = json.load(f)
    assert summary['flops'] < 0.5 * summary['supernet_flops']
    assert summary['static_params'] < summary['supernet_params']
    assert summary['flops'] == pytest.approx(
        flops_table_of(supernet).flops(widths))


def test_estimator_counts_supernets_and_static_subnets_alike():
    """The plugin's estimator on an AutoSlim supernet (its table) equals
    its count of the sliced static copy; a static model without
    input_shape is one clear error naming the key."""
    cfg = Config.fromfile(osp.join(REPO, AUTOSLIM))
    model = MODELS.build(cfg.model)
    model.mutator.set_choices(model.mutator.sample_choices())
    estimator = TASK_UTILS.build(
        dict(type='mmrazor.SubnetFlopsEstimator', input_shape=SHAPE))
    _, sliced = export_fix_subnet(model, slice_weight=True)
    assert estimator.estimate(model) == pytest.approx(
        estimator.estimate(sliced.architecture), rel=1e-9)
    with pytest.raises(ConfigError, match='estimator_cfg.input_shape'):
        TASK_UTILS.build(dict(type='mmrazor.SubnetFlopsEstimator')).estimate(
            sliced.architecture)


def test_prior_recorder_records_psenet_as_a_distillation_student(
        mnist5k_root, tmp_path):
    """PSENet as the student of MMRazor's SingleTeacherDistill: the hook
    finds it inside the distiller and records every subnet it trains."""
    cfg = _config(DEMO, mnist5k_root, tmp_path)
    student = copy.deepcopy(cfg.model)
    student.self_check = False
    teacher = copy.deepcopy(student.architecture)
    preprocessor = dict(type='mmpretrain.ClsDataPreprocessor',
                        **student.pop('data_preprocessor'))
    cfg.model = dict(
        _scope_='mmrazor',
        type='SingleTeacherDistill',
        architecture=student,
        teacher=teacher,
        data_preprocessor=preprocessor,
        distiller=dict(
            type='ConfigurableDistiller',
            student_recorders=dict(
                fc=dict(type='ModuleOutputs', source='architecture.head.fc')),
            teacher_recorders=dict(
                fc=dict(type='ModuleOutputs', source='head.fc')),
            distill_losses=dict(
                loss_kl=dict(type='KLDivergence', tau=1, loss_weight=1)),
            loss_forward_mappings=dict(
                loss_kl=dict(
                    preds_S=dict(recorder='fc', from_student=True),
                    preds_T=dict(recorder='fc', from_student=False)))))
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=10)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.param_scheduler = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(h for h in runner.hooks
                if type(h).__name__ == 'PriorRecorderHook')
    steps = 64 // 32
    assert hook.stats.num_records == steps * student.num_subnets
    assert osp.isfile(tmp_path / 'prior_stats.json')


def test_prior_recorder_refuses_a_model_without_psenet():
    from psenet_plugin.engine.hooks.prior_recorder import PriorRecorderHook
    runner = SimpleNamespace(model=torch.nn.Sequential(torch.nn.Linear(2,
                                                                       2)))
    with pytest.raises(ConfigError, match='holds no PSENet') as error:
        PriorRecorderHook().before_train(runner)
    assert '\n' not in str(error.value)


def _search_tool():
    spec = importlib.util.spec_from_file_location(
        'search_tool', osp.join(REPO, 'tools', 'search.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_search_tool_picks_the_search_loop_or_names_the_key():
    """tools/search.py runs a search train_cfg, or with train_cfg=None
    MMRazor's AutoSlimGreedySearchLoop as test_cfg; anything else is one
    error line naming train_cfg."""
    tool = _search_tool()
    greedy = Config(dict(train_cfg=None, test_cfg=dict(
        type='mmrazor.AutoSlimGreedySearchLoop')))
    assert tool.search_loop(greedy, 'x.py') == 'test'
    assert tool.search_loop(
        Config(dict(train_cfg=dict(type='mmrazor.EvolutionSearchLoop'))),
        'x.py') == 'train'
    for cfg in (dict(train_cfg=None),
                dict(train_cfg=None, test_cfg=dict(type='TestLoop')),
                dict(train_cfg=dict(type='EpochBasedTrainLoop'))):
        with pytest.raises(ConfigError, match='train_cfg') as error:
            tool.search_loop(Config(cfg), 'x.py')
        assert '\n' not in str(error.value)
