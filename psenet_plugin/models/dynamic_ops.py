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


def _parallel_layout(op, *attrs):
    """The group layout if any of ``attrs`` of ``op`` is in parallel mode."""
    for attr in attrs:
        layout, _ = parallel_state(_container(op, attr))
        if layout is not None:
            return layout
    return None


@MODELS.register_module()
class PSEConv2d(DynamicConv2d):
    """``DynamicConv2d`` with a parallel mode (see module docstring)."""

    mask_output = True

    def forward(self, x: Tensor) -> Tensor:
        layout, out_mask = parallel_state(_container(self, 'out_channels'))
        if layout is None and _parallel_layout(self, 'in_channels') is None:
            return super().forward(x)
        out = self._conv_forward(x, self.weight, self.bias)
        if out_mask is not None and self.mask_output:
            out = mask_channels(out, out_mask, layout)
        return out


@MODELS.register_module()
class PSELinear(DynamicLinear):
    """``DynamicLinear`` with a parallel mode (see module docstring)."""

    mask_output = True

    def forward(self, x: Tensor) -> Tensor:
        layout, out_mask = parallel_state(_container(self, 'out_channels'))
        if layout is None and _parallel_layout(self, 'in_channels') is None:
            return super().forward(x)
        out = F.linear(x, self.weight, self.bias)
        if out_mask is not None and self.mask_output:
            out = mask_channels(out, out_mask, layout, channel_dim=-1)
        return out


@MODELS.register_module()
class PSEBatchNorm2d(DynamicBatchNorm2d):
    """``DynamicBatchNorm2d`` with group-wise statistics in parallel mode.
    """

    def forward(self, x: Tensor) -> Tensor:
        layout, mask = parallel_state(_container(self, 'out_channels'))
        if layout is None:
            return super().forward(x)
        self._check_input_dim(x)
        return group_batch_norm(self, x, mask, layout)
