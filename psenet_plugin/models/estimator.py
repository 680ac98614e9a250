"""A resource estimator backed by the exact FLOPs table.

mmrazor 1.0.0's ``ResourceEstimator`` counts a dynamic (still prunable)
model wrongly (no counter for dynamic batch norm, depthwise groups counted
as dense: 702.9 vs 682.3 MFLOPs for the max MobileNetV2-1.5x) and ignores
its ``input_shape`` argument. This estimator has the same interface
(``estimate(model) -> dict``), so mmrazor's loops (``SubnetValLoop``,
``EvolutionSearchLoop``) can use it through ``estimator_cfg``.
"""
from typing import Dict, Optional, Sequence

from mmengine.model import is_model_wrapper
from mmrazor.registry import TASK_UTILS

from ..errors import ConfigError
from ..structures import FlopsTable


@TASK_UTILS.register_module()
class SubnetFlopsEstimator:
    """FLOPs and parameters of the model's current subnet, in millions.

    Args:
        input_shape (Sequence[int], optional): (1, C, H, W). Defaults to the
            shape the algorithm's FLOPs table was built for.
        units (str): ``'M'`` (millions, as mmrazor reports) or ``'G'``.
            Defaults to ``'M'``.
    """

    def __init__(self,
                 input_shape: Optional[Sequence[int]] = None,
                 units: str = 'M') -> None:
        scales = {'M': 1e6, 'G': 1e9}
        if units not in scales:
            raise ConfigError(f'estimator units={units!r}; accepted: M, G')
        self.input_shape = tuple(input_shape) if input_shape else None
        self.scale = scales[units]
        self._tables: Dict[int, FlopsTable] = {}

    def table(self, model) -> FlopsTable:
        model = model.module if is_model_wrapper(model) else model
        if not hasattr(model, 'mutator') or not hasattr(model, 'flops_table'):
            raise ConfigError(
                'SubnetFlopsEstimator needs a PSENet model (a mutator and a '
                f'FLOPs table); got {type(model).__name__}')
        if self.input_shape is None:
            return model.flops_table
        key = id(model)
        if key not in self._tables:
            self._tables[key] = FlopsTable.from_model(
                model.architecture, model.mutator, self.input_shape)
        return self._tables[key]

    def estimate(self, model, **kwargs) -> Dict[str, float]:
        """The current subnet's ``flops`` and ``params``."""
        table = self.table(model)
        inner = model.module if is_model_wrapper(model) else model
        widths = inner.mutator.current_widths
        return dict(
            flops=table.flops(widths) / self.scale,
            params=table.params(widths) / self.scale)
