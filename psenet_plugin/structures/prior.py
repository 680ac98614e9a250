"""What supernet training saw: the raw material of the prior (PSE-Net,
idea 2).

Every training step trains K subnets: with the sandwich rule the max and
the min subnet and K-2 random ones, with the uniform strategies K random
ones. The max and min subnets are the same at every step for every unit, so
they say nothing about which unit's width matters; only the randomly drawn
subnets (kinds ``'rand<k>'``) are recorded. Each one's loss, minus a per-step
baseline (which removes the training drift: losses fall by much more over
training than they differ between widths), is its *residual*. Under
independent uniform per-unit sampling, the mean residual of the subnets that
gave unit u width w estimates the *main effect* of that width on the loss
(the other units' widths average out). The statistics also keep the N
subnets of lowest residual, BCNet's recorded best subnets, which seed the
search's first population.

The statistics are plain numbers in plain containers, so they go into
mmengine checkpoints (and load under ``weights_only=True``) and into JSON
prior files unchanged.
"""
import heapq
import json
import warnings
from typing import Dict, Iterator, List, Optional, Sequence

from ..errors import ConfigError, CorruptFileError
from .io import atomic_write_json, first_sentence, load_torch_file

PRIOR_FORMAT = 'psenet-prior-stats/2'
# Formats whose statistics cannot be turned into this one (see
# ``SubnetLossStats.load_state_dict``).
OLD_PRIOR_FORMATS = ('psenet-prior-stats/1', )


