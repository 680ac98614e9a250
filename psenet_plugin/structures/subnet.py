"""Subnet files: what a search finds and what export and fine-tuning read.

Three formats, all read by :func:`load_subnet`:

* ``subnet.json`` (this plugin): ``{"format": "psenet-subnet/1",
  "widths": {unit: channels}, "flops": ..., "params": ..., ...}``;
* ``fix_subnet.yaml`` (mmrazor's ``'mutator'`` mode): the mutator config
  with every unit's ``choice`` (as channel numbers), which mmrazor's
  ``sub_model(cfg, fix_subnet, mode='mutator')`` and ``load_fix_subnet``
  load into a static pruned model;
* mmrazor's ``'mutable'`` mode (read only): ``{mutable name: {chosen:
  channels}}``, what mmrazor's ``EvolutionSearchLoop`` writes as
  ``best_fix_subnet.yaml`` and ``AutoSlimGreedySearchLoop`` as
  ``FLOPS_<n>M.yaml``. Its names (``mutator.units.<i>.mutable_channel``)
  are positions in the mutator that searched, so it is resolved against
  the supernet's mutator (the same config builds the same units).

All are plain data: the files this module writes hold only mappings,
lists, strings and numbers (``yaml.safe_load`` reads them), and subnet files
are read with a safe loader (:mod:`psenet_plugin.compat.safe_yaml`): a
downloaded subnet file cannot run code.
"""
import copy
import os.path as osp
import re
from collections.abc import Mapping
from typing import Any, Dict, Optional

import yaml
from mmengine import fileio

from ..errors import ConfigError, CorruptFileError
from .io import atomic_write_json, atomic_write_text

#: The extensions of subnet files (never a pickle: loading one runs code).
SUBNET_EXTENSIONS = ('.json', '.yaml', '.yml')

SUBNET_FORMAT = 'psenet-subnet/1'

#: A mutable's name in mmrazor's ``'mutable'``-mode subnet files: unit i of
#: the algorithm's mutator (a prefix where the algorithm was inside
#: another model).
MUTABLE_KEY = re.compile(r'(?:^|\.)mutator\.units\.(\d+)\.mutable_channel$')


def subnet_record(widths: Dict[str, int], table=None, **extra) -> Dict:
    """The JSON record of a subnet (widths, FLOPs and params if a table is
    given, and anything in ``extra``)."""
    record = dict(format=SUBNET_FORMAT)
    if table is not None:
        record['flops'] = table.flops(widths)
        record['params'] = table.params(widths)
    record.update(extra)
    record['widths'] = {name: int(w) for name, w in widths.items()}
    return record


def plain_data(obj: Any, key: str = '') -> Any:
    """``obj`` as plain data: mappings (``ConfigDict`` too) as dicts with
    string keys, tuples as lists, NumPy scalars as numbers.

    Raises:
        TypeError: ``obj`` holds something else (named by its key path).
    """
    if isinstance(obj, Mapping):
        return {str(k): plain_data(v, f'{key}.{k}' if key else str(k))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_data(v, f'{key}[{i}]') for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, 'item') and callable(obj.item):  # numpy/torch scalars
        return plain_data(obj.item(), key)
    raise TypeError(f'{key or "value"}: {type(obj).__name__} is not plain '
                    'data (mapping, list, string, number, bool, None)')


def fix_subnet_config(mutator, widths: Dict[str, int]) -> Dict:
    """mmrazor's ``'mutator'``-mode subnet config: the mutator config with
    every prunable unit's choice, as plain data (dicts, lists, strings,
    numbers). The choice is the channel number for PSE units (which take
    both), the candidate choice (e.g. a ratio) for mmrazor's units (whose
    ``OneShotMutableChannelUnit`` accepts nothing else)."""
    from ..models.channel_widths import ChannelWidths
    view = ChannelWidths(mutator)
    view.widths_of(widths)  # validates names and widths
    choices = {name: int(w) for name, w in widths.items()} if view.is_pse \
        else view.choices_of(widths)
    template = mutator.config_template(with_unit_init_args=True)
    template = copy.deepcopy(template)
    # Scoped, so that it builds whatever the caller's default scope is.
    template['type'] = 'mmrazor.' + template['type']
    if isinstance(template.get('parse_cfg'), dict):
        template['parse_cfg'].setdefault('_scope_', 'mmrazor')
    for name, unit in template['channel_unit_cfg']['units'].items():
        if name in choices:
            unit['choice'] = choices[name]
    return plain_data(template)


def dump_fix_subnet(mutator, widths: Dict[str, int]) -> str:
    """:func:`fix_subnet_config` as plain YAML text (no Python tags)."""
    return yaml.safe_dump(
        fix_subnet_config(mutator, widths),
        default_flow_style=False,
        sort_keys=False)


