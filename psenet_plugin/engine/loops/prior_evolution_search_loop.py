"""Prior-sampling evolution search (PSE-Net, idea 2).

Under a FLOPs budget, uniform per-layer sampling rarely lands in the
feasible region (FLOPs of random width vectors concentrate around the mean).
This loop draws the initial population and the mutations from the *prior*
fitted to the budget from what supernet training recorded
(:class:`~psenet_plugin.structures.prior.Prior`), repairs every draw that
misses the constraints towards them instead of discarding it, and counts
FLOPs with the exact analytic table (microseconds per candidate, no model
copy).

It takes the keys of mmrazor's ``EvolutionSearchLoop`` and is used the same
way, as ``train_cfg`` of a search config run on a supernet checkpoint. It
searches any one-shot channel supernet: PSENet, or an algorithm with
mmrazor's ``OneShotChannelMutator`` (AutoSlim, BigNAS-style), whose FLOPs
table it builds at the mutator's demo input. A supernet trained without
``PriorRecorderHook`` has no prior: the search then draws uniformly, each
draw repaired towards the constraints, and says so in the log.
"""
import csv
import io
import json
import os
import os.path as osp
import random
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.logging import print_log
from mmrazor.engine import EvolutionSearchLoop
from mmrazor.registry import LOOPS

from ...errors import ConfigError, CorruptFileError
from ...models.channel_widths import (ChannelWidths, channel_supernet,
                                      flops_table_of)
from ...structures.flops import FLOPS_CONVENTIONS
from ...structures.io import (atomic_path, atomic_write_json,
                              atomic_write_text)
from ...structures.prior import (PRIOR_DIST_FORMAT, Prior, SubnetLossStats,
                                 read_json)
from ...structures.sampling import ratio_widths, repair_to_ranges
from ...structures.subnet import save_subnet

STATE_FORMAT = 'psenet-search-state/1'
CONSTRAINT_KEYS = ('flops', 'params')
#: what a resumed search must share with the search it continues: the
#: archive's FLOPs and scores were measured under them
RESUME_KEYS = ('constraints_range', 'score_key', 'flops_convention')