class SubnetLossStats:
    """Per unit and width: the sum and count of the residual losses of the
    randomly drawn subnets that used it; plus the ``top_n`` subnets of
    lowest residual.

    The residual of a random subnet is its loss minus a per-step baseline:

    * a step with R >= 2 random subnets: the mean loss of the step's other
      R-1 random subnets. This is the step's mean rescaled,
      ``R / (R-1) * (loss - step mean)``: the same ranking, but unbiased for
      the main effect (with the subnet itself in the mean, every residual
      shrinks by ``(R-1)/R``, which would put steps of different R on
      different scales);
    * a step with a single random subnet: a running baseline, the
      exponential moving average (``momentum``) of the random-subnet losses
      of the previous steps. The first such step only starts the average
      and is not recorded. Under a steady drift the average lags by about
      ``(1 - momentum) / momentum`` steps of drift; that bias is shared by
      every unit and width alike, so it does not change which widths of a
      unit are better.

    Only the subnets whose kind starts with ``'rand'`` are used; the others
    (``'max'``, ``'min'``) are counted in ``num_records`` and otherwise
    ignored. The main effects are unbiased when every unit's width is drawn
    independently and uniformly (``sample_strategy`` ``'sandwich'``,
    ``'sandwich_ratio'``, whose ``'ratio<k>'`` subnets are left out,
    ``'max_random'`` or ``'uniform'``); ``'flops_uniform'`` couples the
    units through the FLOPs draw, so its main effects are confounded with
    the FLOPs.

    Args:
        top_n (int): how many best subnets to keep. Defaults to 100.
        momentum (float): weight of the newest step in the running baseline
            of single-random-subnet steps. Defaults to 0.1.

    Attributes:
        num_records (int): every subnet handed to :meth:`update`, max and
            min included.
        num_random (int): the random subnets recorded in the statistics.
    """

    def __init__(self, top_n: int = 100, momentum: float = 0.1) -> None:
        if top_n < 0:
            raise ConfigError(f'top_n={top_n}; accepted: an integer >= 0')
        if not 0 < momentum <= 1:
            raise ConfigError(f'momentum={momentum}; accepted: 0 < momentum '
                              '<= 1')
        self.top_n = top_n
        self.momentum = momentum
        # unit -> width -> [residual sum, count]
        self.units: Dict[str, Dict[int, List[float]]] = {}
        # A max-heap by residual (stored negated) of
        # (-residual, order, widths, loss).
        self._top: List = []
        self.num_records = 0
        self.num_random = 0
        self.residual_sq_sum = 0.0
        self.baseline: Optional[float] = None  # the running baseline

    def update(self, widths: Sequence[Dict[str, int]],
               losses: Sequence[float], kinds: Sequence[str]) -> None:
        """Record one training step: its subnets (unit -> width), their
        losses and their kinds (``'max'``, ``'min'``, ``'rand<k>'``)."""
        if not len(widths) == len(losses) == len(kinds):
            raise ValueError(
                f'{len(widths)} subnets, {len(losses)} losses and '
                f'{len(kinds)} kinds: one of each per subnet')
        self.num_records += len(widths)
        drawn = [(subnet, float(loss))
                 for subnet, loss, kind in zip(widths, losses, kinds)
                 if str(kind).startswith('rand')]
        if not drawn:
            return
        step_losses = [loss for _, loss in drawn]
        step_mean = sum(step_losses) / len(step_losses)
        if len(drawn) >= 2:
            rest = len(drawn) - 1
            baselines = [(step_mean * len(drawn) - loss) / rest
                         for loss in step_losses]
        else:
            baselines = [self.baseline]
        self.baseline = step_mean if self.baseline is None else (
            (1 - self.momentum) * self.baseline + self.momentum * step_mean)
        for (subnet, loss), baseline in zip(drawn, baselines):
            if baseline is None:
                continue  # the first single-subnet step starts the baseline
            self._add(subnet, loss, loss - baseline)

    def _add(self, subnet: Dict[str, int], loss: float,
             residual: float) -> None:
        for unit, width in subnet.items():
            entry = self.units.setdefault(unit, {}).setdefault(
                int(width), [0.0, 0])
            entry[0] += residual
            entry[1] += 1
        self.num_random += 1
        self.residual_sq_sum += residual * residual
        if self.top_n:
            item = (-residual, self.num_random,
                    {u: int(w)
                     for u, w in subnet.items()}, loss)
            if len(self._top) < self.top_n:
                heapq.heappush(self._top, item)
            elif residual < -self._top[0][0]:
                heapq.heapreplace(self._top, item)

    def main_effect(self, unit: str, width: int) -> Optional[float]:
        """The mean residual of the random subnets that gave ``unit``
        ``width`` (None if there were none)."""
        entry = self.units.get(unit, {}).get(int(width))
        return entry[0] / entry[1] if entry and entry[1] else None

    def count(self, unit: str, width: int) -> int:
        entry = self.units.get(unit, {}).get(int(width))
        return entry[1] if entry else 0

    @property
    def residual_variance(self) -> float:
        """The mean squared residual of one random subnet: the noise of a
        single record (the other units' widths and the batch)."""
        return self.residual_sq_sum / self.num_random \
            if self.num_random else 0.0

    @property
    def top(self) -> List[Dict]:
        """The best random subnets, lowest residual first: dicts with
        ``residual``, ``loss`` and ``widths`` (unit -> width)."""
        return [
            dict(residual=-neg, loss=loss, widths=widths)
            for neg, _, widths, loss in sorted(self._top,
                                               key=lambda t: (-t[0], t[1]))
        ]

    def best_subnets(self, unit_names: Sequence[str],
                     candidates: Sequence[Sequence[int]]
                     ) -> Iterator:
        """The best subnets as width vectors in ``unit_names`` order,
        lowest residual first; subnets of another model (other units, or
        widths that are not among ``candidates``) are left out."""
        import numpy as np
        allowed = [set(map(int, c)) for c in candidates]
        for entry in self.top:
            subnet = entry['widths']
            if set(subnet) != set(unit_names):
                continue
            vector = [subnet[name] for name in unit_names]
            if all(w in ok for w, ok in zip(vector, allowed)):
                yield np.array(vector, dtype=float)

    # (de)serialisation

    def state_dict(self) -> Dict:
        return dict(
            format=PRIOR_FORMAT,
            top_n=self.top_n,
            momentum=self.momentum,
            num_records=self.num_records,
            num_random=self.num_random,
            residual_sq_sum=self.residual_sq_sum,
            baseline=self.baseline,
            units={
                unit: {
                    'widths': sorted(entries),
                    'residual_sum': [entries[w][0] for w in sorted(entries)],
                    'count': [entries[w][1] for w in sorted(entries)],
                }
                for unit, entries in self.units.items()
            },
            top=[[neg, order, widths, loss]
                 for neg, order, widths, loss in self._top])

    def load_state_dict(self, state: Dict) -> None:
        found = state.get('format')
        if found in OLD_PRIOR_FORMATS:
            raise ConfigError(
                f'prior statistics of format {found!r} are of an older '
                'PriorRecorderHook: they average the losses of every trained '
                'subnet, max and min included, and keep no kinds or per-step '
                'losses, so they cannot be converted; record them again by '
                'training with PriorRecorderHook (a short run from the '
                'checkpoint is enough), or search with '
                f"train_cfg.prior='uniform'; accepted: {PRIOR_FORMAT!r}")
        if found != PRIOR_FORMAT:
            raise ConfigError(
                f'prior statistics of format {found!r}; '
                f'accepted: {PRIOR_FORMAT!r}')
        self.top_n = int(state['top_n'])
        self.momentum = float(state['momentum'])
        self.num_records = int(state['num_records'])
        self.num_random = int(state['num_random'])
        self.residual_sq_sum = float(state['residual_sq_sum'])
        self.baseline = None if state['baseline'] is None else float(
            state['baseline'])
        self.units = {
            unit: {
                int(w): [float(s), int(c)]
                for w, s, c in zip(e['widths'], e['residual_sum'],
                                   e['count'])
            }
            for unit, e in state['units'].items()
        }
        self._top = [(float(neg), int(order), dict(widths), float(loss))
                     for neg, order, widths, loss in state['top']]
        heapq.heapify(self._top)

    def save(self, path: str) -> None:
        """Write the statistics as a JSON prior file (atomically)."""
        atomic_write_json(path, self.state_dict())

    @classmethod
    def load(cls, path: str) -> 'SubnetLossStats':
        """Read a JSON prior file, or the statistics inside a training
        checkpoint (``.pth``).

        Raises:
            ConfigError: the file holds no statistics, statistics of
                another format, or cannot be read (truncated, not JSON,
                not a checkpoint); the message names the file.
        """
        if path.endswith('.pth'):
            checkpoint = load_torch_file(
                path, 'a training checkpoint with prior statistics '
                '(PriorRecorderHook)')
            state = checkpoint.get('prior_stats') \
                if isinstance(checkpoint, dict) else None
            if state is None:
                raise ConfigError(
                    f'checkpoint {path!r} holds no prior statistics (was it '
                    'trained with PriorRecorderHook?)')
        else:
            state = read_json(path, 'prior file', PRIOR_FORMAT)
        stats = cls()
        try:
            stats.load_state_dict(state)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            if isinstance(error, ConfigError):
                raise ConfigError(f'{path}: {error}') from error
            raise CorruptFileError(
                f'prior statistics in {path!r} are corrupt '
                f'({first_sentence(error)}); accepted: statistics of format '
                f'{PRIOR_FORMAT!r} as PriorRecorderHook writes them '
                '(prior_stats.json, or a checkpoint)') from error
        return stats


