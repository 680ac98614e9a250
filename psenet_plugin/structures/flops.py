"""Exact analytic FLOPs and parameter counts of a subnet, from unit widths.

Built once from the shapes of one forward pass of the supernet, a table maps
a subnet's unit widths to its FLOPs and parameters in microseconds (no deep
copy, no trace), for one candidate or a batch of them.

Counting conventions (``convention``, see :data:`FLOPS_CONVENTIONS`):

* ``'all'`` (the default): that of mmengine's ``get_model_complexity_info``
  (``mmengine.analysis.FlopAnalyzer``, fvcore's rules) on the sliced static
  model in eval mode, one image:

  * convolution: ``out_channels * in_channels / groups * kh * kw * out_h *
    out_w`` (multiply-accumulates; bias ignored);
  * linear: ``in_features * out_features`` per row;
  * batch norm: ``2 * C * H * W`` (``C * H * W`` without affine
    parameters);
  * adaptive average pooling: ``C * H * W`` of its input;
  * everything else (activations, additions) is not counted.

* ``'conv_linear'``: the multiply-adds of the convolutions and linear
  layers only (the first two rules above), what papers mean by "300M
  FLOPs" for MobileNetV2 (MobileNetV2 1.0 at 224 px: 300.8 M here against
  314.2 M with ``'all'``); it equals the ``conv`` and ``linear`` entries of
  ``FlopAnalyzer.by_operator()``.

Parameters count every parameter of the sliced static model (conv and
linear weights and biases, batch-norm weights and biases).

Every layer's channel count is an affine function of the unit widths (a sum
of unit widths and fixed channels), so FLOPs and parameters are sums of
``a * c_in * c_out + b * c_out + d * c_in + e`` over layers: a few numpy
operations per batch of candidates.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmrazor.models.architectures.dynamic_ops import DynamicChannelMixin
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError

Widths = Dict[str, int]

#: ``'all'``: mmengine's count (convolutions, linear layers, batch norms,
#: pooling); ``'conv_linear'``: the multiply-adds of convolutions and linear
#: layers only, the papers' convention.
FLOPS_CONVENTIONS = ('all', 'conv_linear')
MAC_OPS = ('conv', 'linear')


class FlopsTable:
    """FLOPs and parameters of subnets as functions of unit widths.

    Build it with :meth:`from_model`; evaluate with :meth:`flops`,
    :meth:`params` (one subnet, a dict of unit widths) or
    :meth:`flops_batch` (an array of width vectors in ``unit_names``
    order).

    Args:
        unit_names (list[str]): the prunable units, in vector order.
        layers (list[dict]): one record per counted layer (name, kind,
            op and coefficients), for summaries and tests.
        convention (str): which layers the FLOPs count, one of
            :data:`FLOPS_CONVENTIONS` (see the module docstring). Parameters
            are counted the same way in both. Defaults to ``'all'``.

    Attributes:
        unit_names (list[str]): the prunable units, in vector order.
        layers (list[dict]): one record per counted layer.
        convention (str): the FLOPs convention.
    """

    def __init__(self,
                 unit_names: Sequence[str],
                 layers: List[Dict],
                 convention: str = 'all'):
        if convention not in FLOPS_CONVENTIONS:
            raise ConfigError(
                f'flops_convention={convention!r}; accepted: ' +
                ', '.join(map(repr, FLOPS_CONVENTIONS)))
        self.unit_names = list(unit_names)
        self.layers = layers
        self.convention = convention
        num_units = len(self.unit_names)
        self._a_in = np.zeros((len(layers), num_units))
        self._a_out = np.zeros((len(layers), num_units))
        self._c_in = np.zeros(len(layers))
        self._c_out = np.zeros(len(layers))
        coef = {k: np.zeros(len(layers)) for k in 'fa fb fd pa pb pd'.split()}
        for i, layer in enumerate(layers):
            for side, a, c in (('in', self._a_in, self._c_in),
                               ('out', self._a_out, self._c_out)):
                for unit, size in layer[side]:
                    if unit is None:
                        c[i] += size
                    else:
                        a[i, self.unit_names.index(unit)] += 1
            counted = convention == 'all' or _op(layer) in MAC_OPS
            for key in coef:
                if counted or key[0] == 'p':
                    coef[key][i] = layer[key]
        self._coef = coef

    def with_convention(self, convention: str) -> 'FlopsTable':
        """The same table counting FLOPs by ``convention``."""
        if convention == self.convention:
            return self
        return FlopsTable(self.unit_names, self.layers, convention)

    # evaluation

    def vector(self, widths: Widths) -> np.ndarray:
        """Unit widths as a vector in ``unit_names`` order."""
        missing = [n for n in self.unit_names if n not in widths]
        if missing:
            raise KeyError(f'no width for unit(s) {missing[:3]}')
        return np.array([widths[n] for n in self.unit_names], dtype=float)

    def _channels(self, w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return (w @ self._a_in.T + self._c_in, w @ self._a_out.T + self._c_out)

    def _total(self, w: np.ndarray, prefix: str) -> np.ndarray:
        c_in, c_out = self._channels(np.atleast_2d(w))
        a, b, d = (self._coef[prefix + k] for k in 'abd')
        return (c_in * c_out) @ a + c_out @ b + c_in @ d

    def flops_batch(self, width_vectors: np.ndarray) -> np.ndarray:
        """FLOPs of N candidates, given as an (N, U) array of widths."""
        return self._total(width_vectors, 'f')

    def params_batch(self, width_vectors: np.ndarray) -> np.ndarray:
        return self._total(width_vectors, 'p')

    def measure_batch(self, metric: str, width_vectors: np.ndarray
                      ) -> np.ndarray:
        """``flops_batch`` or ``params_batch``, by ``metric``."""
        return self._total(width_vectors, _prefix(metric))

    def flops_torch(self, width_vectors, metric: str = 'flops'):
        """FLOPs (or params: ``metric='params'``) of (N, U) widths given as
        a torch tensor, differentiable (for fitting distributions whose
        expected widths feed it)."""
        import torch
        w = width_vectors.double()
        c_in = w @ torch.from_numpy(self._a_in.T) + torch.from_numpy(
            self._c_in)
        c_out = w @ torch.from_numpy(self._a_out.T) + torch.from_numpy(
            self._c_out)
        a, b, d = (torch.from_numpy(self._coef[_prefix(metric) + k])
                   for k in 'abd')
        return (c_in * c_out) @ a + c_out @ b + c_in @ d

    def span(self, metric: str, candidates: Sequence[Sequence[int]]
             ) -> Tuple[float, float]:
        """(min subnet's, max subnet's) FLOPs or params: every subnet of
        ``candidates`` lies in between."""
        low = np.array([c[0] for c in candidates], float)
        high = np.array([c[-1] for c in candidates], float)
        return (float(self.measure_batch(metric, low)[0]),
                float(self.measure_batch(metric, high)[0]))

    def flops(self, widths: Widths) -> float:
        return float(self.flops_batch(self.vector(widths))[0])

    def params(self, widths: Widths) -> float:
        return float(self.params_batch(self.vector(widths))[0])

    # building

    @classmethod
    @torch.no_grad()
    def from_model(cls,
                   model: nn.Module,
                   mutator,
                   input_shape: Sequence[int] = (1, 3, 224, 224)
                   ) -> 'FlopsTable':
        """Record the layer shapes of ``model`` (prepared by ``mutator``)
        at its max widths, on one input of ``input_shape``.

        Args:
            model (nn.Module): the supernet (an mmpretrain classifier: the
                forward counted is ``model(x)``, mode ``'tensor'``).
            mutator (PSEChannelMutator): the mutator that prepared it.
            input_shape (Sequence[int]): (1, C, H, W) of one image.
        """
        unit_of = {
            id(unit.mutable_channel): unit.name
            for unit in mutator.mutable_units
        }
        calls: List[Tuple[str, nn.Module, torch.Size, torch.Size]] = []
        hooks = []
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, _BatchNorm,
                                   nn.AdaptiveAvgPool2d)):
                hooks.append(
                    module.register_forward_hook(
                        lambda m, i, o, name=name: calls.append(
                            (name, m, i[0].shape, o.shape))))
        saved = mutator.current_choices
        was_training = model.training
        try:
            mutator.set_max_choices()
            model.eval()
            device = next(model.parameters()).device
            model(torch.zeros(1, *input_shape[1:], device=device))
        finally:
            for hook in hooks:
                hook.remove()
            mutator.set_choices(saved)
            model.train(was_training)

        layers = []
        for i, (name, module, in_shape, out_shape) in enumerate(calls):
            layer = dict(
                name=name,
                kind=type(module).__name__,
                op=_module_op(module),
                fa=0.,
                fb=0.,
                fd=0.,
                pa=0.,
                pb=0.,
                pd=0.)
            if isinstance(module, nn.AdaptiveAvgPool2d):
                consumer = _next_consumer(calls, i, in_shape[1])
                layer['in'] = _terms(consumer, 'in_channels', in_shape[1],
                                     unit_of)
                layer['out'] = []
                layer['fd'] = float(np.prod(in_shape[2:]))
            else:
                dim = -1 if isinstance(module, nn.Linear) else 1
                layer['in'] = _terms(module, 'in_channels', in_shape[dim],
                                     unit_of)
                layer['out'] = _terms(module, 'out_channels', out_shape[dim],
                                      unit_of)
                _coefficients(layer, module, in_shape, out_shape)
            if any(m is module for _, m, _, _ in calls[:i]):
                # a module called again (a detector head shared across
                # levels): its FLOPs count every call, its params once
                layer.update(pa=0., pb=0., pd=0.)
            layers.append(layer)
        return cls([u.name for u in mutator.mutable_units], layers)


def _prefix(metric: str) -> str:
    if metric not in ('flops', 'params'):
        raise ValueError(f'metric={metric!r}; accepted: flops, params')
    return metric[0]


def _module_op(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return 'conv'
    if isinstance(module, nn.Linear):
        return 'linear'
    if isinstance(module, _BatchNorm):
        return 'batch_norm'
    return 'pool'


def _op(layer: Dict) -> str:
    """The op of a layer record (records without ``op``: from its kind)."""
    if 'op' in layer:
        return layer['op']
    kind = layer.get('kind', '')
    return 'conv' if 'Conv' in kind else 'linear' if 'Linear' in kind \
        else 'other'


def _next_consumer(calls, index: int, channels: int) -> Optional[nn.Module]:
    """The first layer after ``index`` that takes ``channels`` inputs: the
    consumer of a pooling output, whose input channels are the pooling's."""
    for _, module, in_shape, _ in calls[index + 1:]:
        if isinstance(module, (nn.Conv2d, nn.Linear)) and (
                getattr(module, 'in_channels', None) == channels
                or getattr(module, 'in_features', None) == channels):
            return module
    return None


