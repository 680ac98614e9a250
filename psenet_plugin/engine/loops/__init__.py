from .prior_evolution_search_loop import PriorEvolutionSearchLoop
from .timed_train_loop import TimedTrainLoop

__all__ = ['PriorEvolutionSearchLoop', 'TimedTrainLoop']
