"""Training for a wall-clock budget, the learning rate annealed by time.

Comparing two training methods "at equal time" with iteration schedules
needs each method's step time in advance, and on a shared or thermally
throttled machine the speed drifts by 10-20% within minutes: a probe-sized
schedule left one supernet 0.84x and then 1.18x the other's time. This
loop trains until ``max_seconds`` have passed instead, and anneals the
learning rate by the elapsed fraction of the budget, so a slower stretch
costs iterations, never the end of the schedule::

    train_cfg = dict(type='TimedTrainLoop', max_seconds=420,
                     warmup_ratio=0.05)
    param_scheduler = None   # the loop sets the learning rate

Any model and algorithm trains under it (mmpretrain classifiers, mmrazor
algorithms that step their own optimizer): it is mmengine's
``IterBasedTrainLoop`` with ``max_iters`` moved, at each iteration, to the
iteration count the remaining time allows at the recent step time, so the
logger's ETA is right and the last iteration is an ordinary last iteration
(``CheckpointHook(save_last=True)`` saves it, validation runs after it).
The seconds spent are kept in the message hub (``train_seconds``), saved in
every checkpoint: ``--resume`` continues the same budget and schedule.
Under several processes (mmengine's launcher) rank 0's clock decides for
all: the elapsed time and the last iteration are broadcast after each
iteration, so every rank trains the same iterations with the same learning
rates (on its own clock a slower rank would stop earlier and leave the
others waiting in the gradients' all-reduce).
"""
import math
import time
from typing import Dict, List, Optional, Tuple, Union

from mmengine.hooks import Hook
from mmengine.registry import LOOPS
from mmengine.runner import IterBasedTrainLoop
from torch.utils.data import DataLoader

from ...errors import ConfigError

#: runtime-info key of the training seconds spent (checkpointed)
SECONDS_KEY = 'train_seconds'
#: the clock (a test gives a simulated one)
_clock = time.perf_counter


def timed_lr_factor(fraction: float, warmup_ratio: float,
                    warmup_start_factor: float) -> float:
    """The learning rate's factor at ``fraction`` of the budget: linear from
    ``warmup_start_factor`` to 1 over the first ``warmup_ratio``, then
    cosine from 1 to 0 at the end of the budget."""
    fraction = min(max(fraction, 0.0), 1.0)
    if fraction < warmup_ratio:
        return warmup_start_factor + (1 - warmup_start_factor) * (
            fraction / warmup_ratio)
    rest = (fraction - warmup_ratio) / max(1e-12, 1 - warmup_ratio)
    return 0.5 * (1 + math.cos(math.pi * rest))