@LOOPS.register_module()
class PriorEvolutionSearchLoop(EvolutionSearchLoop):
    """Evolution search whose population and mutations come from the prior.

    Args (beyond mmrazor's ``EvolutionSearchLoop``, whose keys it takes):
        constraints_range (dict): ``flops`` and/or ``params`` ranges in
            millions, e.g. ``dict(flops=(285., 315.))``; FLOPs counted by
            ``flops_convention``. Every candidate, and so the best subnet,
            lies inside every range. Defaults to ``dict(flops=(0., 330.))``.
        flops_convention (str): how FLOPs are counted: ``'all'`` (mmengine's
            ``get_model_complexity_info`` on the sliced subnet: convolutions,
            linear layers, batch norms and pooling) or ``'conv_linear'``
            (the multiply-adds of convolutions and linear layers only, what
            papers' "300M FLOPs" means; about 3-4% below ``'all'`` for
            MobileNetV2). Defaults to ``'all'``.
        prior (str): where the prior comes from: ``'checkpoint'`` (the
            statistics recorded in the supernet checkpoint being searched,
            the default), a path (a ``prior_stats.json`` written by
            ``PriorRecorderHook``, a fitted ``prior.json``, or a checkpoint),
            or ``'uniform'`` (no prior: mmrazor's uniform sampling).
        prior_required (bool): fail instead of falling back to uniform
            sampling (with a warning) when the prior is missing or empty.
            Defaults to False.
        prior_fit (dict): arguments of :meth:`Prior.fit` (``temperature``,
            ``steps``).
        ratio_seeds (int): the first population starts with this many
            *ratio* subnets (every unit at the same relative position among
            its widths: the family of the max and min subnets, which a
            sandwich trains at every step and ``sample_strategy=
            'sandwich_ratio'`` in between), those nearest the constraint's
            centre, repaired into it where they miss; then the recorded
            best and the prior's draws. On the demo supernet of seed 1
            (``sandwich_ratio``) the found subnet scored 93.7 on validation
            with 4, 90.6 without (min subnet 92.2). Defaults to 0.
        seed (int, optional): seed of the search's random draws.

    Every evaluated candidate is kept (``candidates.json``/``.csv``); the
    state is written atomically after every candidate
    (``search_state.json``) and at the end of every epoch
    (``search_epoch_<n>.json``), and ``resume_from`` continues from either
    without evaluating anything twice; a state searched under other
    ``constraints_range``, ``score_key`` or ``flops_convention`` is refused.
    """

    def __init__(self,
                 runner,
                 dataloader,
                 evaluator,
                 max_epochs: int = 20,
                 max_keep_ckpts: int = 3,
                 resume_from: Optional[str] = None,
                 num_candidates: int = 50,
                 top_k: int = 10,
                 num_mutation: int = 25,
                 num_crossover: int = 25,
                 mutate_prob: float = 0.1,
                 crossover_prob: float = 0.5,
                 calibrate_sample_num: int = -1,
                 constraints_range: Dict = dict(flops=(0., 330.)),
                 estimator_cfg: Optional[Dict] = None,
                 predictor_cfg: Optional[Dict] = None,
                 score_key: str = 'accuracy/top1',
                 init_candidates: Optional[str] = None,
                 prior: str = 'checkpoint',
                 prior_required: bool = False,
                 prior_fit: Optional[Dict] = None,
                 flops_convention: str = 'all',
                 ratio_seeds: int = 0,
                 seed: Optional[int] = None) -> None:
        for key, value in (('predictor_cfg', predictor_cfg),
                           ('init_candidates', init_candidates),
                           ('estimator_cfg', estimator_cfg)):
            if value is not None:
                raise ConfigError(
                    f'train_cfg.{key} is not supported by '
                    'PriorEvolutionSearchLoop (FLOPs come from the exact '
                    'table, candidates from the prior); accepted: None')
        if num_mutation + num_crossover > num_candidates:
            raise ConfigError(
                f'train_cfg.num_mutation + num_crossover = '
                f'{num_mutation + num_crossover} exceeds num_candidates='
                f'{num_candidates}')
        if isinstance(ratio_seeds, bool) or not isinstance(
                ratio_seeds, int) or not 0 <= ratio_seeds <= num_candidates:
            raise ConfigError(
                f'train_cfg.ratio_seeds={ratio_seeds!r}; accepted: an '
                f'integer 0 .. num_candidates ({num_candidates})')
        if top_k < 1 or top_k > num_candidates:
            raise ConfigError(f'train_cfg.top_k={top_k}; accepted: 1 .. '
                              f'num_candidates ({num_candidates})')
        if flops_convention not in FLOPS_CONVENTIONS:
            raise ConfigError(
                f'train_cfg.flops_convention={flops_convention!r}; accepted: '
                + ', '.join(map(repr, FLOPS_CONVENTIONS)))
        if not isinstance(constraints_range, dict) or not constraints_range:
            raise ConfigError(
                f'train_cfg.constraints_range={constraints_range!r}; '
                'accepted: a dict of flops and/or params (low, high) ranges '
                'in millions, e.g. dict(flops=(285., 315.))')
        super().__init__(
            runner,
            dataloader,
            evaluator,
            max_epochs=max_epochs,
            max_keep_ckpts=max_keep_ckpts,
            resume_from=resume_from,
            num_candidates=num_candidates,
            top_k=top_k,
            num_mutation=num_mutation,
            num_crossover=num_crossover,
            mutate_prob=mutate_prob,
            crossover_prob=crossover_prob,
            calibrate_sample_num=calibrate_sample_num,
            constraints_range=constraints_range,
            # FLOPs and params come from the model's exact table; the
            # base class builds an estimator it then never uses.
            estimator_cfg=dict(type='mmrazor.SubnetFlopsEstimator'),
            score_key=score_key)
        # PSENet, AutoSlim or any algorithm with a one-shot channel mutator
        channel_supernet(self.model, 'model (PriorEvolutionSearchLoop)')
        #: widths <-> choices of the supernet's mutator
        self.widths = ChannelWidths(self.model.mutator)
        self.flops_convention = flops_convention
        self.prior_source = prior
        self.prior_required = prior_required
        self.prior_fit = dict(prior_fit or {})
        self.ratio_seeds = ratio_seeds
        self.rng = random.Random(seed)
        self.archive: List[Dict] = []
        #: the max and min subnets scored like the candidates: references
        #: for the Pareto plot and the log
        self.references: Dict[str, Dict] = {}
        self.population: List[Dict] = []
        self.prior: Optional[Prior] = None

    # set-up

    def _setup(self) -> None:
        self.table = flops_table_of(self.model).with_convention(
            self.flops_convention)
        self.unit_names = self.table.unit_names
        self.candidate_widths = self.widths.candidate_widths(
            self.unit_names)
        self.ranges = self._check_constraints_range()
        if self.resume_from:  # before anything is written
            self._load_state(self.resume_from)
        self.prior = self._build_prior()
        if is_main_process():
            self.prior.save(osp.join(self.runner.work_dir, 'prior.json'))

    def _constraints(self) -> Dict[str, List[float]]:
        """``constraints_range`` as plain lists of floats (millions)."""
        return {
            key: [float(v) for v in value]
            for key, value in self.constraints_range.items()
            if value is not None
        }

    def _check_constraints_range(self) -> Dict[str, Tuple[float, float]]:
        ranges = {}
        for key, value in self.constraints_range.items():
            if key in CONSTRAINT_KEYS and value is None:
                continue  # no constraint (unset with --cfg-options)
            if key not in CONSTRAINT_KEYS or not isinstance(
                    value, (list, tuple)) or len(value) != 2:
                raise ConfigError(
                    f'train_cfg.constraints_range.{key}={value!r}; accepted '
                    f'keys: {", ".join(CONSTRAINT_KEYS)}, each a (low, high) '
                    'pair in millions, or None (no constraint)')
            ranges[key] = (float(value[0]) * 1e6, float(value[1]) * 1e6)
        if not ranges:
            raise ConfigError(
                f'train_cfg.constraints_range={self.constraints_range!r} '
                'constrains nothing; accepted: a flops and/or params (low, '
                'high) range in millions, e.g. dict(flops=(285., 315.))')
        for key in CONSTRAINT_KEYS:
            if key not in ranges:
                continue
            smallest, largest = self.table.span(key, self.candidate_widths)
            lo, hi = ranges[key]
            if hi < smallest or lo > largest or lo > hi:
                raise ConfigError(
                    f'train_cfg.constraints_range.{key}=({lo / 1e6:g}, '
                    f'{hi / 1e6:g}) M is out of reach: the subnets of this '
                    f'supernet span {smallest / 1e6:.3f} M (min, the '
                    f'minimum achievable) to {largest / 1e6:.3f} M (max)' +
                    (f' ({self.flops_convention!r} FLOPs convention)'
                     if key == 'flops' else ''))
        return ranges

    def _span_text(self) -> str:
        """The range of FLOPs and params this supernet's subnets span."""
        parts = []
        for key, unit in (('flops', 'MFLOPs'), ('params', 'M params')):
            low, high = self.table.span(key, self.candidate_widths)
            parts.append(f'{low / 1e6:.3f} to {high / 1e6:.3f} {unit}')
        return ('the subnets of this supernet span ' + ' and '.join(parts) +
                f' (min to max subnet; FLOPs counted as '
                f'{self.flops_convention!r})')

    def _build_prior(self) -> Prior:
        """The prior to sample from; also sets ``self.recorded``, the
        recorded best subnets that seed the first population (none unless
        the prior is fitted from statistics)."""
        self.recorded: List[np.ndarray] = []
        uniform = Prior.uniform(self.unit_names, self.candidate_widths)
        source = self.prior_source
        if source in (None, 'uniform'):
            return uniform
        path = self.runner.cfg.get('load_from') if source == \
            'checkpoint' else source
        stats, problem, recorded = None, None, True
        if not path or not osp.isfile(path):
            problem = f'prior source {path!r} does not exist'
        else:
            try:
                if path.endswith('.json'):
                    state = read_json(path, 'prior file', PRIOR_DIST_FORMAT)
                    if state.get('format') == PRIOR_DIST_FORMAT:
                        return self._checked(Prior.load(path), path)
                stats = SubnetLossStats.load(path)
            except CorruptFileError as error:
                # The file was named and is there, but broken: never
                # search silently without it.
                raise CorruptFileError(
                    f'train_cfg.prior={source!r}: {error}') from error
            except ConfigError as error:
                problem = str(error)
                recorded = 'holds no prior statistics' not in problem
        if stats is not None and stats.num_random == 0:
            problem = (f'the prior statistics in {path!r} hold no randomly '
                       f'drawn subnet (of {stats.num_records} recorded)')
        if problem:
            if self.prior_required:
                raise ConfigError(
                    f'train_cfg.prior={source!r}: {problem}, and '
                    'train_cfg.prior_required=True')
            if not recorded:  # e.g. a supernet trained by AutoSlim
                print_log(
                    f'no prior was recorded for this '
                    f'{type(self.model).__name__} supernet ({problem}): '
                    'searching with uniform sampling, every draw repaired '
                    'towards train_cfg.constraints_range',
                    logger='current', level=20)
                return uniform
            print_log(
                f'train_cfg.prior={source!r}: {problem}; searching with '
                'uniform sampling instead', logger='current', level=30)
            return uniform
        # Fitted to the FLOPs range, or to the params range of a
        # params-only constraint.
        metric = 'params' if 'flops' not in self.ranges and \
            'params' in self.ranges else 'flops'
        lo, hi = self.ranges.get(metric, (0.0, float('inf')))
        hi = min(hi, self.table.span(metric, self.candidate_widths)[1])
        target = hi if lo <= 0 else (lo + hi) / 2
        unknown = set(self.prior_fit) - {'temperature', 'steps'}
        if unknown:
            raise ConfigError(
                f'train_cfg.prior_fit has {sorted(unknown)}; accepted keys: '
                "'temperature', 'steps' (the FLOPs target is met exactly, so "
                "there is no 'strength')")
        prior = Prior.fit(stats, self.table, self.candidate_widths, target,
                          metric=metric, **self.prior_fit)
        self.recorded = list(
            stats.best_subnets(self.unit_names, self.candidate_widths))
        unit = 'MFLOPs' if metric == 'flops' else 'M params'
        print_log(
            f'prior fitted to {target / 1e6:.3f} {unit} from '
            f'{stats.num_random} random subnets of {stats.num_records} '
            f'recorded ({path}); {len(self.recorded)} recorded best '
            'subnets seed the first population', logger='current')
        return prior

    def _checked(self, prior: Prior, path: str) -> Prior:
        if prior.unit_names != self.unit_names:
            raise ConfigError(f'prior file {path!r} is for another model: '
                              'its units differ from this supernet\'s')
        return prior

    # candidates

    def _feasible(self, widths) -> bool:
        """Whether ``widths`` (a vector) lies inside every range of
        ``constraints_range``."""
        widths = np.asarray(widths, dtype=float)
        for key, (lo, hi) in self.ranges.items():
            if not lo <= self.table.measure_batch(key, widths)[0] <= hi:
                return False
        return True

    def _repair(self, widths: np.ndarray) -> Optional[np.ndarray]:
        """``widths`` moved into every range (FLOPs and params alike), or
        None."""
        widths = repair_to_ranges(
            widths,
            self.table,
            self.candidate_widths,
            self.ranges,
            self.rng,
            preference=self.prior.preference)
        if widths is None or not self._feasible(widths):
            return None
        return widths

    def _new(self, make, origin: str, count: int, seen: set) -> List[Dict]:
        """``count`` new feasible candidates from ``make()``, repaired,
        none seen before."""
        made: List[Dict] = []
        for _ in range(count * 20):
            if len(made) == count:
                break
            widths = make()
            if widths is None:
                break  # ``make`` has nothing more
            widths = self._repair(widths)
            if widths is None:
                continue
            key = tuple(int(w) for w in widths)
            if key in seen:
                continue
            seen.add(key)
            made.append(dict(widths=list(key), origin=origin, score=None))
        return made

    def _next_population(self) -> List[Dict]:
        seen = {tuple(c['widths']) for c in self.archive}
        population = []
        top = self.top_k_records()
        if top:
            parents = [np.array(c['widths'], float) for c in top]

            def mutate():
                child = self.rng.choice(parents).copy()
                for u in range(len(child)):
                    if self.rng.random() < self.mutate_prob:
                        child[u] = self.prior.sample_unit(u, self.rng)
                return child

            def crossover():
                a, b = self.rng.choice(parents), self.rng.choice(parents)
                take = np.array([
                    self.rng.random() < self.crossover_prob
                    for _ in range(len(a))
                ])
                return np.where(take, b, a)

            population += self._new(mutate, 'mutation', self.num_mutation,
                                    seen)
            population += self._new(crossover, 'crossover',
                                    self.num_crossover, seen)
        else:
            ratios = iter(self._ratio_subnets())
            population += self._new(lambda: next(ratios, None), 'ratio',
                                    self.ratio_seeds, seen)
            # BCNet: part of the first population from the recorded best
            recorded = iter(self.recorded)
            population += self._new(lambda: next(recorded, None), 'recorded',
                                    self.num_candidates // 2, seen)
        population += self._new(lambda: self.prior.sample(self.rng), 'prior',
                                self.num_candidates - len(population), seen)
        return population

    def _ratio_subnets(self) -> List[np.ndarray]:
        """Subnets with every unit at the same relative position among
        its widths (the family of the max and min subnets, which the
        sandwich trains at every step), nearest the constraint's centre
        first."""
        metric = 'flops' if 'flops' in self.ranges else 'params'
        lo, hi = self.ranges[metric]
        centre = (lo + min(hi, self.table.span(
            metric, self.candidate_widths)[1])) / 2
        subnets = {}
        for ratio in np.linspace(0, 1, 201):
            widths = ratio_widths(self.candidate_widths, ratio)
            subnets[tuple(widths)] = widths
        vectors = list(subnets.values())
        measured = self.table.measure_batch(metric, np.stack(vectors))
        order = np.argsort(np.abs(measured - centre), kind='stable')
        return [vectors[i] for i in order]

    def top_k_records(self) -> List[Dict]:
        """The best evaluated candidates inside the constraints in force:
        highest score, then fewest FLOPs."""
        feasible = [c for c in self.archive if self._feasible(c['widths'])]
        ranked = sorted(feasible, key=lambda c: (-c['score'], c['flops']))
        return ranked[:self.top_k]

    # the loop

    def run(self) -> None:
        self.runner.call_hook('before_train')
        self._setup()
        if self._epoch < self._max_epochs:
            # Before the references are scored: a range no candidate fits
            # fails at once.
            self._draw_population()
        self._score_references()
        while self._epoch < self._max_epochs:
            self.run_epoch()
        self._finish()
        self.runner.call_hook('after_train')

    def _draw_population(self) -> None:
        """The next population, unless one is pending (resumed); refuses
        a first population without a candidate."""
        if self.population:
            return
        population = self._next_population() if is_main_process() \
            else None
        self.population = _broadcast(population)
        if not self.population and not self.archive:
            raise ConfigError(self._empty_message())
        self._save_state()

    def _empty_message(self) -> str:
        ranges = ', '.join(f'{key}=({lo / 1e6:g}, {hi / 1e6:g})'
                           for key, (lo, hi) in self.ranges.items())
        return (
            f'train_cfg.constraints_range: no candidate fits {ranges} M '
            f'({self.num_candidates * 20} draws, each repaired towards it): '
            'it is narrower than what one width step moves, or its flops '
            f'and params ranges exclude each other; {self._span_text()}; '
            'widen the range (e.g. --flops-tolerance 0.05)')

    def run_epoch(self) -> None:
        self._draw_population()
        if not self.population:
            self.runner.logger.warning(
                f'Epoch [{self._epoch + 1}/{self._max_epochs}]: no new '
                'candidate inside train_cfg.constraints_range (the ones '
                'found are all evaluated); the range may hold few subnets')
        scores = {tuple(c['widths']): c['score'] for c in self.archive}
        for index, candidate in enumerate(self.population):
            if candidate['score'] is not None:
                continue  # evaluated before a resume
            key = tuple(candidate['widths'])
            if key in scores:
                candidate['score'] = scores[key]
            else:
                candidate['score'] = self._evaluate(candidate, index)
                scores[key] = candidate['score']
            self._save_state()
        self._epoch += 1
        self.population = []
        self._save_state(snapshot=True)
        self._write_outputs()
        best = self._best()
        self.runner.logger.info(
            f'Epoch [{self._epoch}/{self._max_epochs}] best: score '
            f'{best["score"]:.2f}, {best["flops"] / 1e6:.3f} MFLOPs, '
            f'{best["params"] / 1e6:.3f} M params; '
            f'{len(self.archive)} candidates evaluated')

    def _score_references(self) -> None:
        """Score the max and min subnets once (kept in the state)."""
        for kind, pick in (('max', -1), ('min', 0)):
            if kind in self.references:
                continue
            widths = dict(
                zip(self.unit_names, [c[pick] for c in self.candidate_widths]))
            self.widths.set_widths(widths)
            score = float(self._val_candidate()[self.score_key])
            self.references[kind] = dict(
                flops=self.table.flops(widths),
                params=self.table.params(widths),
                score=score)
            self.runner.logger.info(
                f'reference {kind} subnet: '
                f'{self.references[kind]["flops"] / 1e6:.3f} MFLOPs, score '
                f'{score:.2f}')
            self._save_state()

    def _evaluate(self, candidate: Dict, index: int) -> float:
        widths = dict(zip(self.unit_names, candidate['widths']))
        self.widths.set_widths(widths)
        metrics = self._val_candidate()
        if self.score_key not in metrics:
            raise ConfigError(
                f'train_cfg.score_key={self.score_key!r} is not among the '
                f'evaluator\'s metrics; accepted: {sorted(metrics)}')
        score = float(metrics[self.score_key])
        record = dict(
            id=len(self.archive),
            epoch=self._epoch,
            origin=candidate['origin'],
            flops=self.table.flops(widths),
            params=self.table.params(widths),
            score=score,
            widths=candidate['widths'])
        self.archive.append(record)
        self.runner.logger.info(
            f'Epoch [{self._epoch + 1}/{self._max_epochs}] candidate '
            f'[{index + 1}/{len(self.population)}] {record["origin"]}: '
            f'{record["flops"] / 1e6:.3f} MFLOPs, '
            f'{record["params"] / 1e6:.3f} M params, score {score:.2f}')
        return score

    # state and outputs

    def _best(self) -> Dict:
        top = self.top_k_records()
        if not top:
            raise ConfigError(self._empty_message())
        return top[0]

    def _state(self) -> Dict:
        return dict(
            format=STATE_FORMAT,
            epoch=self._epoch,
            max_epochs=self._max_epochs,
            unit_names=self.unit_names,
            constraints_range=self._constraints(),
            score_key=self.score_key,
            flops_convention=self.flops_convention,
            population=self.population,
            archive=self.archive,
            references=self.references,
            rng=_rng_state(self.rng))

    def _save_state(self, snapshot: bool = False) -> None:
        if not is_main_process():
            return
        state = self._state()
        atomic_write_json(
            osp.join(self.runner.work_dir, 'search_state.json'), state)
        if snapshot:
            atomic_write_json(
                osp.join(self.runner.work_dir,
                         f'search_epoch_{self._epoch}.json'), state)
            old = self._epoch - self.max_keep_ckpts
            stale = osp.join(self.runner.work_dir,
                             f'search_epoch_{old}.json')
            if self.max_keep_ckpts > 0 and osp.isfile(stale):
                os.remove(stale)

    def _load_state(self, path: str) -> None:
        try:
            with open(path) as f:
                state = json.load(f)
            if state.get('format') != STATE_FORMAT:
                raise ValueError(f'format {state.get("format")!r}')
            epoch, population = int(state['epoch']), state['population']
            archive, rng = state['archive'], state['rng']
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                f'search state {path!r} is corrupt or truncated ({error}); '
                'the state files are written atomically, so the previous '
                'ones (search_state.json, search_epoch_<n>.json) in the '
                'work dir are intact: resume from one of them') from error
        if state.get('unit_names') != self.unit_names:
            raise ConfigError(f'search state {path!r} is for another model:'
                              ' its units differ from this supernet\'s')
        self._check_resumable(state, path)
        self._epoch, self.population, self.archive = epoch, population, \
            archive
        self.references = dict(state.get('references') or {})
        self.rng.setstate(_rng_restore(rng))
        self.runner.logger.info(
            f'Resumed search from {path}: epoch {epoch}, '
            f'{len(archive)} candidates evaluated')

    def _check_resumable(self, state: Dict, path: str) -> None:
        """Refuse a state searched under other constraints, score key or
        FLOPs convention: its candidates were filtered and ranked by them.
        (States without a key, of older versions, are not checked on it.)
        """
        current = dict(
            constraints_range=self._constraints(),
            score_key=self.score_key,
            flops_convention=self.flops_convention)
        for key in RESUME_KEYS:
            if key not in state:
                continue
            old = state[key]
            if key == 'constraints_range':
                try:
                    old = {k: [float(v) for v in value]
                           for k, value in old.items()}
                except (AttributeError, TypeError, ValueError):
                    pass
            if old != current[key]:
                how = ('the same --flops-target and --flops-tolerance, or '
                       'train_cfg.constraints_range' if key ==
                       'constraints_range' else
                       f'--cfg-options train_cfg.{key}={old}')
                raise ConfigError(
                    f'--resume: the search state {path!r} was searched '
                    f'with train_cfg.{key}={_show(old)}, this run has '
                    f'train_cfg.{key}={_show(current[key])}; its candidates '
                    'were chosen and ranked under the old value. Resume '
                    f'with the old value ({how}), or start a new search in '
                    'another --work-dir')

    def _write_outputs(self) -> None:
        if not is_main_process():
            return
        work_dir = self.runner.work_dir
        atomic_write_json(osp.join(work_dir, 'candidates.json'), self.archive)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            ['id', 'epoch', 'origin', 'mflops', 'mparams', 'score', 'widths'])
        for c in self.archive:
            writer.writerow([
                c['id'], c['epoch'], c['origin'], f'{c["flops"] / 1e6:.4f}',
                f'{c["params"] / 1e6:.4f}', c['score'],
                ' '.join(map(str, c['widths']))
            ])
        atomic_write_text(osp.join(work_dir, 'candidates.csv'),
                          buffer.getvalue())
        atomic_write_json(osp.join(work_dir, 'references.json'),
                          self.references)
        pareto_plot(self.archive, self.ranges.get('flops'),
                    osp.join(work_dir, 'pareto.png'), self.references,
                    self.flops_convention)

    def _finish(self) -> None:
        best = self._best()
        widths = dict(zip(self.unit_names, best['widths']))
        self.widths.set_widths(widths)
        if is_main_process():
            work_dir = self.runner.work_dir
            save_subnet(
                osp.join(work_dir, 'best_subnet.json'),
                osp.join(work_dir, 'best_fix_subnet.yaml'),
                self.model.mutator,
                widths,
                self.table,
                score_key=self.score_key,
                score=best['score'],
                flops_convention=self.flops_convention,
                constraints_range=self._constraints())
            self.runner.logger.info(
                f'Search finished: best subnet {best["flops"] / 1e6:.3f} '
                f'MFLOPs, {best["params"] / 1e6:.3f} M params, '
                f'{self.score_key} {best["score"]:.2f}; written to '
                f'{osp.join(work_dir, "best_subnet.json")} and '
                'best_fix_subnet.yaml')


