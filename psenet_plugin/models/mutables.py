"""The PSE mutable channel and channel unit.

A channel unit is a group of coupled channels (mmrazor's vocabulary); its
choice is how many of them a subnet keeps, from the left. In single-subnet
mode a unit holds one choice and the dynamic ops slice their weights (this is
mmrazor's ``OneShotMutableChannelUnit``, unchanged). In parallel mode it
also holds one width per subnet group, from which the step's
:class:`~.parallel.GroupMasks` builds its (K, C) channel mask on the device
(see :mod:`.parallel`).

A layer may see a unit's channels expanded: a flatten of (C, H, W) maps
into C*H*W features (VGG's fully connected classifier) gives the first
linear layer H*W inputs per channel. Channel c then owns the block of
inputs ``c*H*W .. (c+1)*H*W - 1`` (:class:`PSEExpandedChannel`): a subnet
that keeps the first w channels keeps the first w*H*W inputs, in both
executions.
"""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.model.utils import _BatchNormXd
from mmrazor.models.mutables import (DerivedMutable, OneShotMutableChannel,
                                     OneShotMutableChannelUnit)
from mmrazor.models.mutables.mutable_channel import MutableChannelContainer
from mmrazor.registry import MODELS

from ..errors import ConfigError
from mmcv.cnn.bricks import Conv2dAdaptivePadding

from .dynamic_ops import (PSEBatchNorm2d, PSEConv2d, PSEConv2dAdaptivePadding,
                          PSELinear)
from .parallel import GroupLayout

# The torch modules a PSE unit makes dynamic. Everything else in a unit
# leaves it non-prunable (mmrazor's tracer checks that).
PSE_DYNAMIC_OPS = {
    nn.Conv2d: PSEConv2d,
    Conv2dAdaptivePadding: PSEConv2dAdaptivePadding,
    nn.BatchNorm2d: PSEBatchNorm2d,
    _BatchNormXd: PSEBatchNorm2d,
    nn.Linear: PSELinear,
}

Choice = Union[int, float]


class PSEMutableChannel(OneShotMutableChannel):
    """A unit's channels: one choice, plus one width per group in parallel
    mode.

    Attributes:
        parallel_layout (GroupLayout | None): set in parallel mode.
        parallel_widths (list[int] | None): the width of every group.
    """

    def __init__(self, num_channels: int, candidate_choices: List[Choice],
                 choice_mode: str = 'number', **kwargs) -> None:
        super().__init__(num_channels, candidate_choices, choice_mode,
                         **kwargs)
        self.parallel_layout: Optional[GroupLayout] = None
        self.parallel_widths: Optional[List[int]] = None

    def set_width(self, width: int) -> None:
        """Keep the first ``width`` channels (single-subnet mode)."""
        self.mask.fill_(0.0)
        self.mask[:width] = 1.0
        self._width = (self._mask_key(), int(width))

    def _mask_key(self) -> tuple:
        # Which mask, and which write of it (a load or a move gives a new
        # storage or a new version).
        return (self.mask.data_ptr(), self.mask._version)

    @property
    def prefix_width(self) -> Optional[int]:
        """How many channels the current choice keeps, when they are the
        first ones (always, unless something wrote the mask otherwise), else
        None. Known on the host without reading the mask after
        :meth:`set_width`, so the sliced ops slice without a device sync."""
        cached = getattr(self, '_width', None)
        if cached is not None and cached[0] == self._mask_key():
            return cached[1]
        mask = self.mask.bool()
        width = int(mask.sum().item())
        prefix = bool(mask[:width].all().item())
        self._width = (self._mask_key(), width if prefix else None)
        return self._width[1]

    @property
    def current_choice(self) -> Choice:
        """The current choice (a channel number, or a ratio in ratio mode),
        from the host-side width when the mask is a prefix: mmrazor's
        getter counts the mask on the device (``.item()``), and mmrazor's
        mutator reads every unit's choice several times per step."""
        width = self.prefix_width
        if width is None:
            return super().current_choice
        return width if self.is_num_mode else self._num2ratio(width)

    @current_choice.setter
    def current_choice(self, choice: Choice) -> None:
        OneShotMutableChannel.current_choice.fset(self, choice)
        # What mmrazor's setter kept (SquentialMutableChannel).
        width = self._ratio2num(choice) if isinstance(choice,
                                                      float) else choice
        width = min(int(width), self.num_channels)
        # Anything else (a negative number) is read back from the mask.
        self._width = (self._mask_key(), width) if width >= 0 else None

    def set_parallel(self, widths: Optional[Sequence[int]],
                     layout: Optional[GroupLayout] = None) -> None:
        """Enter parallel mode with one width per group, or leave it
        (``widths=None``). The widths are registered with the step's
        ``layout``, which builds every unit's mask on the device at once
        (:class:`~.parallel.GroupMasks`)."""
        if widths is None:
            self.parallel_layout = self.parallel_widths = None
            return
        if layout is None:
            raise ValueError('parallel mode needs the group layout of the '
                             'step (a GroupLayout)')
        self.parallel_widths = [int(w) for w in widths]
        self.parallel_layout = layout
        layout.masks.set(self, self.parallel_widths, self.num_channels)

    def parallel_mask(self) -> torch.Tensor:
        """(K, C) boolean: group k keeps its first ``widths[k]`` channels;
        on the device of the unit's mask, built once per step."""
        return self.parallel_layout.masks.mask(self, self.mask.device)

    def expand_mutable_channel(self, expand_ratio: Union[int, float]):
        """The unit's channels as a layer that sees each of them
        ``expand_ratio`` times sees them (mmrazor calls this for a layer
        whose input is the unit's output flattened): a
        :class:`PSEExpandedChannel` for a whole ratio; mmrazor's derived
        mutable otherwise (the mutator refuses it for parallel mode)."""
        if float(expand_ratio).is_integer() and expand_ratio >= 1:
            return PSEExpandedChannel(self, int(expand_ratio))
        return super().expand_mutable_channel(expand_ratio)


