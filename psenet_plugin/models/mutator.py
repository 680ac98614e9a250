"""The PSE channel mutator: mmrazor's ``OneShotChannelMutator`` plus a
parallel mode in which K subnets share one forward pass.

Single-subnet mode is the inherited one (``sample_choices``, ``set_choices``,
``current_choices``, ``set_max_choices``/``set_min_choices``,
``max_choices``/``min_choices``), so the mutator stands in wherever mmrazor
expects a ``OneShotChannelMutator`` (its loops, estimators, AutoSlim). It
validates what it is given: candidate choices that no unit can keep, unknown
unit names and non-candidate choices are errors that name the unit or config
key and what is accepted.

Parallel mode needs every layer that mixes samples (batch norm) to normalise
each group on its own: the mutator makes every ``BatchNorm2d`` and
``BatchNorm1d`` of the supernet a PSE batch norm (those of prunable units and
those with fixed channels alike) and refuses any other batch norm (e.g.
``SyncBatchNorm``), naming it.
"""
import contextlib
import copy
import numbers
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.model.utils import _BatchNormXd
from mmrazor.models.mutables import DerivedMutable
from mmrazor.models.mutators import OneShotChannelMutator
from mmrazor.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError
from .dynamic_ops import (PSE_NORMS, PSEBatchNorm1d, PSEBatchNorm2d,
                          PSEConv2d, PSELinear, _container)
from .mutables import PSEExpandedChannel, PSEMutableChannelUnit
from .parallel import GroupLayout, GroupStats, prefix_width

Subnet = Dict[str, float]

# Batch norms of fixed channels the mutator makes PSE batch norms.
_FREE_NORMS = {
    nn.BatchNorm2d: PSEBatchNorm2d,
    _BatchNormXd: PSEBatchNorm2d,
    nn.BatchNorm1d: PSEBatchNorm1d,
}


