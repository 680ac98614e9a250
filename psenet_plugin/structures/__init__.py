from .flops import FlopsTable
from .sampling import (flops_uniform_widths, ratio_widths, repair_to_range,
                       sandwich_kinds, uniform_widths)

__all__ = [
    'FlopsTable', 'flops_uniform_widths', 'ratio_widths', 'repair_to_range',
    'sandwich_kinds', 'uniform_widths'
]