def read_json(path: str, what: str, accepted: str) -> Dict:
    """A JSON object from ``path``, or a :class:`ConfigError` naming the
    file (``what``, e.g. ``'prior file'``) and the format ``accepted``."""
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CorruptFileError(
            f'{what} {path!r} cannot be read ({first_sentence(error)}): is it '
            f'truncated or not JSON? accepted: a JSON file of format '
            f'{accepted!r}') from error
    if not isinstance(state, dict):
        raise CorruptFileError(
            f'{what} {path!r} holds a JSON {type(state).__name__}, not an '
            f'object; accepted: a JSON file of format {accepted!r}')
    return state


PRIOR_DIST_FORMAT = 'psenet-prior/1'


class Prior:
    """Per-unit categorical distributions over candidate widths: where the
    search draws its initial population and its mutations.

    Built by :meth:`fit` from the recorded training statistics and a FLOPs
    target T: it minimises, over the distributions P,

        mean_u sum_w P[u, w] * loss[u, w] - temperature * mean_u entropy(P[u])

    subject to E_P[FLOPs] = T (BCNet's loss prior, with an entropy term that
    keeps the distributions spread enough to sample from). ``loss[u, w]`` is
    the main effect of width w of unit u (:class:`SubnetLossStats`: the
    random subnets' losses less the per-step baseline), shrunk towards zero
    by its noise so that units whose widths carry no signal stay flat,
    centred per unit and divided by the residual spread of one subnet's loss
    (``sqrt(stats.residual_variance)``). That scale does not depend on the
    effects themselves: dividing by their own spread instead blew the noise
    of signal-free statistics up to unit variance, which the distributions
    then followed. ``E_P[FLOPs]`` is the FLOPs of the expected widths, exact
    for independent units because FLOPs are bilinear in the widths of
    different units.

    The solution is a Boltzmann distribution per unit,
    ``P[u, w] ~ exp(-(loss[u, w] + price * dF/dE[w_u] * w) / temperature)``,
    with one FLOPs price for all units; :meth:`fit` finds it by damped
    fixed-point steps (the FLOPs slopes depend on the expected widths) and
    bisection on the price, to 0.01% of T. (A penalty on the FLOPs, fitted
    by gradient steps from uniform, stopped far from its optimum: after 300
    Adam steps its distributions still differed by up to 0.8 in probability
    from those after 6,000.)

    A params target works the same way (``metric='params'``: the
    parameter count is bilinear in the widths too).

    Args:
        unit_names (list[str]): the units, in FLOPs-table order.
        candidates (list[list[int]]): each unit's candidate widths.
        probs (list[np.ndarray]): each unit's probabilities over them.
        target_flops (float, optional): the target it was fitted to (FLOPs,
            or params when ``metric='params'``).
        metric (str): what the target counts, ``'flops'`` or ``'params'``.
            Defaults to ``'flops'``.
    """

    def __init__(self,
                 unit_names: Sequence[str],
                 candidates: Sequence[Sequence[int]],
                 probs: Sequence,
                 target_flops: Optional[float] = None,
                 metric: str = 'flops') -> None:
        import numpy as np
        self.unit_names = list(unit_names)
        self.candidates = [list(map(int, c)) for c in candidates]
        self.probs = [np.asarray(p, dtype=float) / np.sum(p) for p in probs]
        self.target_flops = target_flops
        self.metric = metric

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
            temperature: float = 0.05,
            steps: int = 200,
            metric: str = 'flops') -> 'Prior':
        """Fit the distributions to ``target_flops`` (see class docstring).

        Args:
            stats (SubnetLossStats): the recorded training statistics.
            table (FlopsTable): the FLOPs model.
            candidates (list[list[int]]): each unit's candidate widths, in
                ``table.unit_names`` order.
            target_flops (float): the FLOPs of the expected widths.
            temperature (float): weight of the entropy, in units of the
                residual spread of one subnet's loss. Defaults to 0.05.
            steps (int): at most this many fixed-point steps per FLOPs
                price. Defaults to 200.
            metric (str): ``'flops'``, or ``'params'`` to fit the expected
                parameter count to ``target_flops`` instead. Defaults to
                ``'flops'``.
        """
        import numpy as np
        if temperature <= 0:
            raise ConfigError(f'prior_fit.temperature={temperature}; '
                              'accepted: a number > 0')
        names = table.unit_names
        width_max = max(len(c) for c in candidates)
        losses = np.zeros((len(names), width_max))
        widths = np.zeros((len(names), width_max))
        valid = np.zeros((len(names), width_max), dtype=bool)
        for u, (name, choices) in enumerate(zip(names, candidates)):
            effects = _main_effects(stats, name, choices)
            losses[u, :len(choices)] = effects - effects.mean()
            widths[u, :len(choices)] = choices
            valid[u, :len(choices)] = True
        spread = np.sqrt(stats.residual_variance)
        losses /= spread if spread > 0 else 1.0
        probs, flops = _fit_to_flops(losses, widths, valid, table,
                                     target_flops, temperature, steps, metric)
        if abs(flops - 1) > 0.01:
            warnings.warn(
                f'the prior reaches {flops:.3f} x the target {metric} '
                f'({target_flops / 1e6:.3f} M), not 1: is the target within '
                f'the supernet\'s {metric} range?')
        return cls(names, candidates,
                   [probs[u, :len(c)] for u, c in enumerate(candidates)],
                   target_flops, metric)

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
            target_metric=self.metric,
            units={
                name: dict(widths=c, probs=[float(x) for x in p])
                for name, c, p in zip(self.unit_names, self.candidates,
                                      self.probs)
            })

    def save(self, path: str) -> None:
        atomic_write_json(path, self.state_dict())

    @classmethod
    def load(cls, path: str) -> 'Prior':
        """Read a fitted prior (``prior.json``).

        Raises:
            ConfigError: the file is not a fitted prior, or cannot be read;
                the message names the file.
        """
        state = read_json(path, 'prior file', PRIOR_DIST_FORMAT)
        if state.get('format') != PRIOR_DIST_FORMAT:
            raise ConfigError(
                f'{path}: format {state.get("format")!r}; accepted: '
                f'{PRIOR_DIST_FORMAT!r} (a fitted prior)')
        try:
            units = state['units']
            return cls(
                list(units), [u['widths'] for u in units.values()],
                [u['probs'] for u in units.values()],
                state.get('target_flops'),
                state.get('target_metric', 'flops'))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CorruptFileError(
                f'prior file {path!r} is corrupt ({first_sentence(error)}); '
                f'accepted: a fitted prior of format {PRIOR_DIST_FORMAT!r} '
                'as a search writes it (prior.json)') from error


