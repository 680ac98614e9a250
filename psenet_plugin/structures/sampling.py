"""Drawing subnets as unit-width vectors, and repairing them into a FLOPs
(or params) range.

Widths are channel numbers; ``candidates[u]`` lists unit u's candidate
widths, ascending. A random draw that misses a FLOPs range is *repaired*:
one unit at a time (chosen at random, weighted by how much FLOPs a step of
it moves) steps to its next smaller or larger candidate until the FLOPs are
in range. Repair keeps most of the draw (its prior-given character), unlike
rejection, which throws it away. Params ranges are repaired the same way
(``metric='params'``), and :func:`repair_to_ranges` meets a FLOPs and a
params range together.
"""
import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .flops import FlopsTable


def uniform_widths(candidates: Sequence[Sequence[int]],
                   rng: random.Random) -> np.ndarray:
    """One width per unit, uniform over each unit's candidates."""
    return np.array([rng.choice(c) for c in candidates], dtype=float)


def ratio_widths(candidates: Sequence[Sequence[int]],
                 ratio: float) -> np.ndarray:
    """A *ratio* subnet: every unit at the same relative position
    ``ratio`` (0: its narrowest width, 1: its widest) among its
    candidates, rounded to the nearest one. The max and min subnets are
    the ratio subnets of 1 and 0."""
    return np.array([c[int(round(ratio * (len(c) - 1)))] for c in candidates],
                    dtype=float)


def repair_to_range(widths: np.ndarray,
                    table: FlopsTable,
                    candidates: Sequence[Sequence[int]],
                    low: float,
                    high: float,
                    rng: random.Random,
                    max_steps: Optional[int] = None,
                    preference: Optional[Callable[[int, int], float]] = None,
                    metric: str = 'flops') -> Optional[np.ndarray]:
    """Move ``widths`` into ``low <= FLOPs <= high`` by single-unit steps.

    Args:
        widths (np.ndarray): (U, ) candidate widths; not modified.
        table (FlopsTable): the FLOPs model.
        candidates: every unit's candidate widths, ascending.
        low, high (float): the FLOPs (or params) range.
        rng (random.Random): the random source.
        max_steps (int, optional): give up after this many steps. Defaults
            to the total number of candidate steps of all units.
        preference (callable, optional): ``(unit, width) -> weight``; steps
            towards widths it prefers are more likely (the prior's
            probabilities during a prior search).
        metric (str): ``'flops'`` or ``'params'``: what the range bounds.
            Defaults to ``'flops'``.

    Returns:
        np.ndarray | None: the repaired widths, or None if the range was
        overshot both ways (narrower than one step) or steps ran out.
    """
    widths = widths.copy()
    index = [{w: i for i, w in enumerate(c)} for c in candidates]
    steps = max_steps or sum(len(c) for c in candidates)

    def measure(vectors):
        return table.measure_batch(metric, vectors)

    flops = measure(widths)[0]
    direction = 0
    for _ in range(steps):
        if low <= flops <= high:
            return widths
        want = -1 if flops > high else 1
        if direction and want != direction:
            return None  # stepped over the whole range
        direction = want
        movable = [
            u for u, w in enumerate(widths)
            if 0 <= index[u][int(w)] + want < len(candidates[u])
        ]
        if not movable:
            return None
        # Candidate next vectors, weighted by the FLOPs each step moves, so
        # large layers move first and small ones fine-tune.
        trials = np.repeat(widths[None], len(movable), axis=0)
        for row, u in enumerate(movable):
            trials[row, u] = candidates[u][index[u][int(widths[u])] + want]
        weights = np.abs(measure(trials) - flops) + 1e-9
        if preference is not None:
            weights = weights * np.array([
                preference(u, int(trials[row, u])) + 1e-3
                for row, u in enumerate(movable)
            ])
        pick = rng.choices(range(len(movable)), weights=weights)[0]
        widths = trials[pick]
        flops = measure(widths)[0]
    return widths if low <= flops <= high else None


def repair_to_ranges(widths: np.ndarray,
                     table: FlopsTable,
                     candidates: Sequence[Sequence[int]],
                     ranges: Dict[str, Tuple[float, float]],
                     rng: random.Random,
                     preference: Optional[Callable[[int, int], float]] = None,
                     rounds: int = 3) -> Optional[np.ndarray]:
    """Move ``widths`` into every range of ``ranges`` (``'flops'`` and/or
    ``'params'`` -> (low, high)) by :func:`repair_to_range`, one range
    after the other, for at most ``rounds`` rounds (repairing the params
    may push the FLOPs out again).

    Returns:
        np.ndarray | None: widths inside every range, or None.
    """
    for _ in range(rounds):
        for metric, (low, high) in ranges.items():
            widths = repair_to_range(widths, table, candidates, low, high,
                                     rng, preference=preference,
                                     metric=metric)
            if widths is None:
                return None
        if all(low <= table.measure_batch(metric, widths)[0] <= high
               for metric, (low, high) in ranges.items()):
            return widths
    return None


def flops_uniform_widths(table: FlopsTable,
                         candidates: Sequence[Sequence[int]],
                         rng: random.Random,
                         tolerance: float = 0.05,
                         tries: int = 10) -> np.ndarray:
    """A subnet whose FLOPs are (nearly) uniform over [min, max]: draw a
    target uniformly, then repair a uniform draw into target +- tolerance.
    """
    lo = table.flops_batch(np.array([c[0] for c in candidates], float))[0]
    hi = table.flops_batch(np.array([c[-1] for c in candidates], float))[0]
    widths = uniform_widths(candidates, rng)
    for _ in range(tries):
        target = rng.uniform(lo, hi)
        repaired = repair_to_range(widths, table, candidates,
                                   target * (1 - tolerance),
                                   target * (1 + tolerance), rng)
        if repaired is not None:
            return repaired
    return widths


def sandwich_kinds(num_subnets: int, with_min: bool = True) -> List[str]:
    """max, min, then random: the sandwich rule for K subnets; without the
    min (``with_min=False``): max, then random."""
    fixed = ['max', 'min'] if with_min else ['max']
    kinds = fixed + ['random'] * max(0, num_subnets - len(fixed))
    return kinds[:num_subnets]
