"""Dynamic ops with a parallel mode.

Each op is mmrazor's dynamic op (single-subnet mode: weights sliced to the
current choice, unchanged) plus a parallel mode: full-width weights, and the
per-group channel masks of :mod:`.parallel` applied to the output. Batch norm
always applies its mask (folded into the affine parameters, free); a conv or
linear layer applies it only when ``mask_output`` is set. The mutator clears
it, from the traced graph, for a layer whose output goes to nothing but batch
norms over the same channels (a conv followed by its BN needs no mask of its
own: the BN zeroes the dropped channels); every other layer masks.

Single-subnet mode (evaluation, search, export, and each group of the
group-sliced parallel step) slices the weights to the first channels a unit
keeps with views (``weight[:out, :in]``), not mmrazor's boolean-mask
indexing (``index`` / ``index_put``, a copy of every weight and of its
gradient at every call). Layers whose kept channels are not a prefix take
mmrazor's path unchanged.
"""
import contextlib

import torch
import torch.nn.functional as F
from mmrazor.models.architectures.dynamic_ops import (
    DynamicBatchNorm1d, DynamicBatchNorm2d, DynamicConv2d,
    DynamicConv2dAdaptivePadding, DynamicLinear)
from mmrazor.registry import MODELS
from torch import Tensor

from .parallel import (group_batch_norm, mask_channels, parallel_state,
                       prefix_width)


def _container(op, attr):
    """The mutable channel container of ``op`` for ``'in_channels'`` or
    ``'out_channels'`` (whatever the op calls them), or None."""
    attr = op.attr_mappings.get(attr, attr)
    return op.mutable_attrs[attr] if attr in op.mutable_attrs else None


_VIEWS = {'enabled': True}


@contextlib.contextmanager
def mmrazor_slicing():
    """Single-subnet mode through mmrazor's own boolean-mask slicing (the
    reference the tests compare the views with)."""
    _VIEWS['enabled'] = False
    try:
        yield
    finally:
        _VIEWS['enabled'] = True


def _kept(op, attr, full: int):
    """The number of channels ``op`` keeps for ``attr`` (a prefix), or None
    when they are not the first ones (or views are off)."""
    if not _VIEWS['enabled']:
        return None
    container = _container(op, attr)
    return full if container is None else prefix_width(container)


