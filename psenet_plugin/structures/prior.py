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
