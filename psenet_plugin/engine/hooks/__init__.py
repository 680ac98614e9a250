from .prior_recorder import PriorRecorderHook

__all__ = ['PriorRecorderHook']