class _ParallelOutputMixin:
    """Parallel mode of a layer with weights (conv, linear): full-width
    weights, output masked per sample when ``mask_output`` is set; in
    single-subnet mode, weights sliced as views."""

    mask_output = True
    #: where the channels are in the output (1: NCHW, -1: N...C)
    channel_dim = 1

    def full_width_forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def sliced_forward(self, x: Tensor, out_width: int,
                       in_width: int) -> Tensor:
        """The forward with the first ``out_width`` / ``in_width`` channels
        of the weights, or None where only mmrazor's path applies."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        layout, out_mask = parallel_state(_container(self, 'out_channels'))
        if layout is None:
            layout, _ = parallel_state(_container(self, 'in_channels'))
        if layout is None:  # single-subnet mode
            out_width = _kept(self, 'out_channels', self.weight.shape[0])
            in_width = _kept(self, 'in_channels', self.weight.shape[1] *
                             getattr(self, 'groups', 1))
            out = None
            if out_width is not None and in_width is not None:
                out = self.sliced_forward(x, out_width, in_width)
            # mmrazor's boolean-mask slicing otherwise
            return super().forward(x) if out is None else out
        out = self.full_width_forward(x)
        if out_mask is not None and self.mask_output:
            out = mask_channels(out, out_mask, layout, self.channel_dim)
        return out


@MODELS.register_module()
class PSEConv2d(_ParallelOutputMixin, DynamicConv2d):
    """``DynamicConv2d`` with a parallel mode (see module docstring)."""

    def full_width_forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight, self.bias)

    def sliced_forward(self, x: Tensor, out_width: int, in_width: int):
        if self.padding_mode != 'zeros':
            return None
        if self.groups == 1:
            weight, groups = self.weight[:out_width, :in_width], 1
        elif self.groups == self.in_channels == self.out_channels:
            if in_width != out_width:
                return None
            weight, groups = self.weight[:out_width], out_width
        elif (out_width, in_width) == (self.out_channels, self.in_channels):
            weight, groups = self.weight, self.groups
        else:  # grouped conv, pruned: mmrazor's per-group masks
            return None
        bias = None if self.bias is None else self.bias[:out_width]
        return F.conv2d(x, weight, bias, self.stride, self.padding,
                        self.dilation, groups)


@MODELS.register_module()
class PSEConv2dAdaptivePadding(DynamicConv2dAdaptivePadding, PSEConv2d):
    """mmcv's ``Conv2dAdaptivePadding`` (TensorFlow's "same" padding, the
    convolutions of mmpretrain's EfficientNet) with the parallel mode of
    :class:`PSEConv2d`: mmrazor's ``DynamicConv2dAdaptivePadding`` pads the
    input (the padding depends on the map size only, not on the channels),
    then every mode of :class:`PSEConv2d` runs on the padded input."""


@MODELS.register_module()
class PSELinear(_ParallelOutputMixin, DynamicLinear):
    """``DynamicLinear`` with a parallel mode (see module docstring)."""

    channel_dim = -1

    def full_width_forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def sliced_forward(self, x: Tensor, out_width: int, in_width: int):
        bias = None if self.bias is None else self.bias[:out_width]
        return F.linear(x, self.weight[:out_width, :in_width], bias)


class _ParallelNormMixin:
    """Parallel mode of a batch norm: group-wise statistics (see
    :func:`~.parallel.group_batch_norm`), and views of its parameters and
    statistics in single-subnet mode."""

    #: Set by the mutator in parallel mode for every batch norm. A norm whose
    #: channels are in no unit in parallel mode (fixed channels, or a unit
    #: that is not prunable) normalises each group on its own with all
    #: channels kept.
    parallel_layout = None
    #: Set by the mutator during a group-sliced step (training): a
    #: :class:`~.parallel.GroupStats` that receives each group's statistics.
    group_stats = None

    def forward(self, x: Tensor) -> Tensor:
        layout, mask = parallel_state(_container(self, 'out_channels'))
        if layout is None and self.parallel_layout is not None:
            layout = self.parallel_layout
            mask = torch.ones(
                layout.num_groups, x.shape[1], dtype=torch.bool,
                device=x.device)
        if layout is None:
            return self.single_forward(x)
        self._check_input_dim(x)
        return group_batch_norm(self, x, mask, layout)

    def single_forward(self, x: Tensor) -> Tensor:
        """Single-subnet mode: mmrazor's semantics, with the first ``width``
        channels of the parameters and running statistics as views (torch
        updates the statistics of those channels in place)."""
        width = _kept(self, 'num_features', self.num_features)
        if width is None and self.group_stats is not None:
            # kept channels that are not the first ones (after a
            # concatenation): by mask, statistics recorded for the fold
            self._check_input_dim(x)
            kept = _container(self, 'num_features').current_mask.to(
                x.device, torch.bool)
            return self.group_stats.batch_norm_kept(
                x, kept, self.weight[kept] if self.affine else None,
                self.bias[kept] if self.affine else None)
        if width is None:
            return super().forward(x)
        self._check_input_dim(x)
        weight = self.weight[:width] if self.affine else None
        bias = self.bias[:width] if self.affine else None
        if self.group_stats is not None:
            return self.group_stats.batch_norm(x, width, weight, bias)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and \
                self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        tracked = not self.training or self.track_running_stats
        mean = self.running_mean[:width] if (
            tracked and self.running_mean is not None) else None
        var = self.running_var[:width] if (
            tracked and self.running_var is not None) else None
        return F.batch_norm(x, mean, var, weight, bias, use_batch_stats,
                            factor, self.eps)


@MODELS.register_module()
class PSEBatchNorm2d(_ParallelNormMixin, DynamicBatchNorm2d):
    """``DynamicBatchNorm2d`` with group-wise statistics in parallel mode,
    and views of its parameters and statistics in single-subnet mode.
    """


@MODELS.register_module()
class PSEBatchNorm1d(_ParallelNormMixin, DynamicBatchNorm1d):
    """``DynamicBatchNorm1d`` (inputs (N, C) or (N, C, L), e.g. in a neck or
    head) with the parallel mode of :class:`PSEBatchNorm2d`. The mutator
    makes every ``BatchNorm1d`` of a supernet one, so that it normalises
    each subnet group with its own statistics."""


#: The batch norms with a parallel mode.
PSE_NORMS = (PSEBatchNorm2d, PSEBatchNorm1d)