@MODELS.register_module()
class PSEChannelMutator(OneShotChannelMutator):
    """Channel mutator for PSE-Net.

    Args:
        channel_unit_cfg (dict): the channel unit type and its default
            arguments. Defaults to ``PSEMutableChannelUnit`` with AutoSlim's
            candidates: ratios 2/12 ... 12/12, widths divisible by 8.
        parse_cfg (dict): how to find the channel units. Defaults to
            mmrazor's ``ChannelAnalyzer`` with the ``FxTracer`` on a
            (1, 3, 224, 224) demo input.
    """

    def __init__(self,
                 channel_unit_cfg: Dict = dict(
                     type='PSEMutableChannelUnit',
                     default_args=dict(
                         candidate_choices=[i / 12 for i in range(2, 13)],
                         choice_mode='ratio',
                         divisor=8)),
                 parse_cfg: Dict = dict(
                     _scope_='mmrazor',
                     type='ChannelAnalyzer',
                     demo_input=(1, 3, 224, 224),
                     tracer_type='FxTracer'),
                 **kwargs) -> None:
        super().__init__(channel_unit_cfg, parse_cfg=parse_cfg, **kwargs)
        if not issubclass(self.unit_class, PSEMutableChannelUnit):
            raise ConfigError(
                'mutator.channel_unit_cfg.type: '
                f'{self.unit_class.__name__} has no parallel mode; accepted: '
                'PSEMutableChannelUnit or a subclass of it')
        for key, args in self._unit_args():
            _check_unit_args(key, args)
        self._parallel: Optional[List[Subnet]] = None
        self._analyzer = None
        #: name of a module -> per call of it in the traced graph, the
        #: (op, target) of the nodes that take its output; None without an
        #: fx graph (then every conv and linear masks its output).
        self._users: Optional[Dict[str, List[List[Tuple]]]] = None
        #: every PSE batch norm of the supernet
        self._norms: List[nn.Module] = []
        self._output_masks: Dict[str, bool] = {}
        #: ``mutable_units`` once preparation has made every layer dynamic
        self._mutable_units: Optional[List] = None

    # preparation

    def prepare_from_supernet(self, supernet: nn.Module) -> None:
        """Find the channel units of ``supernet`` and make it dynamic."""
        self._mutable_units = None
        try:
            super().prepare_from_supernet(supernet)
        except ConfigError:
            raise
        except Exception as error:
            raise ConfigError(self._trace_failure(supernet, error)) from error
        if not self.mutable_units:
            opaque = self._opaque_modules(supernet)
            backbone = getattr(supernet, 'backbone', None)
            raise ConfigError(
                f'the channel analyzer found no prunable channel unit in '
                f'{type(supernet).__name__}' +
                (f' (backbone {type(backbone).__name__})'
                 if backbone is not None else '') +
                ': PSE-Net prunes channel units made of Conv2d, BatchNorm2d '
                'and Linear layers; channels that also pass through other '
                'layers (LayerNorm, attention, ...) stay unpruned' +
                (f'; torch.fx could not trace inside {len(opaque)} '
                 f'module(s), e.g. {", ".join(opaque[:3])}, so the channels '
                 'around them cannot be pruned (make their forward '
                 'traceable: no branching on tensor values)'
                 if opaque else ''))
        self._check_candidates()
        self._check_parallel_support()
        self._convert_free_norms(supernet)
        foreign = self.foreign_norms(supernet)
        if foreign:
            name, module = foreign[0]
            raise ConfigError(
                f'module {name!r} is a {type(module).__name__}, a batch norm '
                'PSE-Net cannot make group-wise (parallel mode normalises '
                'each subnet group with its own statistics); accepted: '
                'BatchNorm2d and BatchNorm1d (norm_cfg=dict(type=\'BN\') '
                'or \'BN1d\'; not SyncBN: every process normalises its own '
                'groups)' + (f'; {len(foreign) - 1} more such module(s)'
                             if len(foreign) > 1 else ''))
        self._norms = [m for m in supernet.modules()
                       if isinstance(m, PSE_NORMS)]
        self._assign_output_masks(supernet)
        self._mutable_units = self.mutable_units

    @property
    def mutable_units(self) -> List:
        """The prunable units, kept once the supernet is prepared.

        mmrazor's ``ChannelMutator.mutable_units`` rebuilds the list at every
        access, walking every channel's module and its parameters; sampling
        and setting the K subnets of a training step read it a few hundred
        times (about 80 ms of the demo's 0.5 s step, cProfile). The units and
        their layers do not change after :meth:`prepare_from_supernet`.
        """
        if self._mutable_units is not None:
            return list(self._mutable_units)
        return super().mutable_units

    @staticmethod
    def foreign_norms(supernet: nn.Module) -> List[Tuple[str, nn.Module]]:
        """The batch norms of ``supernet`` without a parallel mode, as
        (qualified name, module): they would normalise across the subnet
        groups."""
        return [(name, module) for name, module in supernet.named_modules()
                if isinstance(module, _BatchNorm)
                and not isinstance(module, PSE_NORMS)]

    def _trace_failure(self, supernet: nn.Module, error: Exception) -> str:
        tracer = getattr(self._analyzer, 'tracer', None)
        stack = list(getattr(tracer, 'module_stack', {}) or {})
        where = f' (while tracing module {stack[-1]!r})' if stack else ''
        message = str(error).splitlines()[0][:300]
        hint = (' mutator.parse_cfg.demo_input must be an input the model '
                'accepts.' if 'demo input' in str(error) else '')
        return (f'the channel analyzer could not split '
                f'{type(supernet).__name__} into channel units{where}: '
                f'{type(error).__name__}: {message}.{hint}')

    def _opaque_modules(self, supernet: nn.Module) -> List[str]:
        """Modules torch.fx could not look inside (mmrazor's tracer then
        treats them as opaque leaves), as "name (Type)"."""
        from mmrazor.models.architectures.dynamic_ops import \
            DynamicChannelMixin
        if self._analyzer is None:
            return []
        try:
            graph = self._analyzer._fx_trace(copy.deepcopy(supernet).eval())
        except Exception:
            return []
        modules = dict(supernet.named_modules())
        opaque = []
        for node in graph.nodes:
            # mmrazor's tracer records an opaque module as a call_module or
            # as get_attr + call_method('forward').
            module = modules.get(node.target) if node.op in (
                'call_module', 'get_attr') else None
            if module is not None and not isinstance(
                    module, DynamicChannelMixin) and not any(
                        # torch.nn layers and their subclasses (mmcv's
                        # wrappers) are leaves by design, not opaque
                        c is not nn.Module
                        and c.__module__.startswith('torch.nn')
                        for c in type(module).__mro__):
                found = f'{node.target!r} ({type(module).__name__})'
                if found not in opaque:
                    opaque.append(found)
        return opaque

    def _prepare_from_tracer(self, model: nn.Module, parse_cfg: Dict):
        from mmrazor.registry import TASK_UTILS
        self._analyzer = (TASK_UTILS.build(parse_cfg)
                          if isinstance(parse_cfg, dict) else parse_cfg)
        self._keep_graph(self._analyzer)
        return super()._prepare_from_tracer(model, self._analyzer)

    def _keep_graph(self, analyzer) -> None:
        """Let the analyzer's fx trace also record, for every module, which
        nodes take its output (:attr:`_users`); the graph itself is not
        kept (it holds a copy of the model)."""
        trace = getattr(analyzer, '_fx_trace', None)
        if trace is None or getattr(analyzer, 'tracer_type',
                                    None) != 'FxTracer':
            return

        def fx_trace(model):
            graph = trace(model)
            users: Dict[str, List[List[Tuple]]] = {}
            for node in graph.nodes:
                if node.op == 'call_module':
                    users.setdefault(str(node.target), []).append(
                        [(user.op, str(user.target)) for user in node.users])
            self._users = users
            return graph

        analyzer._fx_trace = fx_trace

    @staticmethod
    def _convert_free_norms(supernet: nn.Module) -> List[nn.Module]:
        """Batch norms outside every prunable unit (fixed channels, e.g. a
        ``BatchNorm1d`` in a neck or head) must still normalise each group on
        its own in parallel mode: make them PSE batch norms too, with the
        same parameters and statistics."""
        free = []
        for name, module in list(supernet.named_modules()):
            convert = _FREE_NORMS.get(type(module))
            if convert is None:
                continue
            norm = convert.convert_from(module)
            norm.load_state_dict(module.state_dict())
            parent, _, attr = name.rpartition('.')
            setattr(supernet.get_submodule(parent), attr,
                    norm.to(module.weight.device if module.affine else
                            module.running_mean.device))
            free.append(norm)
        return free

    def _check_parallel_support(self) -> None:
        """Every module of a prunable unit must have a parallel mode."""
        supported = (PSEConv2d, PSEBatchNorm2d, PSELinear)
        for unit in self.mutable_units:
            for channel in list(unit.input_related) + list(
                    unit.output_related):
                module = channel.module
                if not isinstance(module, nn.Module) or not any(
                        True for _ in module.parameters()):
                    # Functions (add, cat) and parameter-free modules
                    # (identity, pooling) carry zeroed channels as zeros.
                    continue
                if not isinstance(module, supported):
                    raise ConfigError(
                        f'unit {unit.name!r}: module {channel.name!r} is a '
                        f'{type(module).__name__}, which has no '
                        'parallel (per-sample mask) mode; PSE-Net supports '
                        'Conv2d, BatchNorm2d and Linear in prunable units')
                for container in channel.module.mutable_attrs.values():
                    # A whole-ratio expansion (a flatten) prunes in blocks;
                    # any other derived channels cannot be masked per group.
                    if any(
                            isinstance(m, DerivedMutable)
                            and not isinstance(m, PSEExpandedChannel)
                            for m in container.mutable_channels.values()):
                        raise ConfigError(
                            f'unit {unit.name!r}: module {channel.name!r} '
                            'sees the unit\'s channels derived other than '
                            'by a whole-number expansion (a flatten of C x '
                            'H x W maps prunes in blocks of H x W inputs), '
                            'which parallel mode does not support')

    def _assign_output_masks(self, supernet: nn.Module) -> None:
        """From the traced graph: a conv or linear layer masks its output
        unless every node that takes it, at every call, is a PSE batch norm
        over the same channels (which zeroes the dropped ones itself, see
        :mod:`.dynamic_ops`). Without a graph (no fx trace), every layer
        masks."""
        modules = dict(supernet.named_modules())
        self._output_masks = {}
        for name, module in modules.items():
            if isinstance(module, (PSEConv2d, PSELinear)):
                module.mask_output = not self._normalised_by_own_norms(
                    name, module, modules)
                self._output_masks[name] = module.mask_output

    def _normalised_by_own_norms(self, name: str, module: nn.Module,
                                 modules: Dict[str, nn.Module]) -> bool:
        calls = (self._users or {}).get(name)
        if not calls:
            return False
        own = _channels_of(module)
        if own is None:
            return False
        for users in calls:
            if not users:
                return False
            for op, target in users:
                norm = modules.get(target) if op == 'call_module' else None
                if not isinstance(norm, PSE_NORMS) or \
                        _channels_of(norm) != own:
                    return False
        return True

    @property
    def output_masks(self) -> Dict[str, bool]:
        """Layer name -> whether the conv or linear layer masks its output
        in parallel mode (decided from the traced graph)."""
        return dict(self._output_masks)

    # validation of the candidate choices

    def _unit_args(self) -> List[Tuple[str, Dict]]:
        """(config key, unit arguments) of the default arguments and of
        every unit configured by name."""
        found = [('mutator.channel_unit_cfg.default_args',
                  dict(self.unit_default_args or {}))]
        if isinstance(self.units_cfg, dict):
            for name, cfg in self.units_cfg.items():
                if isinstance(cfg, dict) and isinstance(
                        cfg.get('init_args'), dict):
                    found.append((f'mutator.channel_unit_cfg.units.{name}.'
                                  'init_args', dict(cfg['init_args'])))
        return found

    def _check_candidates(self) -> None:
        """Every prunable unit's candidates, after rounding to the divisor,
        are widths it has, and the largest is all of its channels (the max
        subnet is the supernet)."""
        for unit in self.mutable_units:
            key = self._args_key(unit.name)
            channels = unit.num_channels
            widths = unit.candidate_widths
            too_wide = [w for w in widths if w > channels]
            if too_wide or widths[-1] != channels:
                raw = self._raw_candidates(unit.name)
                raise ConfigError(
                    f'{key}.candidate_choices={raw!r}: unit {unit.name!r} '
                    f'has {channels} channels, but its candidates keep '
                    f'{widths} channels (choice_mode={unit.choice_mode!r}, '
                    f'rounded to divisor={unit.divisor}); accepted: widths '
                    f'of at most {channels} channels, the largest exactly '
                    f'{channels} (ratio 1.0): the max subnet is the '
                    'supernet' + ('' if channels % unit.divisor == 0 else
                                  f'. {channels} is not a multiple of '
                                  f'divisor={unit.divisor}: a divisor that '
                                  f'divides {channels} (e.g. 1) keeps all '
                                  'of them'))

    def _args_key(self, unit_name: str) -> str:
        cfg = self.units_cfg.get(unit_name) if isinstance(
            self.units_cfg, dict) else None
        if isinstance(cfg, dict) and 'init_args' in cfg:
            return f'mutator.channel_unit_cfg.units.{unit_name}.init_args'
        return 'mutator.channel_unit_cfg.default_args'

    def _raw_candidates(self, unit_name: str):
        cfg = self.units_cfg.get(unit_name) if isinstance(
            self.units_cfg, dict) else None
        if isinstance(cfg, dict) and 'init_args' in cfg:
            args = cfg['init_args']
        else:
            args = self.unit_default_args or {}
        return [
            round(c, 4) if isinstance(c, float) else c
            for c in args.get('candidate_choices', [0.5, 1.0])
        ]

    # single-subnet mode, validated

    def set_choices(self, choices: Subnet) -> None:
        """Set one choice per unit. Units not named keep their choice."""
        self._check_names(choices)
        for name, choice in choices.items():
            self._name2unit[name].current_choice = choice

    def _check_names(self, choices: Subnet) -> None:
        unknown = sorted(set(choices) - set(self._name2unit))
        if unknown:
            raise ConfigError(
                f'the subnet names {len(unknown)} unknown unit(s): '
                f'{unknown[:5]}{" ..." if len(unknown) > 5 else ""}; this '
                f'model\'s units are {sorted(self.choice_template)}')

    def sample_choices(self, kind: str = 'random', rng=None) -> Subnet:
        """A subnet: ``'max'``, ``'min'`` or ``'random'`` (uniform over each
        unit's distinct widths, from ``rng`` if given)."""
        if kind == 'random':
            return {
                unit.name: unit.sample_choice(rng)
                for unit in self.mutable_units
            }
        if kind in ('max', 'min'):
            return super().sample_choices(kind)
        raise ConfigError(f'sample kind {kind!r}; accepted: random, max, min')

    # widths (channel numbers) <-> choices

    def widths_of(self, choices: Subnet) -> Dict[str, int]:
        """Unit name -> channel number of a (possibly partial) subnet."""
        self._check_names(choices)
        return {
            name: self._name2unit[name].width_of(choice)
            for name, choice in choices.items()
        }

    def choices_of(self, widths: Dict[str, int]) -> Subnet:
        """Unit name -> candidate choice, from channel numbers."""
        self._check_names(widths)
        return {
            name: self._name2unit[name].choice_of(int(width))
            for name, width in widths.items()
        }

    def candidate_widths(self, names: Sequence[str]) -> List[List[int]]:
        """Each named unit's candidate channel numbers, ascending."""
        self._check_names(dict.fromkeys(names))
        return [self._name2unit[n].candidate_widths for n in names]

    @property
    def current_widths(self) -> Dict[str, int]:
        return {unit.name: unit.current_width for unit in self.mutable_units}

    # parallel mode

    def set_parallel_choices(self,
                             subnets: Sequence[Subnet],
                             layout: str = 'interleaved') -> None:
        """Enter parallel mode: subnet k is the subnet of group k.

        Every subnet must give a choice for every prunable unit. The units
        are set to their max choice (full weights); the dynamic ops then mask
        per sample.
        """
        group_layout = GroupLayout(len(subnets), layout)
        widths = self._check_complete(subnets)
        self.set_max_choices()
        for unit in self.mutable_units:
            unit.set_parallel_widths([w[unit.name] for w in widths],
                                     group_layout)
        # Norms of fixed channels (and of units that are not prunable)
        # normalise each group too, all channels kept.
        for norm in self._norms:
            norm.parallel_layout = group_layout
        self._parallel = [dict(s) for s in subnets]

    def sliceable_modules(self) -> List[str]:
        """Modules of the units whose kept channels are not a prefix of
        their weights (the group-sliced step cannot run them as views);
        empty for PSE units on the usual backbones."""
        blocked = []
        for unit in self.units:
            for channel in list(unit.input_related) + list(
                    unit.output_related):
                module = channel.module
                for container in getattr(module, 'mutable_attrs',
                                         {}).values():
                    if prefix_width(container) is None:
                        blocked.append(channel.name)
        return sorted(set(blocked))

    @contextlib.contextmanager
    def sliced(self, subnets: Sequence[Subnet],
               fold_stats: bool = True) -> Iterator:
        """Group-sliced execution of K subnets (see :mod:`.parallel`)::

            with mutator.sliced(subnets) as run_group:
                for k in range(len(subnets)):
                    run_group(k)   # the units now hold subnet k
                    ...            # forward group k

        In training, every batch norm records each group's statistics and
        folds them into its running statistics when the block ends without
        an error (the rule of the masked path), unless ``fold_stats`` is
        False (batch statistics used, running statistics untouched). The
        units end at their max choices.
        """
        self._check_complete(subnets)
        stats = [
            GroupStats(norm, len(subnets)) for norm in self._norms
            if norm.training and norm.track_running_stats
        ]

        def run_group(k: int) -> None:
            self.set_choices(subnets[k])
            for s in stats:
                s.group = k

        for s in stats:
            s.bn.group_stats = s
        try:
            yield run_group
            for s in stats if fold_stats else []:
                s.fold()
        finally:
            for s in stats:
                s.bn.group_stats = None
            self.set_max_choices()

    def _check_complete(self, subnets: Sequence[Subnet]) -> List[Dict]:
        """Every subnet gives a choice for every unit; returns the widths."""
        if not subnets:
            raise ConfigError('parallel mode needs at least one subnet')
        names = set(self.choice_template)
        widths = []
        for k, subnet in enumerate(subnets):
            missing = sorted(names - set(subnet))
            if missing:
                raise ConfigError(
                    f'subnet {k} gives no choice for {len(missing)} unit(s), '
                    f'e.g. {missing[0]!r}; parallel mode needs a choice for '
                    'every prunable unit')
            widths.append(self.widths_of(subnet))
        return widths

    def reset_parallel(self) -> None:
        """Leave parallel mode (single-subnet mode at the max choices)."""
        for unit in self.mutable_units:
            unit.set_parallel_widths(None)
        for norm in self._norms:
            norm.parallel_layout = None
        self._parallel = None

    @contextlib.contextmanager
    def parallel(self, subnets: Sequence[Subnet],
                 layout: str = 'interleaved') -> Iterator[None]:
        """``with mutator.parallel(subnets): ...`` runs K subnets at once."""
        self.set_parallel_choices(subnets, layout)
        try:
            yield
        finally:
            self.reset_parallel()

    @property
    def parallel_subnets(self) -> Optional[List[Subnet]]:
        """The subnets of the groups while in parallel mode, else None."""
        return self._parallel


