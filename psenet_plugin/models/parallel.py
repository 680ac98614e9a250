"""Parallel-subnets forward: K subnets trained in one pass (PSE-Net, idea 1).

The batch is split into K groups; group k belongs to subnet k. Every layer
whose output channels form a channel unit u zeroes, for each sample, the
channels its group's subnet does not have ("dropping extraneous features on
the batch dimension"): a per-group channel mask ``M_u`` of shape (K, C_u).
Batch norm normalises each group with its own statistics, so group k sees
exactly what subnet k alone computes on its samples.

This module is the one place that knows how groups and masks work; the
dynamic ops (:mod:`.dynamic_ops`) only call :func:`parallel_state`,
:func:`mask_channels` and :func:`group_batch_norm`.

On the device, once per step. A step's :class:`GroupLayout` (one per
step, shared by every unit) holds the group widths of every unit
(:class:`GroupMasks`); at the first forward that needs a mask, the widths of
all units go to the device in one copy (from pinned memory, without
waiting) and one comparison, ``arange(C) < width[unit, group]``, makes every
unit's (K, C) mask there. Masks of layers spanning several units, and the
group index of every sample, are also built once per step and cached. The
forward of a parallel step reads nothing back from the device: no
``.item()``, ``.tolist()`` or ``.cpu()``, no copy of host data per layer.

Making it fast. With the default *interleaved* layout (sample b belongs to
group ``b % K``) and a batch divisible by K, ``x.view(B // K, K * C, ...)`` is
free and puts group k's channel c at channel ``k * C + c``. One fused
``F.batch_norm`` over K*C channels then computes every group's statistics,
and the mask folds into the affine parameters (weight and bias of a dropped
channel are zero for that group, so its output is exactly zero and no
gradient flows through it). Other batches take a per-group fallback path.

Group-sliced execution (``execution='sliced'``). The same K subnets, each
run on its own group through its own subnet's weights: the units are set to
subnet k (single-subnet mode) and every op slices its weights to the first
channels it keeps, as views (:func:`prefix_width`), so group k costs what
subnet k costs on |G_k| samples; the losses of all groups are summed and
backpropagated once. Batch norms record each group's statistics in a
:class:`GroupStats` instead of updating their running statistics, and fold
them in with the rule below once every group has run: both execution paths
write the same running statistics.

Running statistics (the rule the tests check): F.batch_norm is run with
momentum 1 into temporary (K, C) buffers, which then hold each group's batch
mean and unbiased variance. For every channel c, the groups in which c is
active are averaged (each group counts once), and the running statistic is
updated as ``(1 - m) * running + m * average``, with torch's momentum
semantics (``m = 1 / num_batches_tracked`` when momentum is None). A channel
active in no group keeps its running statistics.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

LAYOUTS = ('interleaved', 'contiguous')


class GroupMasks:
    """The (K, C) channel masks of one parallel step.

    Every unit in parallel mode registers its K group widths with
    :meth:`set`. The masks are built at first use, per device, all at once:
    one (U, K) table of widths copied to the device (pinned memory,
    ``non_blocking``: the host does not wait) and one comparison with
    ``arange``. Registering a width again drops what was built.

    Args:
        num_groups (int): K.
    """

    def __init__(self, num_groups: int) -> None:
        self.num_groups = num_groups
        # id(owner) -> (owner, widths, num_channels)
        self._widths: Dict[int, tuple] = {}
        # device -> id(owner) -> (K, C) bool mask
        self._masks: Dict[torch.device, Dict[int, Tensor]] = {}
        # id(container) -> (K, C) bool mask of a layer spanning several units
        self._containers: Dict[int, Tensor] = {}

    def set(self, owner, widths: Sequence[int], num_channels: int) -> None:
        """Register (or replace) the group widths of ``owner``, a mutable
        channel of ``num_channels`` channels."""
        widths = tuple(int(w) for w in widths)
        if len(widths) != self.num_groups:
            raise ValueError(f'{len(widths)} group widths for '
                             f'{self.num_groups} groups')
        self._widths[id(owner)] = (owner, widths, int(num_channels))
        self._masks.clear()
        self._containers.clear()

    def mask(self, owner, device: torch.device) -> Tensor:
        """(K, C) boolean: group k keeps the first ``widths[k]`` channels of
        ``owner``; on ``device``."""
        masks = self._masks.get(device)
        if masks is None:
            masks = self._masks[device] = self._build(device)
        return masks[id(owner)]

    def _build(self, device: torch.device) -> Dict[int, Tensor]:
        entries = list(self._widths.values())
        table = _to_device(
            torch.tensor([widths for _, widths, _ in entries],
                         dtype=torch.int32), device)
        longest = max(channels for _, _, channels in entries)
        masks = torch.arange(
            longest, dtype=torch.int32, device=device) < table.unsqueeze(-1)
        return {
            id(owner): masks[i, :, :channels]
            for i, (owner, _, channels) in enumerate(entries)
        }

    def container_mask(self, container) -> Tensor:
        """The (K, C) mask of a mutable channel container whose channels
        come from several units (or units and fixed channels), side by
        side; built once per step."""
        mask = self._containers.get(id(container))
        if mask is None:
            mask = self._containers[id(container)] = _concat_mask(
                container, self.num_groups)
        return mask


def _to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """Copy a small host tensor to ``device`` without making the host wait
    for the device (pinned memory, ``non_blocking``) where the device is a
    CUDA device."""
    if device.type == 'cpu':
        return tensor
    if device.type == 'cuda':
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _concat_mask(container, num_groups: int) -> Tensor:
    """The mask of a container: its units' parallel masks (or, for units
    not in parallel mode, their current mask for every group), with the
    channels of no unit kept, in channel order."""
    parts: List[Tuple[int, Optional[Tensor]]] = []  # (width, mask or None)
    last_end, device = 0, None
    for (start, end), mutable in sorted(container.mutable_channels.items(),
                                        key=lambda r: r[0][0]):
        if start > last_end:
            parts.append((start - last_end, None))
        if getattr(mutable, 'parallel_layout', None) is not None:
            part = mutable.parallel_mask()
            device = device or part.device  # where the units' masks are
        else:
            part = mutable.current_mask.unsqueeze(0).expand(num_groups, -1)
        parts.append((end - start, part))
        last_end = end
    if last_end < container.num_channels:
        parts.append((container.num_channels - last_end, None))
    return torch.cat([
        torch.ones(num_groups, width, dtype=torch.bool, device=device)
        if part is None else part.to(device, torch.bool)
        for width, part in parts
    ], dim=1)


class GroupLayout:
    """Which sample of a batch belongs to which of K subnet groups.

    Group sizes differ by at most one: the first ``B % K`` groups hold one
    sample more. A layout lives for one parallel step: it caches the group
    indices it computes (per batch size and device) and holds the step's
    channel masks (:attr:`masks`).

    Args:
        num_groups (int): K.
        layout (str): ``'interleaved'`` (sample b in group ``b % K``, the
            fast default) or ``'contiguous'`` (group k holds one contiguous
            block of the batch). Defaults to ``'interleaved'``.
    """

    def __init__(self, num_groups: int, layout: str = 'interleaved') -> None:
        if layout not in LAYOUTS:
            raise ValueError(f'group layout {layout!r}; accepted: '
                             f'{", ".join(LAYOUTS)}')
        self.num_groups = num_groups
        self.layout = layout
        #: the channel masks of the units in parallel mode with this layout
        self.masks = GroupMasks(num_groups)
        self._cache: Dict[tuple, Tensor] = {}

    def group_sizes(self, batch_size: int) -> List[int]:
        k, r = divmod(batch_size, self.num_groups)
        return [k + (g < r) for g in range(self.num_groups)]

    def _cached(self, key: tuple, device, build) -> Tensor:
        key = key + (str(torch.device('cpu') if device is None else
                         torch.device(device)), )
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = build()
        return value

    def group_index(self, batch_size: int, device=None) -> Tensor:
        """The group of every sample, shape (B, )."""

        def build():
            sample = torch.arange(batch_size, device=device)
            if self.layout == 'interleaved':
                return sample % self.num_groups
            # The first r groups hold k + 1 samples, the others k; computed
            # on the device from Python numbers (no copy of host data).
            k, r = divmod(batch_size, self.num_groups)
            split = r * (k + 1)
            return torch.where(sample < split, sample // (k + 1),
                               r + (sample - split) // max(k, 1))

        return self._cached(('group', batch_size), device, build)

    def indices(self, group: int, batch_size: int, device=None) -> Tensor:
        """The batch indices of one group, in batch order."""

        def build():
            if self.layout == 'interleaved':
                return torch.arange(
                    group, batch_size, self.num_groups, device=device)
            sizes = self.group_sizes(batch_size)
            start = sum(sizes[:group])
            return torch.arange(start, start + sizes[group], device=device)

        return self._cached(('indices', group, batch_size), device, build)

    def foldable(self, batch_size: int) -> bool:
        """True if groups fold into the channel axis by a free view."""
        return (self.layout == 'interleaved'
                and batch_size % self.num_groups == 0)

    def per_sample(self, group_values: Tensor, batch_size: int) -> Tensor:
        """Expand (K, ...) per-group values to (B, ...) per-sample values."""
        if self.foldable(batch_size):
            return group_values.repeat(
                batch_size // self.num_groups,
                *([1] * (group_values.dim() - 1)))
        return group_values[self.group_index(batch_size,
                                             group_values.device)]


def parallel_state(container) -> Tuple[Optional[GroupLayout],
                                       Optional[Tensor]]:
    """The parallel state of one mutable channel container of a dynamic op.

    Returns:
        (layout, mask): the group layout and the (K, C) boolean channel mask
        of the container (on the device of its units' masks), or
        ``(None, None)`` when no unit of the container is in parallel mode.
    """
    if container is None:
        return None, None
    mutables = container.mutable_channels
    layout = next((m.parallel_layout for m in mutables.values()
                   if getattr(m, 'parallel_layout', None) is not None), None)
    if layout is None:
        return None, None
    if len(mutables) == 1:
        (start, end), mutable = next(iter(mutables.items()))
        if (start, end) == (0, container.num_channels):
            return layout, mutable.parallel_mask()
    # Several units (or units and fixed channels) side by side.
    return layout, layout.masks.container_mask(container)


def prefix_width(container) -> Optional[int]:
    """How many channels a mutable channel container keeps in single-subnet
    mode, when they are its first ones (the case of PSE units), else None
    (the caller then takes mmrazor's boolean-mask path)."""
    ranges = sorted(container.mutable_channels.items(), key=lambda r: r[0][0])
    if not ranges:
        return container.num_channels
    width, last_end, short = 0, 0, False
    for (start, end), mutable in ranges:
        kept = getattr(mutable, 'prefix_width', None)
        if start != last_end or short or kept is None:
            return None
        width += kept
        short = kept < end - start
        last_end = end
    return width if last_end == container.num_channels else None


class GroupStats:
    """The batch statistics of every group of one sliced step, for one batch
    norm: (K, C) means and unbiased variances, and which channels each
    group had active. :meth:`fold` writes them into the running statistics
    with the rule of the module docstring."""

    def __init__(self, bn, num_groups: int) -> None:
        self.bn = bn
        ref = bn.running_mean
        self.means = ref.new_zeros(num_groups, ref.numel())
        self.variances = ref.new_ones(num_groups, ref.numel())
        self.active = ref.new_zeros(num_groups, ref.numel())
        #: the group whose subnet runs now
        self.group = 0
        #: (group, channel indices, means, variances) of the groups whose
        #: kept channels were not the first ones
        self._scattered: List[Tuple[int, Tensor, Tensor, Tensor]] = []

    def batch_norm(self, x: Tensor, width: int, weight: Optional[Tensor],
                   bias: Optional[Tensor]) -> Tensor:
        """Normalise the current group's input (its first ``width``
        channels) with its batch statistics, and record them."""
        _check_group_size(x.shape[0], x.shape, self.means.shape[0])
        g = self.group
        self.active[g, :width] = 1.0
        return F.batch_norm(x, self.means[g, :width],
                            self.variances[g, :width], weight, bias, True,
                            1.0, self.bn.eps)

    def batch_norm_kept(self, x: Tensor, kept: Tensor,
                        weight: Optional[Tensor],
                        bias: Optional[Tensor]) -> Tensor:
        """:meth:`batch_norm` for kept channels that are not the first ones
        (a batch norm after a concatenation of pruned units, DenseNet's):
        ``kept`` is the boolean mask of the channels ``x`` holds."""
        _check_group_size(x.shape[0], x.shape, self.means.shape[0])
        index = kept.nonzero().squeeze(1)
        means = self.means.new_zeros(index.numel())
        variances = self.variances.new_ones(index.numel())
        out = F.batch_norm(x, means, variances, weight, bias, True, 1.0,
                           self.bn.eps)
        # Written into the (K, C) tables at the fold, on copies: the
        # backward of the other groups' batch norms holds views of them.
        self._scattered.append((self.group, index, means, variances))
        return out

    def fold(self) -> None:
        means, variances, active = self.means, self.variances, self.active
        if self._scattered:
            means, variances = means.clone(), variances.clone()
            active = active.clone()
            for g, index, mean, var in self._scattered:
                means[g, index] = mean
                variances[g, index] = var
                active[g, index] = 1.0
        _update_running_stats(self.bn, means, variances, active)


def _check_group_size(group_size: int, shape, num_groups: int) -> None:
    """Batch norm in training needs two values per channel in every group."""
    values = group_size
    for dim in shape[2:]:
        values *= dim
    if values < 2:
        raise ConfigError(
            f'a subnet group of {group_size} sample(s) ({num_groups} groups) '
            f'gives batch norm one value per channel (feature map '
            f'{tuple(shape[2:])}); batch norm needs two. Use '
            'train_dataloader.batch_size >= 2 * model.num_subnets and '
            'drop_last=True (train_dataloader.sampler or dataloader)')


def mask_channels(x: Tensor, mask: Tensor, layout: GroupLayout,
                  channel_dim: int = 1) -> Tensor:
    """Zero, for every sample, the channels its group does not have.

    Args:
        x (Tensor): (B, C, ...) if ``channel_dim == 1``, (B, ..., C) if -1.
        mask (Tensor): (K, C) boolean channel mask.
        layout (GroupLayout): the group of every sample.
    """
    per_sample = layout.per_sample(mask.to(x.device, x.dtype), x.shape[0])
    if channel_dim == 1:
        shape = per_sample.shape + (1, ) * (x.dim() - 2)
    else:
        shape = (x.shape[0], ) + (1, ) * (x.dim() - 2) + per_sample.shape[1:]
    return x * per_sample.view(shape)


def group_batch_norm(bn, x: Tensor, mask: Tensor,
                     layout: GroupLayout) -> Tensor:
    """Batch norm with each group's own statistics and channel mask.

    Args:
        bn (torch.nn.modules.batchnorm._BatchNorm): holds the affine
            parameters, running statistics, eps and momentum (full width).
        x (Tensor): (B, C, ...) input.
        mask (Tensor): (K, C) boolean channel mask.
        layout (GroupLayout): the group of every sample.

    Returns:
        Tensor: like ``x``; zero where a sample's subnet lacks the channel.
    """
    batch_size, channels = x.shape[:2]
    num_groups = layout.num_groups
    stat_dtype = (bn.running_mean.dtype
                  if bn.running_mean is not None else torch.float32)
    group_mask = mask.to(x.device, stat_dtype)
    if bn.affine:
        weight = bn.weight.unsqueeze(0) * group_mask
        bias = bn.bias.unsqueeze(0) * group_mask
    else:
        weight, bias = group_mask, torch.zeros_like(group_mask)

    use_batch_stats = bn.training or bn.running_mean is None
    record = bn.training and bn.track_running_stats
    if use_batch_stats:
        _check_group_size(min(layout.group_sizes(batch_size)), x.shape,
                          num_groups)
    if use_batch_stats:
        # Momentum 1: the buffers receive exactly each group's statistics.
        means = (torch.zeros_like(group_mask) if record else None)
        variances = (torch.ones_like(group_mask) if record else None)
        momentum = 1.0
    else:
        means = bn.running_mean.unsqueeze(0).repeat(num_groups, 1)
        variances = bn.running_var.unsqueeze(0).repeat(num_groups, 1)
        momentum = 0.0

    def flat(t):
        return None if t is None else t.view(-1)

    if layout.foldable(batch_size):
        n = batch_size // num_groups
        out = F.batch_norm(
            x.reshape(n, num_groups * channels, *x.shape[2:]), flat(means),
            flat(variances), weight.reshape(-1), bias.reshape(-1),
            use_batch_stats, momentum, bn.eps)
        # Not a view of the folded output: an in-place activation after
        # the norm (ReLU6) would otherwise send autograd through CopySlices,
        # a full copy of the activation in backward.
        out = torch.ops.aten._unsafe_view(out, x.shape)
    else:
        outs, indices = [], []
        for g in range(num_groups):
            index = layout.indices(g, batch_size, x.device)
            if index.numel() == 0:
                continue
            outs.append(
                F.batch_norm(x.index_select(0, index),
                             None if means is None else means[g],
                             None if variances is None else variances[g],
                             weight[g], bias[g], use_batch_stats, momentum,
                             bn.eps))
            indices.append(index)
        out = x.new_empty(x.shape).index_copy(0, torch.cat(indices),
                                              torch.cat(outs))
    if record:
        _update_running_stats(bn, means, variances, group_mask)
    return out


@torch.no_grad()
def _update_running_stats(bn, means: Tensor, variances: Tensor,
                          group_mask: Tensor) -> None:
    """Fold the groups' batch statistics into the running statistics: each
    channel averages the groups in which it is active (module docstring)."""
    active = group_mask > 0
    count = active.sum(0)
    weights = group_mask / count.clamp(min=1)
    mean = (means * weights).sum(0)
    var = (variances * weights).sum(0)
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    if bn.momentum is None:  # cumulative average; stays on the device
        factor = (1.0 / bn.num_batches_tracked).to(bn.running_mean.dtype)
    else:
        factor = bn.momentum
    seen = count > 0
    bn.running_mean.copy_(
        torch.where(seen, bn.running_mean.lerp(mean, factor),
                    bn.running_mean))
    bn.running_var.copy_(
        torch.where(seen, bn.running_var.lerp(var, factor), bn.running_var))
