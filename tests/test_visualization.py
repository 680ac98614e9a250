"""The pictures (psenet_plugin/visualization.py) and the subnet summary
(tools/subnet_summary.py): each picture is a PNG drawn from the files a run
writes, in their real formats; the summary's table adds up to the FLOPs
table's totals; bad input is one error line."""
import importlib.util
import json
import os
import random
import sys

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.visualization import LocalVisBackend
from mmrazor.registry import MODELS

from psenet_plugin.errors import ConfigError
from psenet_plugin.structures.flops import FlopsTable
from psenet_plugin.structures.io import atomic_write_json
from psenet_plugin.structures.sampling import uniform_widths
from psenet_plugin.structures.subnet import save_subnet, subnet_record
from psenet_plugin.visualization import (PICTURES, pareto_front,
                                         read_scalars, require_matplotlib,
                                         run_pictures, search_plot,
                                         training_plot, unit_label,
                                         widths_plot)

from conftest import DEMO, REPO, run_python
from helpers import build_supernet

SUMMARY_TOOL = 'tools/subnet_summary.py'


def assert_png(path):
    with open(path, 'rb') as f:
        head = f.read(8)
    assert head == b'\x89PNG\r\n\x1a\n', path
    assert os.path.getsize(path) > 1000, path


@pytest.fixture(scope='module')
def supernet():
    """A small real supernet (MobileNetV2-0.5x, 32 px): its unit names,
    candidate widths and FLOPs table."""
    architecture, mutator = build_supernet('mobilenet_v2')
    table = FlopsTable.from_model(architecture, mutator, (1, 3, 32, 32))
    names = table.unit_names
    return mutator, table, names, mutator.candidate_widths(names)


def sampled(table, candidates, count, seed=0):
    """``count`` uniform subnets as (width vector, FLOPs, params)."""
    rng = random.Random(seed)
    vectors = np.stack([uniform_widths(candidates, rng) for _ in range(count)])
    return vectors, table.flops_batch(vectors), table.params_batch(vectors)


def search_records(table, candidates, count=24):
    """Candidate records as the search writes them (candidates.json), with
    the table's FLOPs and params; the score rises with FLOPs, plus noise."""
    vectors, flops, params = sampled(table, candidates, count)
    rng = np.random.default_rng(0)
    scores = 60 + 30 * flops / flops.max() + rng.normal(0, 3, count)
    origins = ['recorded', 'prior', 'mutation', 'crossover']
    return [
        dict(id=i, epoch=i // 8, origin=origins[i % 4], flops=float(f),
             params=float(p), score=float(s),
             widths=[int(w) for w in v])
        for i, (v, f, p, s) in enumerate(zip(vectors, flops, params, scores))
    ]