def _channels_of(module: nn.Module) -> Optional[Dict]:
    """The output channels of a dynamic op: (start, end) -> the mutable
    channel (by identity), or None if it has none."""
    container = _container(module, 'out_channels')
    if container is None or not container.mutable_channels:
        return None
    return {
        span: id(mutable)
        for span, mutable in container.mutable_channels.items()
    }


def _check_unit_args(key: str, args: Dict) -> None:
    """The unit arguments that do not depend on a unit's channels:
    ``choice_mode``, ``divisor``, ``min_value``, ``min_ratio`` and the form
    of ``candidate_choices`` (ratios in (0, 1], or channel numbers >= 1)."""
    mode = args.get('choice_mode', 'ratio')
    if mode not in ('ratio', 'number'):
        raise ConfigError(f"{key}.choice_mode={mode!r}; accepted: 'ratio', "
                          "'number'")
    for name, low in (('divisor', 1), ('min_value', 1)):
        value = args.get(name, 1)
        if isinstance(value, bool) or not isinstance(
                value, numbers.Integral) or value < low:
            raise ConfigError(f'{key}.{name}={value!r}; accepted: an integer '
                              f'>= {low}')
    min_ratio = args.get('min_ratio', 0.9)
    if isinstance(min_ratio, bool) or not isinstance(
            min_ratio, numbers.Real) or not 0 <= min_ratio <= 1:
        raise ConfigError(f'{key}.min_ratio={min_ratio!r}; accepted: a '
                          'number in [0, 1]')
    choices = args.get('candidate_choices', [0.5, 1.0])
    if not isinstance(choices, (list, tuple)) or not choices:
        raise ConfigError(
            f'{key}.candidate_choices={choices!r}; accepted: a non-empty '
            'list of ' + ('ratios in (0, 1], e.g. [0.5, 0.75, 1.0]'
                          if mode == 'ratio' else 'channel numbers'))
    if mode == 'ratio':
        bad = [c for c in choices
               if isinstance(c, bool) or not isinstance(c, float)
               or not 0 < c <= 1]
        if bad:
            raise ConfigError(
                f'{key}.candidate_choices={list(choices)!r}: {bad!r} '
                "(choice_mode='ratio'); accepted: ratios of a unit's "
                'channels, floats in (0, 1] (e.g. 0.5, 1.0), the largest '
                "1.0; or choice_mode='number' with channel numbers")
        if max(choices) != 1.0:
            raise ConfigError(
                f'{key}.candidate_choices={list(choices)!r}: the largest '
                'ratio is not 1.0; accepted: ratios in (0, 1] that include '
                '1.0 (the max subnet is the supernet)')
    else:
        bad = [c for c in choices
               if isinstance(c, bool) or not isinstance(c, int) or c < 1]
        if bad:
            raise ConfigError(
                f'{key}.candidate_choices={list(choices)!r}: {bad!r} '
                "(choice_mode='number'); accepted: channel numbers, integers "
                ">= 1 and at most the unit's channels")
