from .hooks import PriorRecorderHook

__all__ = ['PriorRecorderHook']
