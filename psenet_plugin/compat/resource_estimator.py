"""Count a prunable (dynamic) model's FLOPs at its current subnet's widths.

Upstream defect: mmrazor 1.0.0's ``ResourceEstimator.estimate``
(``mmrazor/models/task_modules/estimators/resource_estimator.py``) counts
the modules it is handed. ``SubnetValLoop`` (its default estimator) hands
it the supernet algorithm itself, whose dynamic ops its counters do not
slice: every subnet is counted at nearly the supernet's size (the min and
max subnets of a MobileNetV2-1.5x supernet: 672 and 680 MFLOPs, silently;
no counter for dynamic batch norm, depthwise groups counted as dense).
mmrazor's own search loops count the *sliced static* copy of the subnet
(``check_subnet_resources``), which its counters handle.

The fix: handed a model that holds dynamic channel ops, ``estimate``
counts a static copy of it sliced to the current subnet (the
``architecture`` of an algorithm, as the search loops do), by mmrazor's
own counters, so ``SubnetValLoop`` reports what ``EvolutionSearchLoop``
reports for the same subnet. The copy leaves out the modules' hooks
(mmrazor's distillers keep recorders there whose buffers hold graph
tensors, which cannot be deep-copied). Static models are counted as
before.
"""
import copy
from collections import OrderedDict

import torch.nn as nn

_upstream_estimate = None


def static_subnet(model: nn.Module):
    """A static copy of ``model`` (its ``architecture`` for an algorithm)
    sliced to the current choices, or None if it holds no dynamic op."""
    from mmengine.model import is_model_wrapper
    from mmrazor.models.architectures.dynamic_ops import (
        DynamicChannelMixin, DynamicMixin)
    from mmrazor.structures.subnet.fix_subnet import _dynamic_to_static
    model = model.module if is_model_wrapper(model) else model
    if not any(isinstance(m, DynamicChannelMixin) for m in model.modules()):
        return None
    source = model.architecture if isinstance(
        getattr(model, 'architecture', None), nn.Module) else model
    if isinstance(source, DynamicMixin):
        return None  # a single dynamic op: nothing to convert around it
    memo = {}
    for module in source.modules():
        for name in ('_forward_hooks', '_forward_pre_hooks',
                     '_backward_hooks', '_backward_pre_hooks'):
            hooks = getattr(module, name, None)
            if hooks is not None:
                memo[id(hooks)] = OrderedDict()
    static = copy.deepcopy(source, memo)
    _dynamic_to_static(static)
    return static


def estimate(self, model, flops_params_cfg=None, latency_cfg=None):
    """``ResourceEstimator.estimate`` on the sliced static copy of a
    dynamic model (see the module docstring)."""
    static = static_subnet(model)
    return _upstream_estimate(self, model if static is None else static,
                              flops_params_cfg, latency_cfg)


def apply() -> None:
    global _upstream_estimate
    from mmrazor.models.task_modules.estimators import ResourceEstimator
    if _upstream_estimate is None:
        _upstream_estimate = ResourceEstimator.estimate
        estimate.__wrapped__ = _upstream_estimate
    ResourceEstimator.estimate = estimate