class PSEExpandedChannel(DerivedMutable):
    """A unit's channels, each repeated ``expand_ratio`` times in a row: what
    a layer that takes the unit's (C, H, W) output flattened sees
    (``expand_ratio = H * W``). Channel c owns the features
    ``c * expand_ratio .. (c + 1) * expand_ratio - 1``, so keeping the first
    w channels keeps the first ``w * expand_ratio`` features: the
    single-subnet mode slices them as a prefix, and parallel mode expands
    every group's mask the same way. mmrazor's own expansion (a closure over
    the unit's mutable) gives the same mask; this one also knows its source
    and its ratio (for views, group masks and FLOPs) and follows the source
    through a deep copy.

    Args:
        source (PSEMutableChannel): the unit's channels.
        expand_ratio (int): how many features each channel owns.
    """

    def __init__(self, source: PSEMutableChannel, expand_ratio: int) -> None:
        super().__init__(self._expanded_choice, self._expanded_mask,
                         [source])
        self.expand_ratio = int(expand_ratio)

    @property
    def source(self) -> PSEMutableChannel:
        """The unit's mutable channel."""
        return next(iter(self.source_mutables))

    @property
    def num_channels(self) -> int:
        return self.source.num_channels * self.expand_ratio

    def _expanded_mask(self) -> torch.Tensor:
        return self.source.current_mask.repeat_interleave(self.expand_ratio)

    def _expanded_choice(self) -> torch.Tensor:
        # mmrazor's expanded channels choose by mask
        return self._expanded_mask()

    @property
    def prefix_width(self) -> Optional[int]:
        """How many features the current choice keeps, when they are the
        first ones, else None."""
        width = self.source.prefix_width
        return None if width is None else width * self.expand_ratio

    @property
    def parallel_layout(self) -> Optional[GroupLayout]:
        return self.source.parallel_layout

    def parallel_mask(self) -> torch.Tensor:
        """(K, C * expand_ratio) boolean: every group's channel mask, each
        channel repeated over its features."""
        return self.source.parallel_mask().repeat_interleave(
            self.expand_ratio, dim=1)


