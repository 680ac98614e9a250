from .hooks import PriorRecorderHook
from .loops import PriorEvolutionSearchLoop

__all__ = ['PriorRecorderHook', 'PriorEvolutionSearchLoop']