def _main_effects(stats: SubnetLossStats,
                  unit: str,
                  widths: Sequence[int],
                  shrink: bool = True):
    """The unit's main effects on its candidate widths, centred, shrunk
    towards zero by their noise, and interpolated where never recorded.

    A width's mean residual from n records carries noise of variance
    ``v = stats.residual_variance / n``. ``Q = sum_w d_w^2 / v_w`` over the
    unit's centred means d is chi-square with W-1 degrees of freedom when
    its widths carry no signal; the profile is scaled by
    ``max(0, 1 - q / Q)``, q the 95% quantile of that chi-square (a
    positive-part James-Stein shrinkage with a conservative constant;
    ``shrink=False`` skips it). A unit without signal gets a flat (zero)
    profile instead of its noise; a strong one keeps nearly all of it.
    Widths never recorded get the linear interpolation of their recorded
    neighbours (the nearest one at the ends); a unit never recorded gets
    zeros (no preference)."""
    import numpy as np
    recorded = [(w, stats.main_effect(unit, w), stats.count(unit, w))
                for w in widths]
    recorded = [(w, m, n) for w, m, n in recorded if m is not None]
    if len(recorded) < 2:
        return np.zeros(len(widths))
    xs, means, counts = (np.array(v, dtype=float) for v in zip(*recorded))
    centred = means - means.mean()
    if shrink:
        noise = stats.residual_variance / counts
        q = float(np.sum(centred**2 / noise)) if noise.all() else np.inf
        # q == 0: every width's mean is the same (no signal; e.g. a few
        # records after a short run): a flat profile, not a ZeroDivision
        centred = centred * (max(0.0, 1 - _chi2_quantile_95(len(xs) - 1) /
                                 q) if q > 0 else 0.0)
    return np.interp(widths, xs, centred)


