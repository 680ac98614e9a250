"""Subnet files: what a search finds and what export and fine-tuning read.

Two formats, both read by :func:`load_subnet`:

* ``subnet.json`` (this plugin): ``{"format": "psenet-subnet/1",
  "widths": {unit: channels}, "flops": ..., "params": ..., ...}``;
* ``fix_subnet.yaml`` (mmrazor's ``'mutator'`` mode): the mutator config
  with every unit's ``choice`` (as channel numbers), which mmrazor's
  ``sub_model(cfg, fix_subnet, mode='mutator')`` and ``load_fix_subnet``
  load into a static pruned model.
"""
import copy
import os.path as osp
from typing import Dict, Optional

from mmengine import fileio

from ..errors import ConfigError
from .io import atomic_write_json, atomic_write_text

SUBNET_FORMAT = 'psenet-subnet/1'


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


def fix_subnet_config(mutator, widths: Dict[str, int]) -> Dict:
    """mmrazor's ``'mutator'``-mode subnet config: the mutator config with
    every prunable unit's choice as a channel number."""
    mutator.widths_of(widths)  # validates names and widths
    template = mutator.config_template(with_unit_init_args=True)
    template = copy.deepcopy(template)
    # Scoped, so that it builds whatever the caller's default scope is.
    template['type'] = 'mmrazor.' + template['type']
    if isinstance(template.get('parse_cfg'), dict):
        template['parse_cfg'].setdefault('_scope_', 'mmrazor')
    for name, unit in template['channel_unit_cfg']['units'].items():
        if name in widths:
            unit['choice'] = int(widths[name])
    return template


def save_subnet(subnet_path: str, fix_subnet_path: str, mutator,
                widths: Dict[str, int], table=None, **extra) -> None:
    """Write a subnet as ``subnet.json`` and ``fix_subnet.yaml`` files
    (atomically)."""
    atomic_write_json(subnet_path, subnet_record(widths, table, **extra))
    atomic_write_text(
        fix_subnet_path,
        fileio.dump(fix_subnet_config(mutator, widths), file_format='yaml'))


def load_subnet(path: str, mutator) -> Dict[str, int]:
    """Read a subnet file of either format; return unit -> channels.

    Raises:
        ConfigError: the file is missing, of an unknown format, or names
            units this model does not have (or lacks some of its units).
    """
    if not osp.isfile(path):
        raise ConfigError(f'subnet file {path!r} does not exist')
    try:
        data = fileio.load(path)
    except Exception as error:
        raise ConfigError(f'subnet file {path!r} cannot be read: {error}')
    choices: Optional[Dict] = None
    if isinstance(data, dict) and data.get('format') == SUBNET_FORMAT:
        choices = data['widths']
    elif isinstance(data, dict) and 'channel_unit_cfg' in data:
        choices = {
            name: unit['choice']
            for name, unit in data['channel_unit_cfg'].get('units',
                                                           {}).items()
            if isinstance(unit, dict) and 'choice' in unit
        }
    if not choices:
        raise ConfigError(
            f'subnet file {path!r}: accepted formats are {SUBNET_FORMAT!r} '
            '(subnet.json) and mmrazor\'s mutator-mode config with unit '
            'choices (fix_subnet.yaml)')
    expected = set(mutator.choice_template)
    unknown = sorted(set(choices) - expected)
    missing = sorted(expected - set(choices))
    if unknown or missing:
        raise ConfigError(
            f'subnet file {path!r} does not match this model: '
            f'{len(unknown)} unit(s) the model does not have {unknown[:4]}'
            f'{" ..." if len(unknown) > 4 else ""}, {len(missing)} unit(s) '
            f'of the model it does not give {missing[:4]}'
            f'{" ..." if len(missing) > 4 else ""}')
    return mutator.widths_of(choices)
