"""Dynamic ops with a parallel mode.

Each op is mmrazor's dynamic op (single-subnet mode: weights sliced to the
current choice, unchanged) plus a parallel mode: full-width weights, and the
per-group channel masks of :mod:`.parallel` applied to the output. Batch norm
always applies its mask (folded into the affine parameters, free); a conv or
linear layer applies it only when ``mask_output`` is set, which the mutator
does for units whose outputs are not normalised by a batch norm of the same
unit (a conv followed by its BN needs no mask of its own: the BN zeroes the
dropped channels).
"""
import torch
import torch.nn.functional as F
from mmrazor.models.architectures.dynamic_ops import (DynamicBatchNorm2d,
                                                      DynamicConv2d,
                                                      DynamicLinear)
from mmrazor.registry import MODELS
from torch import Tensor

from .parallel import group_batch_norm, mask_channels, parallel_state


def _container(op, attr):
    """The mutable channel container of ``op`` for ``'in_channels'`` or
    ``'out_channels'`` (whatever the op calls them), or None."""
    attr = op.attr_mappings.get(attr, attr)
    return op.mutable_attrs[attr] if attr in op.mutable_attrs else None


class _ParallelOutputMixin:
    """Parallel mode of a layer with weights (conv, linear): full-width
    weights, output masked per sample when ``mask_output`` is set."""

    mask_output = True
    #: where the channels are in the output (1: NCHW, -1: N...C)
    channel_dim = 1

    def full_width_forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        layout, out_mask = parallel_state(_container(self, 'out_channels'))
        if layout is None:
            layout, _ = parallel_state(_container(self, 'in_channels'))
        if layout is None:  # single-subnet mode: mmrazor's sliced forward
            return super().forward(x)
        out = self.full_width_forward(x)
        if out_mask is not None and self.mask_output:
            out = mask_channels(out, out_mask, layout, self.channel_dim)
        return out


@MODELS.register_module()
class PSEConv2d(_ParallelOutputMixin, DynamicConv2d):
    """``DynamicConv2d`` with a parallel mode (see module docstring)."""

    def full_width_forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight, self.bias)


@MODELS.register_module()
class PSELinear(_ParallelOutputMixin, DynamicLinear):
    """``DynamicLinear`` with a parallel mode (see module docstring)."""

    channel_dim = -1

    def full_width_forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


@MODELS.register_module()
class PSEBatchNorm2d(DynamicBatchNorm2d):
    """``DynamicBatchNorm2d`` with group-wise statistics in parallel mode.
    """

    #: Set by the mutator in parallel mode for a batch norm outside every
    #: prunable unit (its channels are fixed: all kept in every group).
    parallel_layout = None

    def forward(self, x: Tensor) -> Tensor:
        layout, mask = parallel_state(_container(self, 'out_channels'))
        if layout is None and self.parallel_layout is not None:
            layout = self.parallel_layout
            mask = torch.ones(
                layout.num_groups, x.shape[1], dtype=torch.bool,
                device=x.device)
        if layout is None:
            return super().forward(x)
        self._check_input_dim(x)
        return group_batch_norm(self, x, mask, layout)
