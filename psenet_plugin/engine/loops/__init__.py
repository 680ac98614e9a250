from .prior_evolution_search_loop import PriorEvolutionSearchLoop

__all__ = ['PriorEvolutionSearchLoop']
