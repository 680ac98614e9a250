"""The PSE channel mutator: mmrazor's ``OneShotChannelMutator`` plus a
parallel mode in which K subnets share one forward pass.

Single-subnet mode is the inherited one (``sample_choices``, ``set_choices``,
``current_choices``, ``set_max_choices``/``set_min_choices``,
``max_choices``/``min_choices``), so the mutator stands in wherever mmrazor
expects a ``OneShotChannelMutator`` (its loops, estimators, AutoSlim). It
validates what it is given: unknown unit names and non-candidate choices are
errors that name the unit and what is accepted.
"""
import contextlib
import copy
from typing import Dict, Iterator, List, Optional, Sequence

import torch.nn as nn
from mmengine.model.utils import _BatchNormXd
from mmrazor.models.mutables import DerivedMutable
from mmrazor.models.mutators import OneShotChannelMutator
from mmrazor.registry import MODELS

from ..errors import ConfigError
from .dynamic_ops import PSEBatchNorm2d, PSEConv2d, PSELinear
from .mutables import PSEMutableChannelUnit
from .parallel import GroupLayout, GroupStats, prefix_width

Subnet = Dict[str, float]


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
        self._parallel: Optional[List[Subnet]] = None
        self._analyzer = None
        self._free_norms: List[PSEBatchNorm2d] = []
        self._norms: List[PSEBatchNorm2d] = []

    # preparation

    def prepare_from_supernet(self, supernet: nn.Module) -> None:
        """Find the channel units of ``supernet`` and make it dynamic."""
        try:
            super().prepare_from_supernet(supernet)
        except ConfigError:
            raise
        except Exception as error:
            raise ConfigError(self._trace_failure(supernet, error)) from error
        if not self.mutable_units:
            opaque = self._opaque_modules(supernet)
            raise ConfigError(
                f'the channel analyzer found no prunable channel unit in '
                f'{type(supernet).__name__}: PSE-Net prunes units made of '
                'Conv2d, BatchNorm2d and Linear layers' +
                (f'; torch.fx could not trace inside {opaque}, so the '
                 'channels around them cannot be pruned (make their forward '
                 'traceable: no branching on tensor values)'
                 if opaque else ''))
        self._check_parallel_support()
        self._assign_output_masks()
        self._free_norms = self._convert_free_norms(supernet)
        self._norms = [
            m for m in supernet.modules() if isinstance(m, PSEBatchNorm2d)
        ]

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
                    module, DynamicChannelMixin) and not type(
                        module).__module__.startswith('torch.nn'):
                opaque.append(f'{node.target!r} ({type(module).__name__})')
        return opaque

    def _prepare_from_tracer(self, model: nn.Module, parse_cfg: Dict):
        from mmrazor.registry import TASK_UTILS
        self._analyzer = (TASK_UTILS.build(parse_cfg)
                          if isinstance(parse_cfg, dict) else parse_cfg)
        return super()._prepare_from_tracer(model, self._analyzer)

    @staticmethod
    def _convert_free_norms(supernet: nn.Module) -> List[PSEBatchNorm2d]:
        """Batch norms outside every prunable unit (fixed channels) must
        still normalise each group on its own in parallel mode: make them
        PSE batch norms too, with the same parameters and statistics."""
        free = []
        for name, module in list(supernet.named_modules()):
            if type(module) in (nn.BatchNorm2d, _BatchNormXd):
                norm = PSEBatchNorm2d.convert_from(module)
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
                    if any(
                            isinstance(m, DerivedMutable)
                            for m in container.mutable_channels.values()):
                        raise ConfigError(
                            f'unit {unit.name!r}: module {channel.name!r} '
                            'expands the unit\'s channels (e.g. a flatten),'
                            ' which parallel mode does not support')

    def _assign_output_masks(self) -> None:
        """Convs and linears mask their outputs only in units without a
        batch norm that does it (see :mod:`.dynamic_ops`)."""
        for unit in self.units:
            producers = [
                c.module for c in unit.output_related
                if isinstance(c.module, (PSEConv2d, PSELinear))
            ]
            norms = [
                c.module for c in unit.output_related
                if isinstance(c.module, PSEBatchNorm2d)
            ]
            # Each producer feeds a BN of the unit (conv-BN pairs): the BNs
            # mask. Otherwise the producers mask their outputs themselves.
            paired = len(norms) >= len(producers) > 0
            for module in producers:
                module.mask_output = not paired

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
        for norm in self._free_norms:
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
        for norm in self._free_norms:
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