def save_subnet(subnet_path: str, fix_subnet_path: str, mutator,
                widths: Dict[str, int], table=None, **extra) -> None:
    """Write a subnet as ``subnet.json`` and ``fix_subnet.yaml`` files
    (atomically)."""
    atomic_write_json(subnet_path, subnet_record(widths, table, **extra))
    atomic_write_text(fix_subnet_path, dump_fix_subnet(mutator, widths))


def read_subnet_file(path: str) -> Dict[str, Any]:
    """Read a subnet file of any format, safely; return unit -> choice
    (channels, or a ratio in an mmrazor file; in a ``'mutable'``-mode file
    the mutable's name, ``mutator.units.<i>.mutable_channel``), not yet
    checked against a model (:func:`load_subnet` does that).

    Raises:
        ConfigError: the file is missing, not a .json/.yaml/.yml file, or
            of an unknown format.
        CorruptFileError: the file cannot be parsed, or holds a YAML tag
            that names Python code.
    """
    if not osp.isfile(path):
        raise ConfigError(f'subnet file {path!r} does not exist')
    if osp.splitext(path)[1].lower() not in SUBNET_EXTENSIONS:
        raise ConfigError(f'subnet file {path!r}: accepted extensions are '
                          f'{", ".join(SUBNET_EXTENSIONS)}')
    try:
        data = fileio.load(path)
    except CorruptFileError:
        raise
    except Exception as error:
        reason = ' '.join(str(error).split())
        raise CorruptFileError(f'subnet file {path!r} cannot be read: '
                               f'{reason}') from None
    choices: Optional[Dict] = None
    if isinstance(data, dict) and data.get('format') == SUBNET_FORMAT:
        choices = data.get('widths')
    elif isinstance(data, dict) and isinstance(
            data.get('channel_unit_cfg'), dict):
        units = data['channel_unit_cfg'].get('units')
        choices = {
            name: unit['choice']
            for name, unit in units.items()
            if isinstance(unit, dict) and 'choice' in unit
        } if isinstance(units, dict) else None
    elif isinstance(data, dict) and data and all(
            isinstance(v, dict) and 'chosen' in v for v in data.values()):
        choices = {str(name): v['chosen'] for name, v in data.items()}
    if not choices or not isinstance(choices, dict):
        raise ConfigError(
            f'subnet file {path!r}: accepted formats are {SUBNET_FORMAT!r} '
            '(subnet.json), mmrazor\'s mutator-mode config with unit '
            'choices (fix_subnet.yaml) and mmrazor\'s mutable-mode '
            '{name: {chosen: channels}} (best_fix_subnet.yaml of '
            'EvolutionSearchLoop, FLOPS_<n>M.yaml of '
            'AutoSlimGreedySearchLoop)')
    return choices


def _unit_names(path: str, choices: Dict[str, Any], mutator) -> Dict:
    """The choices of a ``'mutable'``-mode file by unit name: mmrazor names
    unit i's mutable ``mutator.units.<i>.mutable_channel``. Units the
    mutator does not let vary (kept whole) are left out."""
    if not any(MUTABLE_KEY.search(name) for name in choices):
        return choices
    units = list(mutator.units)
    named = {}
    for key, choice in choices.items():
        match = MUTABLE_KEY.search(key)
        index = int(match.group(1)) if match else None
        if index is None or index >= len(units):
            raise ConfigError(
                f'subnet file {path!r}: {key!r} is not a channel unit of '
                f'this model (it has {len(units)} units, named '
                f'mutator.units.<0..{len(units) - 1}>.mutable_channel in '
                'mmrazor\'s mutable-mode files); was it searched on another '
                'supernet?')
        unit = units[index]
        if getattr(unit, 'is_mutable', True):
            named[unit.name] = choice
    return named


def load_subnet(path: str, mutator) -> Dict[str, int]:
    """Read a subnet file of any format (:func:`read_subnet_file`);
    return unit -> channels.

    Raises:
        ConfigError: as :func:`read_subnet_file`, or the file names units
            this model does not have (or lacks some of its units).
    """
    from ..models.channel_widths import ChannelWidths
    view = ChannelWidths(mutator)
    choices = _unit_names(path, read_subnet_file(path), mutator)
    expected = set(view.unit_names)
    unknown = sorted(set(choices) - expected)
    missing = sorted(expected - set(choices))
    if unknown or missing:
        raise ConfigError(
            f'subnet file {path!r} does not match this model: '
            f'{len(unknown)} unit(s) the model does not have {unknown[:4]}'
            f'{" ..." if len(unknown) > 4 else ""}, {len(missing)} unit(s) '
            f'of the model it does not give {missing[:4]}'
            f'{" ..." if len(missing) > 4 else ""}')
    return view.widths_of(choices)