def pareto_plot(archive: Sequence[Dict],
                flops_range,
                path: str,
                references: Optional[Dict[str, Dict]] = None,
                flops_convention: str = 'all') -> None:
    """Score against FLOPs of every evaluated candidate, with the Pareto
    front (best score for at most that many FLOPs), the constraint and the
    max and min subnets as references."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    if flops_range is not None:
        ax.axvspan(flops_range[0] / 1e6, flops_range[1] / 1e6, alpha=0.1,
                   color='tab:green', label='constraint')
    for origin, color in (('prior', 'tab:blue'), ('recorded', 'tab:red'),
                          ('mutation', 'tab:orange'),
                          ('crossover', 'tab:purple')):
        points = [(c['flops'] / 1e6, c['score']) for c in archive
                  if c['origin'] == origin]
        if points:
            ax.scatter(*zip(*points), s=12, color=color, label=origin)
    from ...visualization import pareto_front
    front = [(c['flops'] / 1e6, c['score']) for c in pareto_front(archive)]
    if front:
        ax.plot(*zip(*front), color='black', lw=1, label='Pareto front')
    for kind, ref in (references or {}).items():
        ax.scatter([ref['flops'] / 1e6], [ref['score']], marker='*', s=80,
                   color='tab:gray' if kind == 'min' else 'black')
        ax.annotate(f'{kind} subnet', (ref['flops'] / 1e6, ref['score']),
                    fontsize=7, xytext=(4, -10), textcoords='offset points')
        ax.axhline(ref['score'], color='tab:gray', lw=0.6, ls=':')
    ax.set_xlabel(f'MFLOPs ({flops_convention!r} convention)')
    ax.set_ylabel('score')
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png')
    plt.close(fig)


def _show(value) -> str:
    """A state or config value as a user writes it in a config."""
    if isinstance(value, dict):
        return 'dict(' + ', '.join(
            f'{k}=({", ".join(f"{v:g}" for v in r)})'
            if isinstance(r, list) and all(isinstance(v, float) for v in r)
            else f'{k}={r!r}' for k, r in value.items()) + ')'
    return repr(value)


def _broadcast(obj):
    holder = [obj]
    broadcast_object_list(holder)
    return holder[0]


def _rng_state(rng: random.Random) -> List:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_restore(state: List) -> Tuple:
    version, internal, gauss = state
    return version, tuple(internal), gauss
