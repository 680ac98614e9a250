"""Unit widths (channel numbers) of any one-shot channel supernet.

The plugin's search, FLOPs table and subnet files speak in widths: how many
channels each channel unit keeps. The PSE mutator converts widths and
choices itself (:class:`~.mutator.PSEChannelMutator`); mmrazor's
``OneShotChannelMutator`` (AutoSlim, BigNAS-style channel supernets) holds
choices only, ratios or channel numbers, whose widths its units compute by
their own rounding. :class:`ChannelWidths` gives both the same interface,
so that :class:`~psenet_plugin.engine.PriorEvolutionSearchLoop` and
:class:`~.estimator.SubnetFlopsEstimator` work on either.
"""
import weakref
from typing import Dict, List, Optional, Sequence

from mmengine.model import is_model_wrapper

from ..errors import ConfigError
from ..structures import FlopsTable
from .mutator import PSEChannelMutator

Widths = Dict[str, int]

# FLOPs tables of supernets that do not build their own (by algorithm).
_TABLES: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


class ChannelWidths:
    """Widths <-> choices of a one-shot channel mutator.

    Args:
        mutator: a ``PSEChannelMutator``, or an mmrazor channel mutator
            whose mutable units have ``candidate_choices`` and a
            ``current_choice`` (``OneShotChannelMutator`` with
            ``OneShotMutableChannelUnit``, as AutoSlim builds it).
    """

    def __init__(self, mutator) -> None:
        self.mutator = mutator
        self.is_pse = isinstance(mutator, PSEChannelMutator)
        units = list(getattr(mutator, 'mutable_units', None) or [])
        if not units or not all(
                hasattr(u, 'candidate_choices') and hasattr(
                    u, 'mutable_channel') for u in units):
            raise ConfigError(
                f'model.mutator: {type(mutator).__name__} has no one-shot '
                'channel units (candidate choices per unit); accepted: '
                'PSEChannelMutator, or mmrazor\'s OneShotChannelMutator '
                '(AutoSlim, BigNAS-style channel supernets)')
        self.units = {u.name: u for u in units}
        self.unit_names = [u.name for u in units]
        #: unit -> {choice: width}, measured by the unit's own rounding
        self._widths: Dict[str, Dict] = {}
        if not self.is_pse:
            for unit in units:
                saved = unit.current_choice
                found = {}
                for choice in unit.candidate_choices:
                    unit.current_choice = choice
                    found[choice] = int(
                        unit.mutable_channel.activated_channels)
                unit.current_choice = saved
                self._widths[unit.name] = found

    def _check_names(self, names) -> None:
        unknown = sorted(set(names) - set(self.units))
        if unknown:
            raise ConfigError(
                f'the subnet names {len(unknown)} unknown unit(s): '
                f'{unknown[:5]}{" ..." if len(unknown) > 5 else ""}; this '
                f'model\'s units are {self.unit_names[:5]} ...')

    def candidate_widths(self, names: Optional[Sequence[str]] = None
                         ) -> List[List[int]]:
        """Each named unit's distinct candidate widths, ascending."""
        names = self.unit_names if names is None else list(names)
        if self.is_pse:
            return self.mutator.candidate_widths(names)
        self._check_names(names)
        return [sorted(set(self._widths[n].values())) for n in names]

    def width_of(self, name: str, choice) -> int:
        """The channels unit ``name`` keeps for ``choice`` (a candidate
        choice, or a channel number one stands for)."""
        if self.is_pse:
            return self.mutator.widths_of({name: choice})[name]
        self._check_names([name])
        widths = self._widths[name]
        if choice in widths and not isinstance(choice, bool) and (
                isinstance(choice, float) or self.units[name].is_num_mode):
            return widths[choice]
        if isinstance(choice, int) and choice in widths.values():
            return choice
        raise ConfigError(
            f'unit {name!r}: choice {choice!r} is not a candidate; '
            f'accepted: one of the candidate choices '
            f'{sorted(set(widths))} or the channel numbers they stand for '
            f'{sorted(set(widths.values()))}')

    def widths_of(self, choices: Dict) -> Widths:
        """Unit name -> channels of a (possibly partial) subnet."""
        if self.is_pse:
            return self.mutator.widths_of(choices)
        return {name: self.width_of(name, c) for name, c in choices.items()}

    def choices_of(self, widths: Widths) -> Dict:
        """Unit name -> the candidate choice that keeps that many
        channels."""
        if self.is_pse:
            return self.mutator.choices_of(widths)
        choices = {}
        for name, width in widths.items():
            self.width_of(name, int(width))  # refuses unknown widths
            choices[name] = min(c for c, w in self._widths[name].items()
                                if w == int(width))
        return choices

    @property
    def current_widths(self) -> Widths:
        if self.is_pse:
            return self.mutator.current_widths
        return {
            name: int(unit.mutable_channel.activated_channels)
            for name, unit in self.units.items()
        }

    def set_widths(self, widths: Widths) -> None:
        """Set the units named in ``widths`` to those channel numbers."""
        self.mutator.set_choices(self.choices_of(widths))


def channel_supernet(model, what: str = 'model'):
    """The algorithm of ``model`` (unwrapped) if it has a one-shot channel
    mutator, else a :class:`ConfigError` naming ``what``."""
    model = model.module if is_model_wrapper(model) else model
    mutator = getattr(model, 'mutator', None)
    if mutator is None or not hasattr(model, 'architecture'):
        raise ConfigError(
            f'{what}: {type(model).__name__} is not a one-shot channel '
            'supernet (an algorithm with `architecture` and a channel '
            '`mutator`); accepted: PSENet, or mmrazor\'s AutoSlim (any '
            'algorithm with a OneShotChannelMutator)')
    ChannelWidths(mutator)  # refuses mutators without channel units
    return model


def demo_input_shape(mutator, default=(1, 3, 224, 224)) -> tuple:
    """(1, C, H, W) of the mutator's tracer demo input."""
    parse_cfg = getattr(mutator, 'parse_cfg', None)
    shape = parse_cfg.get('demo_input', default) if isinstance(
        parse_cfg, dict) else default
    if isinstance(shape, dict):
        shape = shape.get('input_shape', default)
    return tuple(shape)


def flops_table_of(model, input_shape: Optional[Sequence[int]] = None
                   ) -> FlopsTable:
    """The exact FLOPs table of a one-shot channel supernet: PSENet's own
    (at its ``flops_input_shape`` unless ``input_shape`` is given), else
    one built once per model at ``input_shape`` or the mutator's demo
    input."""
    model = channel_supernet(model)
    if input_shape is None and hasattr(model, 'flops_table'):
        return model.flops_table
    shape = tuple(input_shape or demo_input_shape(model.mutator))
    tables = _TABLES.setdefault(model, {})
    if shape not in tables:
        tables[shape] = FlopsTable.from_model(model.architecture,
                                              model.mutator, shape)
    return tables[shape]