def _terms(module: Optional[nn.Module], attr: str, channels: int,
           unit_of: Dict[int, str]) -> List[Tuple[Optional[str], int]]:
    """The channels of ``attr`` as [(unit name or None, size), ...]."""
    if isinstance(module, DynamicChannelMixin):
        attr = module.attr_mappings.get(attr, attr)
    if not isinstance(module, DynamicChannelMixin) or \
            attr not in module.mutable_attrs:
        return [(None, channels)]
    container = module.mutable_attrs[attr]
    terms, covered = [], 0
    for (start, end), mutable in container.mutable_channels.items():
        # A unit's channels flattened with their H x W maps (a PSE
        # expanded channel): the unit's width, once per map position.
        ratio = getattr(mutable, 'expand_ratio', None)
        source = getattr(mutable, 'source', None)
        if ratio is not None and id(source) in unit_of:
            terms.extend([(unit_of[id(source)],
                           (end - start) // ratio)] * ratio)
        else:
            terms.append((unit_of.get(id(mutable)), end - start))
        covered += end - start
    if covered < channels:
        terms.append((None, channels - covered))
    return terms


def _coefficients(layer: Dict, module: nn.Module, in_shape: torch.Size,
                  out_shape: torch.Size) -> None:
    """FLOPs and params of one layer as a*c_in*c_out + b*c_out + d*c_in."""
    if isinstance(module, nn.Conv2d):
        kernel = float(np.prod(module.kernel_size))
        out_hw = float(np.prod(out_shape[2:]))
        depthwise = module.groups == module.in_channels == \
            module.out_channels
        if depthwise:  # groups follow the width: one input per output
            layer['fb'] = kernel * out_hw
            layer['pb'] = kernel
        else:
            layer['fa'] = kernel * out_hw / module.groups
            layer['pa'] = kernel / module.groups
        if module.bias is not None:
            layer['pb'] += 1.0
    elif isinstance(module, nn.Linear):
        rows = float(np.prod(in_shape[:-1]))
        layer['fa'] = rows
        layer['pa'] = 1.0
        if module.bias is not None:
            layer['pb'] = 1.0
    elif isinstance(module, _BatchNorm):
        hw = float(np.prod(in_shape[2:]))
        layer['fb'] = hw * (2.0 if module.affine else 1.0)
        layer['pb'] = 2.0 if module.affine else 0.0
