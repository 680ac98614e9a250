"""A resource estimator backed by the exact FLOPs table.

mmrazor 1.0.0's ``ResourceEstimator`` counts a dynamic (still prunable)
model wrongly (no counter for dynamic batch norm, depthwise groups counted
as dense: 702.9 vs 682.3 MFLOPs for the max MobileNetV2-1.5x) and ignores
its ``input_shape`` argument. This estimator has the same interface
(``estimate(model) -> dict``), so mmrazor's loops can use it through
``estimator_cfg``:

* ``SubnetValLoop`` hands it the supernet (PSENet, or any algorithm with a
  one-shot channel mutator, e.g. AutoSlim): the current subnet is counted
  with the exact table, in microseconds;
* ``EvolutionSearchLoop`` and ``AutoSlimGreedySearchLoop`` hand it the
  sliced static architecture of each candidate (a copy, no mutator): it is
  counted with mmengine's ``get_model_complexity_info``, the convention the
  table follows (``'all'``), at ``input_shape``, which is then required.
"""
from typing import Dict, Optional, Sequence

import torch
from mmengine.model import is_model_wrapper
from mmrazor.models.architectures.dynamic_ops import DynamicChannelMixin
from mmrazor.registry import TASK_UTILS

from ..errors import ConfigError
from ..structures import FlopsTable
from .channel_widths import ChannelWidths, flops_table_of


@TASK_UTILS.register_module()
class SubnetFlopsEstimator:
    """FLOPs and parameters of the model's current subnet, in millions.

    Args:
        input_shape (Sequence[int], optional): (1, C, H, W). Defaults to the
            shape the algorithm's FLOPs table was built for (PSENet's
            ``input_shape``, or the mutator's demo input). Required to count
            a static model (the sliced candidates of mmrazor's
            ``EvolutionSearchLoop`` and ``AutoSlimGreedySearchLoop``).
        units (str): ``'M'`` (millions, as mmrazor reports) or ``'G'``.
            Defaults to ``'M'``.
    """

    def __init__(self,
                 input_shape: Optional[Sequence[int]] = None,
                 units: str = 'M') -> None:
        scales = {'M': 1e6, 'G': 1e9}
        if units not in scales:
            raise ConfigError(f'estimator units={units!r}; accepted: M, G')
        if input_shape is not None and (
                not isinstance(input_shape, (list, tuple))
                or len(input_shape) != 4
                or not all(isinstance(v, int) and v > 0
                           for v in input_shape)):
            raise ConfigError(
                f'estimator_cfg.input_shape={input_shape!r}; accepted: '
                '(1, C, H, W), positive integers')
        self.input_shape = tuple(input_shape) if input_shape else None
        self.scale = scales[units]

    def table(self, model) -> FlopsTable:
        """The exact FLOPs table of a one-shot channel supernet."""
        return flops_table_of(model, self.input_shape)

    def estimate(self, model, **kwargs) -> Dict[str, float]:
        """The current subnet's ``flops`` and ``params``: of a supernet
        from its FLOPs table, of a static model by counting it."""
        inner = model.module if is_model_wrapper(model) else model
        if getattr(inner, 'mutator', None) is not None and hasattr(
                inner, 'architecture'):
            table = self.table(inner)
            widths = ChannelWidths(inner.mutator).current_widths
            return dict(
                flops=table.flops(widths) / self.scale,
                params=table.params(widths) / self.scale)
        dynamic = [
            name for name, m in inner.named_modules()
            if isinstance(m, DynamicChannelMixin)
        ]
        if dynamic:
            raise ConfigError(
                f'SubnetFlopsEstimator: {type(inner).__name__} holds dynamic '
                f'ops (e.g. {dynamic[0]!r}) but no mutator, so its subnet is '
                'unknown; accepted: a supernet algorithm (PSENet, AutoSlim) '
                'or a static model (sliced subnet)')
        return self.count_static(inner)

    def count_static(self, model: torch.nn.Module) -> Dict[str, float]:
        """FLOPs and params of a static model, by mmengine's counter (the
        FLOPs table's ``'all'`` convention)."""
        from mmengine.analysis import get_model_complexity_info
        if self.input_shape is None:
            raise ConfigError(
                'estimator_cfg.input_shape is not set: SubnetFlopsEstimator '
                f'was handed a static {type(model).__name__} (a sliced '
                'subnet, as mmrazor\'s EvolutionSearchLoop and '
                'AutoSlimGreedySearchLoop hand it), whose input size it '
                'cannot know; accepted: input_shape=(1, C, H, W), e.g. the '
                'mutator\'s parse_cfg.demo_input')
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                info = get_model_complexity_info(
                    model,
                    input_shape=self.input_shape[1:],
                    show_table=False,
                    show_arch=False)
        finally:
            model.train(was_training)
        return dict(
            flops=info['flops'] / self.scale,
            params=info['params'] / self.scale)
