"""Pictures of a PSE-Net run, drawn from the files the run wrote.

* :func:`widths_plot`: per unit, the channels a subnet keeps against the
  supernet's (the max subnet's) and the min subnet's;
* :func:`search_plot`: the search's score against FLOPs for every evaluated
  candidate (``candidates.json``), its Pareto front, the FLOPs constraint,
  the max and min subnets as references (``references.json``) and, where
  given, the validation top-1 of the found, max, min and random subnets
  (``tools/eval_subnets.py``'s JSON);
* :func:`training_plot`: the training losses of the max and min subnets
  per iteration and their validation accuracy per validation
  (mmengine's ``<work_dir>/<timestamp>/vis_data/scalars.json``,
  :func:`read_scalars`);
* :func:`run_pictures`: the three of them for a ``tools/demo.py`` work dir.

Each writes one PNG atomically (a reader never sees half a file) with
matplotlib's Agg backend (no display needed). matplotlib is a dependency of
psenet_plugin (``pip install -e .`` installs it); without it the functions
raise one :class:`~psenet_plugin.errors.ConfigError` saying so.
"""
import glob
import json
import os.path as osp
import re
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from .errors import ConfigError, CorruptFileError
from .structures.io import atomic_path

#: Marker colours of the candidates by origin (those of the search loop's
#: ``pareto.png``).
ORIGIN_COLORS = (('prior', 'tab:blue'), ('uniform', 'tab:cyan'),
                 ('recorded', 'tab:red'), ('mutation', 'tab:orange'),
                 ('crossover', 'tab:purple'))
#: The files :func:`run_pictures` writes, by picture.
PICTURES = ('widths.png', 'search.png', 'training.png')

_UNIT_SUFFIX = re.compile(r'_\(\d+, ?\d+\)_\d+$')


def require_matplotlib() -> None:
    """Raise one clear :class:`ConfigError` unless matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            'the pictures are drawn with `matplotlib`, which is not '
            'installed: pip install matplotlib (a dependency of '
            'psenet_plugin: pip install -e . installs it)') from None


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or one clear error."""
    require_matplotlib()
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> str:
    plt = _pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format='png')
    finally:
        plt.close(fig)
    return path


def unit_label(name: str) -> str:
    """A short label for a unit: mmrazor's ``'backbone.layer2.0.conv.0.conv_
    (0, 144)_144'`` as ``'layer2.0.conv.0'``."""
    name = _UNIT_SUFFIX.sub('', name)
    if name.startswith('backbone.'):
        name = name[len('backbone.'):]
    if name.endswith('.conv'):
        name = name[:-len('.conv')]
    return name


def pareto_front(records: Iterable[Dict], x: str = 'flops',
                 y: str = 'score') -> List[Dict]:
    """The records no other beats: the best ``y`` for at most that ``x``,
    in ascending ``x``."""
    front, best = [], -float('inf')
    for record in sorted(records, key=lambda r: (r[x], -r[y])):
        if record[y] > best:
            best = record[y]
            front.append(record)
    return front


# widths


