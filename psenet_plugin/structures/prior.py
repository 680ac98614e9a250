"""What supernet training saw: the raw material of the prior (PSE-Net,
idea 2).

Every training step trains K subnets; for each, the prior-recording hook
adds its loss to the statistics of every (unit, width) it used, and keeps
the N lowest-loss subnets. From these per-unit, per-width average losses the
search builds its sampling distributions (issue: prior-sampling search).

The statistics are plain numbers in plain containers, so they go into
mmengine checkpoints (and load under ``weights_only=True``) and into JSON
prior files unchanged.
"""
import heapq
import json
from typing import Dict, List, Optional, Sequence

from ..errors import ConfigError
from .io import atomic_write_json

PRIOR_FORMAT = 'psenet-prior-stats/1'


class SubnetLossStats:
    """Per unit and width: the sum and count of recorded subnet losses;
    plus the ``top_n`` lowest-loss subnets seen.

    Args:
        top_n (int): how many best subnets to keep. Defaults to 100.
    """

    def __init__(self, top_n: int = 100) -> None:
        if top_n < 0:
            raise ConfigError(f'top_n={top_n}; accepted: an integer >= 0')
        self.top_n = top_n
        self.units: Dict[str, Dict[int, List[float]]] = {}
        # A max-heap by loss (stored negated) of (−loss, order, widths).
        self._top: List = []
        self.num_records = 0

    def update(self, widths: Sequence[Dict[str, int]],
               losses: Sequence[float]) -> None:
        """Record subnets (unit -> width) with their losses."""
        for subnet, loss in zip(widths, losses):
            loss = float(loss)
            for unit, width in subnet.items():
                entry = self.units.setdefault(unit, {}).setdefault(
                    int(width), [0.0, 0])
                entry[0] += loss
                entry[1] += 1
            self.num_records += 1
            if self.top_n:
                item = (-loss, self.num_records,
                        {u: int(w)
                         for u, w in subnet.items()})
                if len(self._top) < self.top_n:
                    heapq.heappush(self._top, item)
                elif loss < -self._top[0][0]:
                    heapq.heapreplace(self._top, item)

    def mean_loss(self, unit: str, width: int) -> Optional[float]:
        entry = self.units.get(unit, {}).get(int(width))
        return entry[0] / entry[1] if entry and entry[1] else None

    def count(self, unit: str, width: int) -> int:
        entry = self.units.get(unit, {}).get(int(width))
        return entry[1] if entry else 0

    @property
    def top(self) -> List[Dict]:
        """The best subnets, lowest loss first."""
        return [
            dict(loss=-neg, widths=widths)
            for neg, _, widths in sorted(self._top, key=lambda t: -t[0])
        ]

    # (de)serialisation

    def state_dict(self) -> Dict:
        return dict(
            format=PRIOR_FORMAT,
            top_n=self.top_n,
            num_records=self.num_records,
            units={
                unit: {
                    'widths': sorted(entries),
                    'loss_sum': [entries[w][0] for w in sorted(entries)],
                    'count': [entries[w][1] for w in sorted(entries)],
                }
                for unit, entries in self.units.items()
            },
            top=[[neg, order, widths] for neg, order, widths in self._top])

    def load_state_dict(self, state: Dict) -> None:
        if state.get('format') != PRIOR_FORMAT:
            raise ConfigError(
                f'prior statistics of format {state.get("format")!r}; '
                f'accepted: {PRIOR_FORMAT!r}')
        self.top_n = state['top_n']
        self.num_records = state['num_records']
        self.units = {
            unit: {
                int(w): [float(s), int(c)]
                for w, s, c in zip(e['widths'], e['loss_sum'], e['count'])
            }
            for unit, e in state['units'].items()
        }
        self._top = [(float(neg), int(order), dict(widths))
                     for neg, order, widths in state['top']]
        heapq.heapify(self._top)

    def save(self, path: str) -> None:
        """Write the statistics as a JSON prior file (atomically)."""
        atomic_write_json(path, self.state_dict())

    @classmethod
    def load(cls, path: str) -> 'SubnetLossStats':
        """Read a JSON prior file, or the statistics inside a training
        checkpoint (``.pth``)."""
        if path.endswith('.pth'):
            import torch
            state = torch.load(path, map_location='cpu').get('prior_stats')
            if state is None:
                raise ConfigError(
                    f'checkpoint {path!r} holds no prior statistics (was it '
                    'trained with PriorRecorderHook?)')
        else:
            with open(path) as f:
                state = json.load(f)
        stats = cls()
        stats.load_state_dict(state)
        return stats


PRIOR_DIST_FORMAT = 'psenet-prior/1'