def _chi2_quantile_95(dof: int) -> float:
    """The 95% quantile of chi-square with ``dof`` degrees of freedom
    (Wilson-Hilferty: within 1% from 2 degrees of freedom, 3% at 1)."""
    k = 2 / (9 * dof)
    return dof * (1 - k + 1.6449 * k**0.5)**3


def _fit_to_flops(losses, widths, valid, table, target_flops: float,
                  temperature: float, steps: int, metric: str = 'flops'):
    """The distributions of :meth:`Prior.fit` for (U, W) arrays of
    standardised losses and widths (``valid`` marks real candidates):
    returns them and their FLOPs / ``target_flops``."""
    import numpy as np
    import torch

    def slopes(probs):
        """d(FLOPs / T) / d(expected width), per unit, and FLOPs / T."""
        expected = torch.tensor((probs * widths).sum(1)[None],
                                dtype=torch.float64,
                                requires_grad=True)
        ratio = table.flops_torch(expected, metric)[0] / target_flops
        ratio.backward()
        return expected.grad[0].numpy(), float(ratio.detach())

    def boltzmann(price, slope):
        logits = -(losses + price * slope[:, None] * widths) / temperature
        logits = np.where(valid, logits, -np.inf)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        return probs / probs.sum(1, keepdims=True)

    def solve(price, probs):
        for _ in range(steps):
            new = boltzmann(price, slopes(probs)[0])
            done = np.abs(new - probs).max() < 1e-6
            probs = new if done else (probs + new) / 2
            if done:
                break
        return probs, slopes(probs)[1]

    start = valid / valid.sum(1, keepdims=True)
    # A higher price makes every unit narrower: bracket the target, then
    # bisect.
    low, high = -1.0, 1.0
    (p_low, f_low), (p_high, f_high) = solve(low, start), solve(high, start)
    for _ in range(40):
        if f_low >= 1:
            break
        low *= 4
        p_low, f_low = solve(low, p_low)
    for _ in range(40):
        if f_high <= 1:
            break
        high *= 4
        p_high, f_high = solve(high, p_high)
    best = min((p_low, f_low), (p_high, f_high), key=lambda r: abs(r[1] - 1))
    for _ in range(60):
        if abs(best[1] - 1) < 1e-4:
            break
        middle = (low + high) / 2
        probs, flops = solve(middle, best[0])
        if flops > 1:
            low = middle
        else:
            high = middle
        best = min(best, (probs, flops), key=lambda r: abs(r[1] - 1))
    return best