def write_scalars(work_dir, iterations=60, interval=10, val_every=20):
    """Scalars as mmengine's LocalVisBackend writes them for a PSENet
    training run: per logged iteration the subnets' losses, per validation
    the max and min subnets' top-1."""
    backend = LocalVisBackend(
        str(work_dir / '20240101_000000' / 'vis_data'))
    for step in range(interval, iterations + 1, interval):
        backend.add_scalars(
            {'loss': 2.0 / step, 'max.ce': 1.5 / step, 'min.ce': 2.5 / step,
             'rand2.ce': 2.0 / step, 'epoch': 1 + step // val_every,
             'iter': step}, step=step)
        if step % val_every == 0:
            backend.add_scalars(
                {'max_subnet.accuracy/top1': 50 + step / 2,
                 'min_subnet.accuracy/top1': 40 + step / 2},
                step=step // val_every)
    backend.close()


def test_unit_labels_drop_mmrazor_suffix_and_backbone_prefix():
    assert unit_label('backbone.layer2.0.conv.0.conv_(0, 144)_144') == \
        'layer2.0.conv.0'
    assert unit_label('neck.fc_(0, 64)_64') == 'neck.fc'


def test_pareto_front_is_the_best_score_for_at_most_those_flops():
    records = [dict(flops=f, score=s) for f, s in
               [(3, 80), (1, 70), (2, 65), (2, 75), (4, 79), (5, 90)]]
    front = pareto_front(records)
    assert [(r['flops'], r['score']) for r in front] == \
        [(1, 70), (2, 75), (3, 80), (5, 90)]
    for record in records:
        better = [r for r in front if r['flops'] <= record['flops']]
        assert max(r['score'] for r in better) >= record['score']


def test_widths_plot_draws_a_subnet_against_the_supernet(supernet, tmp_path):
    _, table, names, candidates = supernet
    widths = [int(w) for w in sampled(table, candidates, 1)[0][0]]
    path = widths_plot(str(tmp_path / 'widths.png'), names, widths,
                       [c[-1] for c in candidates],
                       [c[0] for c in candidates], title='a subnet')
    assert_png(path)
    with pytest.raises(ValueError, match='units'):
        widths_plot(str(tmp_path / 'bad.png'), names, widths[:-1],
                    [c[-1] for c in candidates])


def test_search_plot_draws_candidates_front_and_references(supernet,
                                                           tmp_path):
    _, table, names, candidates = supernet
    archive = search_records(table, candidates)
    max_w = np.array([[c[-1] for c in candidates]], float)
    min_w = np.array([[c[0] for c in candidates]], float)
    references = dict(
        max=dict(flops=float(table.flops_batch(max_w)[0]), score=95.0),
        min=dict(flops=float(table.flops_batch(min_w)[0]), score=55.0))
    flops = [c['flops'] / 1e6 for c in archive]
    evaluated = [
        dict(kind='max', flops=references['max']['flops'], top1=94.0),
        dict(kind='best_subnet.json', flops=archive[0]['flops'], top1=80.0),
        dict(kind='random0', flops=archive[1]['flops'], top1=70.0)
    ]
    for kwargs in (dict(), dict(references=references,
                                flops_range=(min(flops), max(flops)),
                                evaluated=evaluated)):
        path = str(tmp_path / f'search{len(kwargs)}.png')
        assert_png(search_plot(path, archive, **kwargs))
    with pytest.raises(ConfigError, match='no scored candidate'):
        search_plot(str(tmp_path / 'none.png'),
                    [dict(archive[0], score=None)])


def test_training_plot_reads_mmengine_scalars(tmp_path):
    write_scalars(tmp_path)
    scalars = read_scalars(str(tmp_path))
    assert [e['step'] for e in scalars if 'max.ce' in e] == \
        [10, 20, 30, 40, 50, 60]
    assert_png(training_plot(str(tmp_path / 'training.png'), scalars))
    # Without validation scalars: the loss panel alone.
    losses = [e for e in scalars if 'loss' in e]
    assert_png(training_plot(str(tmp_path / 'losses.png'), losses))
    with pytest.raises(ConfigError, match='no max.ce, min.ce'):
        training_plot(str(tmp_path / 'x.png'), [dict(step=1, loss=1.0)])
    with pytest.raises(ConfigError, match='scalars.json'):
        read_scalars(str(tmp_path / 'empty'))


def test_run_pictures_draws_the_three_pictures_of_a_demo_work_dir(
        supernet, tmp_path):
    """A demo work dir's files, in the formats the tools write them."""
    _, table, names, candidates = supernet
    archive = search_records(table, candidates)
    best = max(archive, key=lambda c: c['score'])
    widths = dict(zip(names, best['widths']))
    (tmp_path / 'search').mkdir()
    atomic_write_json(
        str(tmp_path / 'search' / 'best_subnet.json'),
        subnet_record(widths, table, score=best['score'],
                      score_key='accuracy/top1', flops_convention='all',
                      constraints_range=dict(flops=[1.0, 2.0])))
    atomic_write_json(str(tmp_path / 'search' / 'candidates.json'), archive)
    subnets = []
    for kind, w in (('max', [c[-1] for c in candidates]),
                    ('min', [c[0] for c in candidates]),
                    ('best_subnet.json', best['widths'])):
        choice = dict(zip(names, w))
        subnets.append(dict(kind=kind, flops=table.flops(choice),
                            params=table.params(choice), top1=80.0,
                            widths=w))
    atomic_write_json(str(tmp_path / 'eval_subnets.json'),
                      dict(units=names, subnets=subnets))
    write_scalars(tmp_path / 'supernet')
    drawn = run_pictures(str(tmp_path))
    assert sorted(os.path.basename(p) for p in drawn.values()) == \
        sorted(PICTURES)
    for path in drawn.values():
        assert os.path.dirname(path) == str(tmp_path / 'pictures')
        assert_png(path)
    with pytest.raises(ConfigError, match='tools/demo.py'):
        run_pictures(str(tmp_path / 'not_a_run'))


def test_missing_matplotlib_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    with pytest.raises(ConfigError, match='pip install matplotlib'):
        require_matplotlib()


def _summary_tool():
    spec = importlib.util.spec_from_file_location(
        'subnet_summary', os.path.join(REPO, SUMMARY_TOOL))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('convention', ['all', 'conv_linear'])
def test_summary_rows_add_up_to_the_flops_table(supernet, convention):
    _, table, names, candidates = supernet
    table = table.with_convention(convention)
    layer_rows = _summary_tool().layer_rows
    vectors = sampled(table, candidates, 3)[0]
    for vector in vectors:
        widths = dict(zip(names, (int(w) for w in vector)))
        rows = layer_rows(table, widths)
        assert sum(r['flops'] for r in rows) == \
            pytest.approx(table.flops(widths), rel=1e-12)
        assert sum(r['params'] for r in rows) == \
            pytest.approx(table.params(widths), rel=1e-12)
        # The first convolution keeps the width of the first unit.
        assert rows[0]['out'] == widths[names[0]]


def test_summary_tool_prints_the_flops_table_numbers(tmp_path):
    """The tool on the demo config and an mmrazor fix_subnet.yaml: its
    table and totals are FlopsTable's, and it draws the width plot."""
    model = MODELS.build(Config.fromfile(os.path.join(REPO, DEMO)).model)
    mutator, table = model.mutator, model.flops_table
    names = table.unit_names
    vector = uniform_widths(mutator.candidate_widths(names),
                            random.Random(1))
    widths = dict(zip(names, (int(w) for w in vector)))
    save_subnet(str(tmp_path / 'subnet.json'),
                str(tmp_path / 'fix_subnet.yaml'), mutator, widths, table)
    out = tmp_path / 'out'
    result = run_python([SUMMARY_TOOL, DEMO, str(tmp_path /
                                                 'fix_subnet.yaml'),
                         '--out-dir', str(out)], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['totals']['subnet'] == pytest.approx(
        dict(flops=table.flops(widths), params=table.params(widths)))
    assert sum(r['flops'] for r in summary['layers']) == \
        pytest.approx(table.flops(widths))
    assert [u['width'] for u in summary['units']] == \
        [widths[n] for n in names]
    total = next(line for line in result.stdout.splitlines()
                 if line.startswith('total'))
    assert total.split()[1:] == [f'{table.flops(widths) / 1e6:.4f}',
                                 f'{table.params(widths):.0f}']
    assert_png(out / 'widths.png')


def test_summary_tool_bad_subnet_file_is_one_error_line(tmp_path):
    path = tmp_path / 'subnet.json'
    path.write_text('{"widths": {"conv1": 8}}')  # no format, no units
    result = run_python([SUMMARY_TOOL, DEMO, str(path)], timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f'error: subnet file {str(path)!r}'), \
        result.stderr
    assert 'accepted formats' in lines[-1]
    assert 'Traceback' not in result.stderr