def widths_plot(path: str,
                unit_names: Sequence[str],
                widths: Sequence[int],
                max_widths: Sequence[int],
                min_widths: Optional[Sequence[int]] = None,
                title: Optional[str] = None,
                label: str = 'subnet') -> str:
    """Bars of the channels per unit: the supernet's (max) in grey, the
    subnet's in colour, the min subnet's as a black tick; log scale, so that
    a stem of 48 and a last layer of 1920 channels both read.

    Args:
        path (str): the PNG to write.
        unit_names (Sequence[str]): the units, in network order.
        widths (Sequence[int]): the subnet's channels per unit.
        max_widths (Sequence[int]): the supernet's channels per unit.
        min_widths (Sequence[int], optional): the min subnet's. Defaults
            to None (not drawn).
        title (str, optional): the figure's title. Defaults to None.
        label (str): the subnet's legend entry. Defaults to ``'subnet'``.

    Returns:
        str: ``path``.
    """
    sizes = {len(widths), len(max_widths)}
    if min_widths is not None:
        sizes.add(len(min_widths))
    if sizes != {len(unit_names)}:
        raise ValueError(f'widths_plot: {len(unit_names)} units but widths '
                         f'of lengths {sorted(sizes)}')
    plt = _pyplot()
    x = np.arange(len(unit_names))
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    ax.bar(x, max_widths, width=0.8, color='0.85', label='supernet (max)')
    ax.bar(x, widths, width=0.55, color='tab:blue', label=label)
    if min_widths is not None:
        ax.hlines(min_widths, x - 0.4, x + 0.4, color='black', lw=1.2,
                  label='min subnet')
    for xi, w, m in zip(x, widths, max_widths):
        ax.annotate(f'{100 * w / m:.0f}', (xi, m), xytext=(0, 1),
                    textcoords='offset points', ha='center', va='bottom',
                    fontsize=5.5, color='tab:blue')
    ax.set_yscale('log')
    ax.set_ylim(top=max(max_widths) * 2.2)
    ax.set_xticks(x)
    ax.set_xticklabels([unit_label(n) for n in unit_names], rotation=60,
                       ha='right', fontsize=6.5)
    ax.set_xlim(-0.6, len(x) - 0.4)
    ax.set_ylabel('channels (numbers: % of max)', fontsize=8)
    ax.tick_params(axis='y', labelsize=7)
    ax.legend(fontsize=7, ncol=3, loc='upper left', frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


# search


def search_plot(path: str,
                archive: Sequence[Dict],
                references: Optional[Dict[str, Dict]] = None,
                flops_range: Optional[Sequence[float]] = None,
                evaluated: Optional[Sequence[Dict]] = None,
                flops_convention: str = 'all',
                score_key: str = 'accuracy/top1') -> str:
    """The search's score against FLOPs (log scale): every candidate by
    origin, the Pareto front, the found (best) candidate, the FLOPs
    constraint and the max and min subnets scored like the candidates;
    with ``evaluated``, the validation top-1 of the found, max, min and
    random subnets as hollow markers.

    Args:
        path (str): the PNG to write.
        archive (Sequence[dict]): the candidates (``candidates.json``:
            ``flops``, ``score``, ``origin`` each).
        references (dict, optional): ``{'max': {flops, score}, 'min': ...}``
            (``references.json``). Defaults to None.
        flops_range (Sequence[float], optional): the constraint in MFLOPs
            (``constraints_range.flops``). Defaults to None.
        evaluated (Sequence[dict], optional): ``subnets`` of
            ``tools/eval_subnets.py``'s JSON (``kind``, ``flops``,
            ``top1``). Defaults to None.
        flops_convention (str): named on the x axis. Defaults to ``'all'``.
        score_key (str): the score's metric, named on the y axis. Defaults
            to ``'accuracy/top1'``.

    Returns:
        str: ``path``.
    """
    archive = [c for c in archive if c.get('score') is not None]
    if not archive:
        raise ConfigError(f'search_plot({path!r}): no scored candidate to '
                          'draw')
    plt = _pyplot()
    zoom = flops_range is not None
    fig, axes = plt.subplots(
        1, 2 if zoom else 1, figsize=(9.5 if zoom else 6, 4), dpi=100,
        squeeze=False, gridspec_kw=dict(width_ratios=[3, 2] if zoom else [1]))
    for i, ax in enumerate(axes.flat):
        _search_panel(ax, archive, references if i == 0 else None,
                      flops_range, evaluated, legend=i == len(axes.flat) - 1)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].set_xscale('log')
    axes[0, 0].set_xlabel(f'MFLOPs (log scale; {flops_convention!r} '
                          'convention)', fontsize=8)
    axes[0, 0].set_ylabel(f'{score_key} (%)', fontsize=8)
    if zoom:
        low, high = flops_range
        pad = 0.15 * (high - low)
        inside = [c['score'] for c in archive] + [
            r['top1'] for r in evaluated or ()
            if low - pad <= r['flops'] / 1e6 <= high + pad]
        spread = max(inside) - min(inside)
        ax = axes[0, 1]
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(min(inside) - 0.05 * spread - 0.1,
                    max(inside) + 0.05 * spread + 0.1)
        ax.set_xlabel('MFLOPs, the constraint\'s range', fontsize=8)
    fig.suptitle('filled: search score on images held out of training; '
                 'hollow: validation (never seen by the search)',
                 fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _search_panel(ax, archive, references, flops_range, evaluated,
                  legend) -> None:
    if flops_range is not None:
        ax.axvspan(flops_range[0], flops_range[1], alpha=0.12,
                   color='tab:green', label='FLOPs constraint')
    colors = dict(ORIGIN_COLORS)
    origins = list(colors) + sorted(
        {c.get('origin', '?') for c in archive} - set(colors))
    for origin in origins:
        points = [(c['flops'] / 1e6, c['score']) for c in archive
                  if c.get('origin', '?') == origin]
        if points:
            ax.scatter(*zip(*points), s=10, color=colors.get(origin, '0.5'),
                       label=f'{origin} ({len(points)})', zorder=3)
    front = pareto_front(archive)
    ax.step([c['flops'] / 1e6 for c in front], [c['score'] for c in front],
            where='post', color='black', lw=0.9, label='Pareto front',
            zorder=2)
    best = max(archive, key=lambda c: c['score'])
    ax.scatter([best['flops'] / 1e6], [best['score']], s=90,
               facecolors='none', edgecolors='black', lw=1.2, zorder=4,
               label='found (best score)')
    for kind, ref in (references or {}).items():
        ax.scatter([ref['flops'] / 1e6], [ref['score']], marker='*', s=90,
                   color='black' if kind == 'max' else '0.4', zorder=4)
        ax.annotate(f'{kind} subnet', (ref['flops'] / 1e6, ref['score']),
                    fontsize=7, xytext=(5 if kind == 'min' else -5, -4),
                    textcoords='offset points',
                    ha='left' if kind == 'min' else 'right', va='top')
    kinds = {'max': 'black', 'min': '0.4'}
    shown = set()
    for record in evaluated or ():
        kind = record['kind']
        if kind.startswith('random'):
            name, color, marker = 'random in range', 'tab:gray', 'o'
        elif kind in kinds:
            name, color, marker = f'{kind} subnet', kinds[kind], '*'
        else:
            name, color, marker = 'found subnet', 'tab:red', 'D'
        ax.scatter([record['flops'] / 1e6], [record['top1']],
                   marker=marker, s=40 if marker != '*' else 80,
                   facecolors='none', edgecolors=color, lw=1, zorder=4,
                   label=None if name in shown else f'{name}, validation')
        shown.add(name)
    if legend:
        ax.legend(fontsize=6.5, loc='center left', bbox_to_anchor=(1.02, 0.5),
                  frameon=False)


# training


def read_scalars(work_dir: str) -> List[Dict]:
    """The scalars mmengine's ``LocalVisBackend`` logged for a training run
    in ``work_dir``: the lines of every ``<timestamp>/vis_data/
    scalars.json``, oldest run first (a resumed run adds a folder).

    Raises:
        ConfigError: there is no such file.
        CorruptFileError: a line is not JSON.
    """
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise ConfigError(
            f'{work_dir!r} holds no <timestamp>/vis_data/scalars.json: not '
            'the work dir of a training run, or one without mmengine\'s '
            'LocalVisBackend (vis_backends of the config\'s visualizer)')
    entries = []
    for file in files:
        with open(file) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    raise CorruptFileError(
                        f'{file}, line {number}: not JSON (was the run '
                        'killed while writing it?)') from None
    return entries


def _series(entries: Sequence[Dict], key: str) -> np.ndarray:
    """(step, value) rows of ``key``, by step; a step logged twice (a run
    resumed from an earlier checkpoint) keeps its last value."""
    by_step = {e['step']: e[key] for e in entries if key in e and 'step' in e}
    return np.array(sorted(by_step.items()), dtype=float).reshape(-1, 2)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists)."""
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    ends = np.arange(1, len(values) + 1)
    return (cumsum[ends] - cumsum[ends - counts]) / counts


def training_plot(path: str,
                  scalars: Sequence[Dict],
                  subnets: Sequence[str] = ('max', 'min'),
                  loss: str = 'ce',
                  score_key: str = 'accuracy/top1',
                  smooth: int = 5) -> str:
    """Training curves of ``subnets``: left, their losses (``<kind>.<loss>``,
    as ``PSENet`` logs them) per iteration, raw and as a moving average;
    right, their validation score (``<kind>_subnet.<score_key>``, as
    mmrazor's ``SubnetValLoop`` logs it) per validation, where logged.

    Args:
        path (str): the PNG to write.
        scalars (Sequence[dict]): mmengine's scalars (:func:`read_scalars`).
        subnets (Sequence[str]): the subnet kinds. Defaults to
            ``('max', 'min')``.
        loss (str): the loss name after ``<kind>.``. Defaults to ``'ce'``.
        score_key (str): the validation metric. Defaults to
            ``'accuracy/top1'``.
        smooth (int): the moving average's window in logged points.
            Defaults to 5.

    Returns:
        str: ``path``.

    Raises:
        ConfigError: no loss of any of ``subnets`` was logged.
    """
    losses = {kind: _series(scalars, f'{kind}.{loss}') for kind in subnets}
    if not any(len(s) for s in losses.values()):
        logged = sorted({k for e in scalars for k in e})
        wanted = ', '.join(f'{kind}.{loss}' for kind in subnets)
        raise ConfigError(
            f'training_plot({path!r}): no {wanted} '
            f'in the scalars (logged: {", ".join(logged[:12]) or "nothing"}'
            f'{" ..." if len(logged) > 12 else ""}): not a PSENet training '
            'run?')
    scores = {
        kind: _series(scalars, f'{kind}_subnet.{score_key}')
        for kind in subnets
    }
    with_scores = any(len(s) for s in scores.values())
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if with_scores else 1,
                             figsize=(8 if with_scores else 5, 3.2), dpi=100,
                             squeeze=False)
    colors = dict(max='tab:blue', min='tab:orange')
    palette = iter(['tab:green', 'tab:purple', 'tab:brown', 'tab:pink'])
    colors.update({k: next(palette, 'tab:gray') for k in subnets
                   if k not in colors})
    ax = axes[0, 0]
    for kind, rows in losses.items():
        if len(rows):
            ax.plot(rows[:, 0], rows[:, 1], color=colors[kind], lw=0.6,
                    alpha=0.35)
            ax.plot(rows[:, 0], _smooth(rows[:, 1], smooth),
                    color=colors[kind], lw=1.5, label=f'{kind} subnet')
    ax.set_xlabel('iteration', fontsize=8)
    ax.set_ylabel(f'training loss ({loss}; line: mean of {smooth})',
                  fontsize=8)
    ax.legend(fontsize=7)
    if with_scores:
        ax = axes[0, 1]
        for kind, rows in scores.items():
            if len(rows):
                ax.plot(rows[:, 0], rows[:, 1], marker='o', ms=3,
                        color=colors[kind], label=f'{kind} subnet')
        by_epoch = any('epoch' in e for e in scalars)
        ax.set_xlabel('epoch' if by_epoch else 'iteration', fontsize=8)
        ax.set_ylabel(f'validation {score_key} (%)', fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


# a demo run


def _read_json(path: str):
    if not osp.isfile(path):
        raise ConfigError(f'{path!r} does not exist: pictures need a '
                          'finished run of tools/demo.py')
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        raise CorruptFileError(f'{path!r} is not JSON (was its writing '
                               'interrupted?)') from None


def run_pictures(work_dir: str, out_dir: Optional[str] = None
                 ) -> Dict[str, str]:
    """The three pictures of a ``tools/demo.py`` work dir: ``widths.png``
    (the found subnet against the supernet), ``search.png`` and
    ``training.png``, written to ``out_dir`` (default
    ``<work_dir>/pictures``).

    It reads ``search/best_subnet.json``, ``search/candidates.json``,
    ``search/references.json``, ``eval_subnets.json`` (units, max and min
    widths, validation top-1) and the supernet's scalars
    (``supernet/<timestamp>/vis_data/scalars.json``).

    Returns:
        dict: picture name (``'widths'``, ``'search'``, ``'training'``) ->
        path.
    """
    out_dir = out_dir or osp.join(work_dir, 'pictures')
    best = _read_json(osp.join(work_dir, 'search', 'best_subnet.json'))
    evaluated = _read_json(osp.join(work_dir, 'eval_subnets.json'))
    archive = _read_json(osp.join(work_dir, 'search', 'candidates.json'))
    references_path = osp.join(work_dir, 'search', 'references.json')
    references = _read_json(references_path) if osp.isfile(
        references_path) else None
    by_kind = {r['kind']: r for r in evaluated['subnets']}
    missing = [k for k in ('max', 'min') if k not in by_kind]
    if missing:
        raise ConfigError(
            f'{osp.join(work_dir, "eval_subnets.json")} has no '
            f'{" and ".join(missing)} subnet (run without --no-max-min)')
    units = evaluated['units']
    found = [best['widths'][name] for name in units]
    found_eval = by_kind.get('best_subnet.json', {})
    title = (f'found subnet: {best["flops"] / 1e6:.2f} MFLOPs '
             f'({100 * best["flops"] / by_kind["max"]["flops"]:.0f}% of '
             'max)')
    if 'top1' in found_eval:
        title += (f', validation top-1 {found_eval["top1"]:.1f}% (max '
                  f'{by_kind["max"]["top1"]:.1f}, min '
                  f'{by_kind["min"]["top1"]:.1f})')
    flops_range = (best.get('constraints_range') or {}).get('flops')
    return dict(
        widths=widths_plot(
            osp.join(out_dir, 'widths.png'), units, found,
            by_kind['max']['widths'], by_kind['min']['widths'], title,
            label='found subnet'),
        search=search_plot(
            osp.join(out_dir, 'search.png'), archive, references,
            flops_range, evaluated['subnets'],
            best.get('flops_convention', 'all'),
            best.get('score_key', 'accuracy/top1')),
        training=training_plot(
            osp.join(out_dir, 'training.png'),
            read_scalars(osp.join(work_dir, 'supernet'))))