class Prior:
    """Per-unit categorical distributions over candidate widths: where the
    search draws its initial population and its mutations.

    Built by :meth:`fit` from the recorded training losses and a FLOPs
    target: it minimises, over the distributions P,

        mean_u sum_w P[u, w] * loss[u, w] + strength * (E_P[FLOPs] / T - 1)^2
        - temperature * mean_u entropy(P[u])

    (BCNet's loss prior, with an entropy term that keeps the distributions
    spread enough to sample from). Losses are standardised (zero mean per
    unit, unit variance overall) so the weights do not depend on the loss
    scale. ``E_P[FLOPs]`` is the FLOPs of the expected widths, exact for
    independent units because FLOPs are bilinear in the widths of different
    units.

    Args:
        unit_names (list[str]): the units, in FLOPs-table order.
        candidates (list[list[int]]): each unit's candidate widths.
        probs (list[np.ndarray]): each unit's probabilities over them.
        target_flops (float, optional): the target it was fitted to.
    """

    def __init__(self,
                 unit_names: Sequence[str],
                 candidates: Sequence[Sequence[int]],
                 probs: Sequence,
                 target_flops: Optional[float] = None) -> None:
        import numpy as np
        self.unit_names = list(unit_names)
        self.candidates = [list(map(int, c)) for c in candidates]
        self.probs = [np.asarray(p, dtype=float) / np.sum(p) for p in probs]
        self.target_flops = target_flops

    @classmethod
    def uniform(cls, unit_names, candidates) -> 'Prior':
        return cls(unit_names, candidates,
                   [[1.0] * len(c) for c in candidates])

    @classmethod
    def fit(cls,
            stats: SubnetLossStats,
            table,
            candidates: Sequence[Sequence[int]],
            target_flops: float,
            strength: float = 100.0,
            temperature: float = 0.05,
            steps: int = 300) -> 'Prior':
        """Fit the distributions to ``target_flops`` (see class docstring).
        """
        import numpy as np
        import torch
        names = table.unit_names
        width_max = max(len(c) for c in candidates)
        losses = np.zeros((len(names), width_max))
        valid = np.zeros((len(names), width_max), dtype=bool)
        for u, (name, widths) in enumerate(zip(names, candidates)):
            losses[u, :len(widths)] = _interpolated_losses(stats, name, widths)
            valid[u, :len(widths)] = True
        known = losses[valid]
        scale = known.std() if known.size and known.std() > 0 else 1.0
        for u in range(len(names)):
            row = losses[u, valid[u]]
            losses[u, valid[u]] = (row - row.mean()) / scale
        widths_t = torch.zeros(len(names), width_max, dtype=torch.float64)
        for u, widths in enumerate(candidates):
            widths_t[u, :len(widths)] = torch.tensor(widths,
                                                     dtype=torch.float64)
        loss_t = torch.from_numpy(losses)
        mask = torch.from_numpy(valid)
        theta = torch.zeros(len(names), width_max, dtype=torch.float64,
                            requires_grad=True)
        optimizer = torch.optim.Adam([theta], lr=0.1)
        for _ in range(steps):
            logits = theta.masked_fill(~mask, float('-inf'))
            probs = torch.softmax(logits, dim=1)
            log_probs = torch.log_softmax(logits, dim=1).masked_fill(~mask, 0)
            expected = (probs * widths_t).sum(1)
            flops = table.flops_torch(expected[None])[0]
            objective = ((probs * loss_t).sum(1).mean() + strength *
                         (flops / target_flops - 1)**2 -
                         temperature * -(probs * log_probs).sum(1).mean())
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
        with torch.no_grad():
            probs = torch.softmax(theta.masked_fill(~mask, float('-inf')), 1)
        return cls(names, candidates,
                   [probs[u, :len(c)].numpy() for u, c in
                    enumerate(candidates)], target_flops)

    # sampling

    def sample(self, rng):
        """One width per unit, drawn from the distributions."""
        import numpy as np
        return np.array([
            rng.choices(c, weights=p)[0]
            for c, p in zip(self.candidates, self.probs)
        ], dtype=float)

    def sample_unit(self, unit: int, rng) -> int:
        return rng.choices(self.candidates[unit], weights=self.probs[unit])[0]

    def expected_widths(self):
        import numpy as np
        return np.array(
            [np.dot(c, p) for c, p in zip(self.candidates, self.probs)])

    def preference(self, unit: int, width: int) -> float:
        """The probability of ``width`` for ``unit`` (0 if not a
        candidate)."""
        candidates = self.candidates[unit]
        return float(self.probs[unit][candidates.index(width)]) \
            if width in candidates else 0.0

    # files

    def state_dict(self) -> Dict:
        return dict(
            format=PRIOR_DIST_FORMAT,
            target_flops=self.target_flops,
            units={
                name: dict(widths=c, probs=[float(x) for x in p])
                for name, c, p in zip(self.unit_names, self.candidates,
                                      self.probs)
            })

    def save(self, path: str) -> None:
        atomic_write_json(path, self.state_dict())

    @classmethod
    def load(cls, path: str) -> 'Prior':
        with open(path) as f:
            state = json.load(f)
        if state.get('format') != PRIOR_DIST_FORMAT:
            raise ConfigError(
                f'{path}: format {state.get("format")!r}; accepted: '
                f'{PRIOR_DIST_FORMAT!r} (a fitted prior)')
        units = state['units']
        return cls(
            list(units), [u['widths'] for u in units.values()],
            [u['probs'] for u in units.values()], state.get('target_flops'))


def _interpolated_losses(stats: SubnetLossStats, unit: str,
                         widths: Sequence[int]):
    """Mean recorded loss of every width; widths never recorded get the
    linear interpolation of their recorded neighbours (the nearest one at
    the ends); a unit never recorded gets zeros (no preference)."""
    import numpy as np
    known = [(w, stats.mean_loss(unit, w)) for w in widths]
    xs = [w for w, m in known if m is not None]
    if not xs:
        return np.zeros(len(widths))
    ys = [m for w, m in known if m is not None]
    return np.interp(widths, xs, ys)