@MODELS.register_module()
class PSEMutableChannelUnit(OneShotMutableChannelUnit):
    """AutoSlim-style channel unit with a parallel mode for PSE-Net.

    Args:
        num_channels (int): the unit's full number of channels.
        candidate_choices (list[int | float]): candidate widths, as ratios of
            ``num_channels`` (``choice_mode='ratio'``) or channel numbers
            (``'number'``). Defaults to ``[0.5, 1.0]``.
        choice_mode (str): ``'ratio'`` or ``'number'``. Defaults to
            ``'ratio'``.
        divisor (int): widths are rounded to multiples of it, except the
            full width (ratio 1.0, or ``num_channels`` in number mode),
            which is always a candidate as it is (the max subnet is the
            supernet), and no rounding goes beyond the full width (it keeps
            all channels instead). Defaults to 1.
        min_value (int): smallest width after rounding. Defaults to 1.
        min_ratio (float): rounding never drops below this fraction.
            Defaults to 0.9.

    A choice may be given as a candidate ratio or as the channel number it
    stands for (the int widths mmrazor's ``EvolutionSearchLoop`` writes):
    both set the same width.
    """

    def __init__(self,
                 num_channels: int,
                 candidate_choices: List[Choice] = [0.5, 1.0],
                 choice_mode: str = 'ratio',
                 divisor: int = 1,
                 min_value: int = 1,
                 min_ratio: float = 0.9) -> None:
        super().__init__(num_channels, candidate_choices, choice_mode,
                         divisor, min_value, min_ratio)
        self.mutable_channel = PSEMutableChannel(num_channels,
                                                 self.candidate_choices,
                                                 choice_mode)
        # Candidates were made divisible as width / num_channels, so
        # rounding recovers the exact width (int() of the product may not).
        self._widths = {
            c: c if self.is_num_mode else round(c * num_channels)
            for c in self.candidate_choices
        }

    def _make_divisible(self, choice_int: int) -> int:
        """mmrazor's rounding to ``divisor``, except that the full width is
        kept as it is and rounding stops at the full width (a unit of 58
        channels at divisor 8 keeps 56 or 58, not 56 or 64; one of 4
        channels keeps 4). Widths beyond the unit (channel numbers larger
        than it) are left for the mutator to refuse."""
        if choice_int >= self.num_channels:
            return choice_int
        return min(super()._make_divisible(choice_int), self.num_channels)

    def prepare_for_pruning(self, model: nn.Module) -> None:
        """Replace the unit's modules with PSE dynamic ops and register the
        unit's mutable channel on them.

        A new unit starts at its max width; a unit whose choice was set
        before (a subnet loaded in mmrazor's ``'mutator'`` mode, e.g. by
        ``sub_model``) keeps it. mmrazor's ``OneShotMutableChannelUnit``
        resets it to the max width here, silently.
        """
        width = self.current_width
        self._replace_with_dynamic_ops(model, PSE_DYNAMIC_OPS)
        self._register_channel_container(model, MutableChannelContainer)
        self._register_mutable_channel(self.mutable_channel)
        self.mutable_channel.set_width(width)

    # widths

    @property
    def candidate_widths(self) -> List[int]:
        """The distinct channel numbers of the candidates, ascending."""
        return sorted(set(self._widths.values()))

    def width_of(self, choice: Choice) -> int:
        """The channel number a choice keeps. ``choice`` is a candidate (ratio
        or number) or a channel number a candidate stands for."""
        if isinstance(choice, int) and not isinstance(choice, bool):
            if choice in self._widths.values():
                return choice
        elif isinstance(choice, float) and not self.is_num_mode:
            if choice in self._widths:
                return self._widths[choice]
        raise ConfigError(
            f'unit {self.name!r}: choice {choice!r} is not a candidate; '
            f'accepted: one of the candidate choices '
            f'{sorted(set(self.candidate_choices))} or the channel numbers '
            f'they stand for {self.candidate_widths}')

    def choice_of(self, width: int) -> Choice:
        """The candidate choice that keeps ``width`` channels."""
        self.width_of(width)  # refuses unknown widths
        return min(c for c, w in self._widths.items() if w == width)

    @property
    def current_width(self) -> int:
        """The number of channels the current choice keeps."""
        width = self.mutable_channel.prefix_width
        if width is None:
            return int(self.mutable_channel.mask.sum().item())
        return width

    @property
    def current_choice(self) -> Choice:
        return self.mutable_channel.current_choice

    @current_choice.setter
    def current_choice(self, choice: Choice) -> None:
        self.mutable_channel.set_width(self.width_of(choice))

    def sample_choice(self, rng=None) -> Choice:
        """A candidate drawn uniformly over the distinct widths (from
        ``rng``, a ``random.Random``, if given)."""
        import random
        return self.choice_of((rng or random).choice(self.candidate_widths))

    # parallel mode

    def set_parallel_widths(self, widths: Optional[Sequence[int]],
                            layout: Optional[GroupLayout] = None) -> None:
        """Give every group its width (parallel mode), or ``None`` to leave
        parallel mode."""
        self.mutable_channel.set_parallel(widths, layout)