# Registered in mmengine's root registry: every downstream scope (mmrazor,
# mmpretrain, mmdet, mmseg) finds it through its parent.
@LOOPS.register_module()
class TimedTrainLoop(IterBasedTrainLoop):
    """Iteration-based training that ends after ``max_seconds`` of training.

    Args:
        runner (Runner): the runner.
        dataloader (DataLoader or dict): the training dataloader.
        max_seconds (float): the budget: wall-clock seconds from the first
            iteration's start to the last iteration's end (data loading
            and any validation included).
        max_iters (int, optional): an upper bound on the iterations too.
            Defaults to None (none).
        warmup_ratio (float): the fraction of the budget over which the
            learning rate rises linearly. Defaults to 0.05.
        warmup_start_factor (float): the warm-up's first factor. Defaults
            to 0.1.
        val_begin, val_interval, dynamic_intervals: as mmengine's
            ``IterBasedTrainLoop`` (validation also runs after the last
            iteration when a val loop is configured).

    The learning rate of every parameter group is its ``initial_lr`` (the
    optimizer's configured one) times :func:`timed_lr_factor` of the elapsed
    fraction at the end of the previous iteration, set before each one; a
    configured ``param_scheduler`` is refused (two schedules would fight).
    An iteration is the last when the next one would end further past the
    budget than it falls short of it.
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 max_seconds: float,
                 max_iters: Optional[int] = None,
                 warmup_ratio: float = 0.05,
                 warmup_start_factor: float = 0.1,
                 val_begin: int = 1,
                 val_interval: int = 1000,
                 dynamic_intervals: Optional[List[Tuple[int, int]]] = None):
        if not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
            raise ConfigError('train_cfg.max_seconds of TimedTrainLoop must '
                              f'be a positive number, got {max_seconds!r}')
        if max_iters is not None and not (isinstance(max_iters, int)
                                          and max_iters > 0):
            raise ConfigError('train_cfg.max_iters of TimedTrainLoop must be '
                              f'a positive integer or None, got {max_iters!r}')
        if not 0 <= warmup_ratio < 1:
            raise ConfigError('train_cfg.warmup_ratio of TimedTrainLoop must '
                              f'lie in [0, 1), got {warmup_ratio!r}')
        if not 0 < warmup_start_factor <= 1:
            raise ConfigError('train_cfg.warmup_start_factor of '
                              'TimedTrainLoop must lie in (0, 1], got '
                              f'{warmup_start_factor!r}')
        self.max_seconds = float(max_seconds)
        self.iters_bound = max_iters
        self.warmup_ratio = warmup_ratio
        self.warmup_start_factor = warmup_start_factor
        # a placeholder until the first iteration estimates it
        super().__init__(runner, dataloader, max_iters or 2**62, val_begin,
                         val_interval, dynamic_intervals)
        self._spent = 0.0  # seconds of earlier runs (resume)
        self._start = self._last_end = None
        self._step = None  # recent seconds per iteration
        self._fraction = 0.0  # of the budget, at the last iteration's end

    def run(self):
        if self.runner.param_schedulers:
            raise ConfigError(
                'train_cfg.type=TimedTrainLoop sets the learning rate by '
                'elapsed time; remove param_scheduler from the config (set '
                'it to None)')
        self._spent = float(
            self.runner.message_hub.get_info(SECONDS_KEY, 0.0))
        self._fraction = self._spent / self.max_seconds
        # before every other hook's after_train_iter: CheckpointHook and
        # LoggerHook then see this iteration's decision
        self.runner.register_hook(_BudgetHook(self), priority='VERY_HIGH')
        return super().run()

    def elapsed(self) -> float:
        """Seconds of training so far, earlier (resumed) runs included."""
        if self._start is None:
            return self._spent
        return self._spent + _clock() - self._start

    def run_iter(self, data_batch) -> None:
        if self._start is None:
            # from the first iteration's start: the runner's set-up and
            # the workers' start are not training
            self._start = self._last_end = _clock()
        # the fraction every rank shares (see _after_step)
        factor = timed_lr_factor(self._fraction, self.warmup_ratio,
                                 self.warmup_start_factor)
        for group in self._param_groups():
            group.setdefault('initial_lr', group['lr'])
            group['lr'] = group['initial_lr'] * factor
        super().run_iter(data_batch)

    def _after_step(self) -> None:
        """At the end of an iteration (``self._iter`` not yet counted):
        record the seconds, and move ``max_iters`` to the iterations the
        rest of the budget allows at the recent step time (data loading
        included); none more when the next one would end further past the
        budget than this one falls short of it."""
        now = _clock()
        step = now - self._last_end
        self._last_end = now
        # a short memory: the estimate follows the machine's drift
        self._step = step if self._step is None else \
            0.8 * self._step + 0.2 * step
        elapsed = self.elapsed()
        left = self.max_seconds - elapsed
        more = max(0, int(left / max(self._step, 1e-9) + 0.5))
        if self.iters_bound is not None:
            more = min(more, self.iters_bound - self._iter - 1)
        elapsed, more = _from_rank0(elapsed, max(0, more))
        self.runner.message_hub.update_info(SECONDS_KEY, elapsed)
        self._fraction = elapsed / self.max_seconds
        self._max_iters = self._iter + 1 + more

    def _param_groups(self):
        wrapper = self.runner.optim_wrapper
        wrappers = wrapper.values() if hasattr(wrapper, 'values') else [
            wrapper
        ]
        for one in wrappers:
            yield from one.optimizer.param_groups


def _from_rank0(elapsed: float, more: int) -> Tuple[float, int]:
    """Rank 0's ``(elapsed, more)`` on every rank (the values themselves
    in a single process)."""
    from mmengine import dist
    if dist.get_world_size() == 1:
        return elapsed, more
    import torch
    data = torch.tensor([elapsed, float(more)], dtype=torch.float64)
    dist.broadcast(data, src=0)
    return float(data[0]), int(data[1])


class _BudgetHook(Hook):
    """Hands the end of each training iteration to its TimedTrainLoop."""

    def __init__(self, loop: TimedTrainLoop):
        self.loop = loop

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self.loop._after_step()
