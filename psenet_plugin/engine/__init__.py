from .hooks import PriorRecorderHook
from .loops import PriorEvolutionSearchLoop, TimedTrainLoop

__all__ = ['PriorRecorderHook', 'PriorEvolutionSearchLoop', 'TimedTrainLoop']
