"""The PSE-Net algorithm: parallel-subnets training.

Every training step draws K subnets, splits the batch into K groups (or
repeats it K times) and runs all of them in one forward/backward of the
supernet (see :mod:`.parallel`), with one optimizer step. The loss is the
batch mean, i.e. ``sum_k |G_k| / B * L_k``. Each step also leaves, for the
prior-recording hook, every group's subnet widths and loss.

What the parallel step cannot train exactly is refused when the model is
built, naming the config key or the module: activation checkpointing
(``with_cp``), batch norms without a group-wise mode, a ``SyncBatchNorm``
put in after the build (mmengine's ``sync_bn``: refused before the first
step), candidate widths a unit does not have. A self-check then runs the K
subnets once in parallel on the demo input against each subnet alone and
names the first layer that differs. A last, partial batch of an epoch runs
fewer subnets (or is skipped) instead of failing.

The architecture is an mmpretrain classifier, an mmdet detector or an
mmseg segmentor. For a detector or segmentor, group k of the batch runs
subnet k (weights sliced) through the whole model and the task's own
``loss`` (e.g. RetinaNet's focal and box losses, the decode head's cross
entropy); the groups' losses are averaged, weighted by group size, with one
backward and one optimizer step: group k's losses and gradients are those
of subnet k alone on its samples.
"""
import contextlib
import math
import random
from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from mmengine.dist import sync_random_seed
from mmengine.logging import print_log
from mmrazor.models.algorithms import BaseAlgorithm
from mmrazor.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError
from ..structures import (FlopsTable, flops_uniform_widths, ratio_widths,
                          sandwich_kinds)
from .dynamic_ops import PSE_NORMS, PSEConv2d, PSELinear, mmrazor_slicing
from .mutator import PSEChannelMutator
from .parallel import LAYOUTS, GroupLayout

SAMPLE_STRATEGIES = ('sandwich', 'sandwich_ratio', 'max_random',
                     'max_random_ratio', 'uniform', 'flops_uniform')
#: the strategies that train the max subnet in group 0 at every step
WITH_MAX = ('sandwich', 'sandwich_ratio', 'max_random', 'max_random_ratio')
#: the strategies that train the min subnet in group 1 at every step
WITH_MIN = ('sandwich', 'sandwich_ratio')
#: the strategies whose every second random subnet is a ratio subnet
WITH_RATIO = ('sandwich_ratio', 'max_random_ratio')
BATCH_MODES = ('split', 'repeat')
EXECUTIONS = ('sliced', 'masked')


@MODELS.register_module()
class PSENet(BaseAlgorithm):
    """Parallel-subnets estimator (PSE-Net) supernet training.

    Args:
        architecture (dict | nn.Module): the supernet: an mmpretrain
            classifier (``extract_feat`` and a ``ClsHead``), an mmdet
            detector (``BaseDetector``) or an mmseg segmentor
            (``BaseSegmentor``). A detector or segmentor needs
            ``execution='sliced'`` and no ``distill_loss``; every group
            runs the task's own ``loss``.
        mutator (dict): the channel mutator; must be a
            ``PSEChannelMutator``. Defaults to its defaults (AutoSlim's
            candidate widths, FxTracer on a 224x224 demo input).
        num_subnets (int): K, the subnets trained per step. Defaults to 4.
        sample_strategy (str): how the K subnets are drawn: ``'sandwich'``
            (max, min and K-2 uniform random), ``'sandwich_ratio'`` (the
            same, with every second random subnet a *ratio* subnet: every
            unit at the same relative position among its widths, the
            position uniform in [0, 1], the family between max and min; on
            the demo digits, seed 1: max / min / mean of 20 random subnets
            at 30% FLOPs 95.9 / 92.2 / 88.4 against the sandwich's 94.9 /
            87.9 / 84.8; kind ``'ratio<k>'``, which the prior's statistics
            leave out), ``'max_random'`` (max and K-1
            uniform random; the min is not trained on its own: on the demo
            digits, 3 seeds, random subnets at 30% FLOPs score 1.8 points
            more on average, the min 18-38 points less, the searched subnet
            the same; docs/experiments.md), ``'max_random_ratio'`` (max,
            then uniform random and ratio subnets in turn, no min: in
            ``benchmarks/supernet_quality.py``, two runs, every in-band
            subnet above the min, as standalone training has them (6 and 7
            of 10 below it with ``'sandwich_ratio'``), in-band mean 92.7 /
            93.5 (84.4 / 92.5), but the min 84.1 / 83.0 (89.9 / 93.8) and
            the in-band ranking no better), ``'uniform'`` (K uniform) or
            ``'flops_uniform'`` (K with FLOPs uniform over [min, max]).
            Defaults to ``'sandwich'``.
        batch_mode (str): ``'split'`` (group k gets every K-th sample) or
            ``'repeat'`` (the batch is tiled K times so every subnet sees
            every sample; costs K times more; on the demo digits, 16
            epochs: max and min 0.1 and 0.2 points below the same
            architectures trained standalone with seed 1, 0.6 and 0.3 with
            seed 2, against 1.5 and 2.0 in split mode (2.9 and 5.9 with
            seed 2), for 2.8x the step). Defaults to
            ``'split'``.
        group_layout (str): ``'interleaved'`` (fast, default) or
            ``'contiguous'``; see :class:`GroupLayout`.
        execution (str): how the K subnets run: ``'sliced'`` (each group
            through its own subnet's weights, sliced as views; costs about
            the subnets' FLOPs on their groups) or ``'masked'`` (one
            full-width pass of the whole batch, channels masked per sample).
            Both compute the same logits, gradients and running statistics.
            Defaults to ``'sliced'``.
        distill_loss (dict, optional): in-place distillation from the max
            subnet, e.g. ``dict(type='mmrazor.KLDivergence', tau=1,
            loss_weight=1)``. ``batch_mode='repeat'``: every other subnet's
            logits against the max subnet's (detached), added to the cross
            entropy. ``'split'``: as MMRazor's AutoSlim, the max subnet
            learns from the labels and every other subnet from the max
            subnet only: a forward of the max subnet without gradient on the
            whole batch (train-mode batch norm, running statistics left
            alone) gives the soft targets of every group's samples, and
            group k's loss is the distillation loss on its samples (the max
            group keeps the cross entropy). Costs one extra forward.
        input_shape (tuple): (1, C, H, W) for the FLOPs table. Defaults to
            the mutator's demo input.
        self_check (bool): after building, run K subnets (at least 2: max,
            min, random) once by the configured execution on a random batch
            of the demo input's shape and compare every layer's output with
            each subnet run alone (mmrazor's own weight slicing); a
            difference is a ``ConfigError`` naming the first layer that
            differs. Batch-norm statistics and choices are left as they
            were. Costs about 0.5 s of one CPU core for the demo's
            MobileNetV2-1.5x at 32x32, 2.5-3.5 s at 224x224. Defaults to
            True.
        seed (int, optional): seed of the subnet sampler. Defaults to a seed
            shared by all ranks (``mmengine.dist.sync_random_seed``), so that
            every rank draws the same subnets at every step.
        data_preprocessor (dict, optional): defaults to the architecture's;
            a dict without ``type`` becomes an mmpretrain
            ``ClsDataPreprocessor``.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self,
                 architecture: Union[Dict, nn.Module],
                 mutator: Dict = dict(type='PSEChannelMutator'),
                 num_subnets: int = 4,
                 sample_strategy: str = 'sandwich',
                 batch_mode: str = 'split',
                 group_layout: str = 'interleaved',
                 execution: str = 'sliced',
                 distill_loss: Optional[Dict] = None,
                 input_shape: Optional[tuple] = None,
                 self_check: bool = True,
                 seed: Optional[int] = None,
                 data_preprocessor: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None) -> None:
        _check_choice('model.sample_strategy', sample_strategy,
                      SAMPLE_STRATEGIES)
        _check_choice('model.batch_mode', batch_mode, BATCH_MODES)
        _check_choice('model.group_layout', group_layout, LAYOUTS)
        _check_choice('model.execution', execution, EXECUTIONS)
        if isinstance(num_subnets, bool) or not isinstance(
                num_subnets, int) or num_subnets < 1:
            raise ConfigError(f'model.num_subnets={num_subnets!r}; accepted: '
                              'an integer >= 1')
        if not isinstance(self_check, bool):
            raise ConfigError(f'model.self_check={self_check!r}; accepted: '
                              'True or False')
        if distill_loss is not None and sample_strategy not in WITH_MAX:
            raise ConfigError(
                'model.distill_loss distils from the max subnet, which only '
                f'model.sample_strategy in {WITH_MAX} always draws')
        if isinstance(data_preprocessor, dict):
            data_preprocessor = dict(data_preprocessor)
            data_preprocessor.setdefault('type',
                                         'mmpretrain.ClsDataPreprocessor')
        super().__init__(architecture, data_preprocessor, init_cfg)
        #: 'classification', 'detection' or 'segmentation'
        self.task = task_of(self.architecture)
        if self.task != 'classification':
            if execution != 'sliced':
                raise ConfigError(
                    f'model.execution={execution!r}: a {self.task} model '
                    'runs every group through its own loss, subnet by '
                    "subnet; accepted: 'sliced'")
            if distill_loss is not None:
                raise ConfigError(
                    'model.distill_loss distils classifier logits; '
                    f'accepted for a {self.task} model: None')
        _refuse_checkpointing(self.architecture)

        self.mutator: PSEChannelMutator = MODELS.build(mutator)
        if not isinstance(self.mutator, PSEChannelMutator):
            raise ConfigError(
                f'model.mutator: {type(self.mutator).__name__} has no '
                'parallel mode; accepted: PSEChannelMutator or a subclass')
        self.mutator.prepare_from_supernet(self.architecture)
        if execution == 'sliced':
            blocked = self.mutator.sliceable_modules()
            if blocked:
                raise ConfigError(
                    f"model.execution='sliced': the channels of {blocked[:3]}"
                    ' are not a prefix of their weights, which the sliced '
                    "step needs; use model.execution='masked'")

        self.num_subnets = num_subnets
        self.sample_strategy = sample_strategy
        self.batch_mode = batch_mode
        self.group_layout = group_layout
        self.execution = execution
        self.distill_loss = (MODELS.build(distill_loss)
                             if distill_loss is not None else None)
        self.input_shape = input_shape
        self._seed = seed
        self._rng: Optional[random.Random] = None
        self._flops_table: Optional[FlopsTable] = None
        #: What the last step trained: per group, the subnet's unit widths,
        #: its kind and its loss (a detached tensor). Read by the
        #: prior-recording hook.
        self.last_records: Optional[Dict] = None
        #: the largest training batch seen (a smaller one is a partial batch)
        self._batch_size: Optional[int] = None
        #: values per channel and sample of the smallest feature map a batch
        #: norm normalises in training (measured at the first step)
        self._norm_values: Optional[int] = None
        if self_check:
            self.self_check()

    # mmrazor's SubnetValLoop evaluates these kinds of subnets.
    sample_kinds = ['max', 'min']

    # the build-time self-check

    def self_check(self, samples_per_group: Optional[int] = None,
                   seed: int = 0, rtol: float = 1e-4) -> None:
        """Run K subnets (at least 2: max, min, then random ones) once, by
        the configured execution, on a random batch of the demo input's
        shape, and compare every layer's output, group by group, with what
        each subnet computes alone on its group: weight-sliced as in
        evaluation (for the masked execution), or through mmrazor's own
        weight slicing (:func:`~.dynamic_ops.mmrazor_slicing`, for the
        sliced one). In masked execution, the channels a group's subnet
        drops must also be zero after every layer that masks them (batch
        norms, and the convs and linears the traced graph made mask their
        outputs).

        Batch norms run in training mode (each group's own statistics);
        dropout and other layers in evaluation mode. The check runs in
        float64 (a float32 model is converted for it and back, values
        unchanged): batch norm over a few samples amplifies float32
        rounding too much to tell it from a wrong mask. It runs on one
        thread. The thread count, running statistics and the mutator's
        choices are restored afterwards.

        Args:
            samples_per_group (int, optional): defaults to 4 below 64 px
                (the last batch norms see maps of a few pixels), else 2.
            seed (int): of the random input and the random subnets.
            rtol (float): tolerance, relative to a layer's largest value.

        Raises:
            ConfigError: naming the first layer (in execution order) that
                differs, the group and the size of the difference.
        """
        # One thread: float64 grouped convolutions take torch's slow path,
        # one call per group, and the comparisons are many small
        # reductions; threading overhead dominated both (17-57 s instead of
        # 0.5 s with 2 threads on a busy 2-core machine).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                self._self_check(samples_per_group, seed, rtol)
        finally:
            torch.set_num_threads(threads)

    def _self_check(self, samples_per_group: Optional[int], seed: int,
                    rtol: float) -> None:
        mutator = self.mutator
        num = max(2, self.num_subnets)
        rng = random.Random(seed)
        subnets = [mutator.max_choices, mutator.min_choices] + [
            mutator.sample_choices('random', rng) for _ in range(num - 2)
        ]
        layout = GroupLayout(num, self.group_layout)
        shape = _demo_shape(mutator)
        if samples_per_group is None:
            samples_per_group = 4 if min(shape[2:] or (0, )) < 64 else 2
        size = num * samples_per_group
        inputs = torch.randn((size, ) + tuple(shape[1:]),
                             generator=torch.Generator().manual_seed(seed),
                             dtype=torch.float64)
        where = (f"(model.execution={self.execution!r}, {num} subnets on "
                 f'the demo input {tuple(shape)})')
        # The layers with weights (convs, linears, batch norms): a
        # difference shows first in one of them.
        layers = [(name, m) for name, m in self.architecture.named_modules()
                  if name and _is_layer(m) and '.mutable_attrs' not in name
                  and (isinstance(m, _BatchNorm)
                       or any(True for _ in m.parameters(recurse=False)))]

        def record(layers, inputs_of=None):
            try:
                return _record_layers(self.architecture, mutator, inputs,
                                      subnets, layout, self.execution,
                                      layers, inputs_of)
            except ConfigError:
                raise
            except Exception as error:
                raise ConfigError(
                    'model.self_check: the parallel pass or a subnet alone '
                    f'failed {where}: {type(error).__name__}: '
                    f'{str(error).splitlines()[0][:300]}; '
                    'model.self_check=False skips this check') from error

        tested, alone = record(layers)
        modules = dict(layers)
        intended = mutator.output_masks
        kinds = ['max', 'min'] + [f'rand{k}' for k in range(2, num)]
        kept = (_kept_channels(layers, mutator, subnets)
                if self.execution == 'masked' else {})
        for name in tested.order:
            module = modules[name]
            masks = isinstance(module, PSE_NORMS) or intended.get(
                name, getattr(module, 'mask_output', False))
            problem = _compare_layer(
                tested.outputs[name], [a.outputs.get(name, []) for a in alone],
                layout, size, self.execution, rtol,
                masks and self.execution == 'masked', kept.get(name))
            if problem is None:
                continue
            k, what = problem
            if self.execution == 'masked' and isinstance(
                    module, (PSEConv2d, PSELinear)):
                # Where does it come from? Run again, keeping its input.
                tested, alone = record([(name, module)], inputs_of=name)
                what += _input_leak(tested.inputs.get(name, []),
                                    alone[k].inputs.get(name, []),
                                    layout.indices(k, size))
            raise ConfigError(
                f'model.self_check: layer {name!r} '
                f'({type(module).__name__}) of the parallel pass {where} '
                f'{what} for group {k} (subnet {kinds[k]!r}); PSE-Net '
                'cannot train this architecture exactly (please report it '
                'with the config); model.self_check=False skips this check')

    # integrity

    def forward(self, inputs: torch.Tensor, data_samples=None,
                mode: str = 'tensor'):
        self.check_norms()
        return super().forward(inputs, data_samples, mode)

    def init_weights(self) -> None:
        # mmengine's Runner calls this at the start of train(), after it
        # wrapped the model (and converted its batch norms for `sync_bn`):
        # refuse before the first step.
        self.check_norms()
        super().init_weights()

    def check_norms(self) -> None:
        """Every batch norm of the architecture is still a PSE batch norm.

        mmengine's Runner replaces every batch norm by a ``SyncBatchNorm``
        when a distributed run's config sets ``sync_bn``; it would mix the
        statistics of the K subnet groups (and of the channels they drop).
        Raises a ``ConfigError`` naming ``sync_bn`` and the module.
        """
        if not any(isinstance(m, _BatchNorm) and not isinstance(m, PSE_NORMS)
                   for m in self.architecture.modules()):
            return
        foreign = self.mutator.foreign_norms(self.architecture)
        name, module = foreign[0]
        raise ConfigError(
            f'sync_bn: module {name!r} of model.architecture is now a '
            f'{type(module).__name__}, no longer the group-wise PSE batch '
            'norm the model was built with (mmengine\'s Runner converts '
            'every batch norm when the config sets `sync_bn` in a '
            'distributed run); it would mix the statistics of the subnet '
            'groups. Accepted: no `sync_bn` in the config (remove the key, '
            'or sync_bn=None): every process normalises its own groups, as '
            'in any DDP run without SyncBN')

    def train_step(self, data, optim_wrapper) -> Dict[str, torch.Tensor]:
        """mmengine's train step, except that a partial batch too small for
        even one subnet group is skipped, with a warning."""
        size = _batch_len(data)
        if size is not None and self.training and \
                self._num_groups(size, partial_only=True) == 0:
            print_log(
                f'skipped a training batch of {size} sample(s) (the last, '
                'partial batch of the epoch): batch norm needs at least '
                f'{self._samples_per_group()} samples per subnet group here;'
                ' train_dataloader.drop_last=True drops it silently',
                logger='current', level=30)
            return {}
        return super().train_step(data, optim_wrapper)

    def _samples_per_group(self) -> int:
        """The fewest samples a group needs for batch norm in training: 2
        where some norm normalises a 1x1 map (or before the first step)."""
        return 1 if (self._norm_values or 1) >= 2 else 2

    def _num_groups(self, batch_size: int, partial_only: bool = False) -> int:
        """How many of the K subnets a batch of ``batch_size`` trains: K
        for a full batch; for a smaller (last, partial) batch, as many as
        get enough samples per group for batch norm, in the order of the
        draw (max and min first), 0 if none. A full batch too small for K
        groups is a ``ConfigError`` (unless ``partial_only``)."""
        num = self.num_subnets
        nominal = self._batch_size
        if nominal is None or batch_size >= nominal:
            if partial_only:
                return num
            self._batch_size = batch_size
            if self.batch_mode == 'split' and num > batch_size:
                raise ConfigError(
                    f'model.num_subnets={num} is larger than the batch '
                    f'({batch_size} samples): every subnet needs at least '
                    'one sample; lower model.num_subnets or raise '
                    'train_dataloader.batch_size')
            return num
        need = self._samples_per_group()
        if self.batch_mode == 'repeat':
            return num if batch_size >= need else 0
        return min(num, batch_size // need)

    # sampling

    @property
    def rng(self) -> random.Random:
        if self._rng is None:
            seed = self._seed if self._seed is not None else \
                sync_random_seed()
            self._rng = random.Random(seed)
        return self._rng

    @property
    def flops_input_shape(self) -> tuple:
        """(1, C, H, W): ``input_shape``, or the mutator's demo input."""
        return tuple(self.input_shape or _demo_shape(self.mutator))

    @property
    def flops_table(self) -> FlopsTable:
        """Exact FLOPs/params of subnets at ``flops_input_shape`` (built on
        first use)."""
        if self._flops_table is None:
            self._flops_table = FlopsTable.from_model(
                self.architecture, self.mutator, self.flops_input_shape)
        return self._flops_table

    def sample_subnets(self) -> List[Dict]:
        """The K subnets of one step (choices per unit), by the strategy.
        """
        mutator = self.mutator
        if self.sample_strategy in WITH_MAX:
            return [
                self._ratio_choices() if kind == 'ratio' else
                mutator.sample_choices(kind, self.rng)
                if kind == 'random' else mutator.sample_choices(kind)
                for kind in self._sandwich_kinds()
            ]
        if self.sample_strategy == 'uniform':
            return [
                mutator.sample_choices('random', self.rng)
                for _ in range(self.num_subnets)
            ]
        return [
            self._flops_uniform_choices() for _ in range(self.num_subnets)
        ]

    def _flops_uniform_choices(self) -> Dict:
        """A subnet whose FLOPs are uniform over [min, max]."""
        table = self.flops_table
        candidates = self.mutator.candidate_widths(table.unit_names)
        return self._choices_of_widths(
            flops_uniform_widths(table, candidates, self.rng))

    def _ratio_choices(self) -> Dict:
        """A ratio subnet (:func:`ratio_widths`), its position uniform in
        [0, 1]."""
        candidates = self.mutator.candidate_widths(
            self.flops_table.unit_names)
        return self._choices_of_widths(
            ratio_widths(candidates, self.rng.random()))

    def _choices_of_widths(self, widths) -> Dict:
        """The mutator's choices of a width vector in the FLOPs table's
        unit order."""
        return self.mutator.choices_of(
            dict(zip(self.flops_table.unit_names, widths.tolist())))

    def _sandwich_kinds(self) -> List[str]:
        kinds = sandwich_kinds(
            self.num_subnets,
            with_min=self.sample_strategy in WITH_MIN)
        if self.sample_strategy in WITH_RATIO:
            # every second random subnet a ratio subnet; the others stay
            # uniform per unit, for the prior's statistics
            randoms = [i for i, k in enumerate(kinds) if k == 'random']
            for i in randoms[1::2]:
                kinds[i] = 'ratio'
        return kinds

    def _kinds(self) -> List[str]:
        if self.sample_strategy in WITH_MAX:
            kinds = self._sandwich_kinds()
        else:
            kinds = ['random'] * self.num_subnets
        names = dict(random='rand', ratio='ratio')
        return [f'{names[k]}{i}' if k in names else k
                for i, k in enumerate(kinds)]

    # training

    def loss(self, batch_inputs: torch.Tensor,
             data_samples: Optional[List] = None) -> Dict[str, torch.Tensor]:
        """One parallel forward of K subnets; returns the losses to
        optimise and, as ``<kind>.ce`` entries, every group's loss (logged,
        not optimised: their names hold no ``loss``). A detector or
        segmentor: see :meth:`_task_loss`."""
        if self.task != 'classification':
            return self._task_loss(batch_inputs, data_samples)
        batch_size = batch_inputs.shape[0]
        subnets, kinds, num = self._draw(batch_size)
        layout = GroupLayout(num, self.group_layout)
        if self.batch_mode == 'repeat':
            batch_inputs, data_samples = _repeat(batch_inputs, data_samples,
                                                 num, self.group_layout)
        teacher = None
        if self.distill_loss is not None and self.batch_mode == 'split':
            teacher = self._teacher_logits(batch_inputs)
        with _NormProbe(self) as probe:
            logits = forward_subnets(self.architecture, self.mutator,
                                     batch_inputs, subnets, layout,
                                     self.execution)
        if probe.values is not None:
            self._norm_values = probe.values
        if teacher is None:
            losses = self.architecture.head._get_loss(logits, data_samples)
        else:
            losses = self._split_distill_losses(logits, teacher,
                                                data_samples, layout, num)

        group = layout.group_index(logits.shape[0], logits.device)
        per_sample = _per_sample_ce(logits.detach(), data_samples)
        group_losses = torch.zeros(
            num, device=logits.device).index_add_(0, group, per_sample)
        # index_add_, not bincount: bincount reads its input's max back
        # to the host (a device sync every step on a GPU).
        counts = torch.zeros(num, device=logits.device).index_add_(
            0, group, torch.ones_like(per_sample))
        group_losses /= counts.clamp(min=1)

        if self.distill_loss is not None and self.batch_mode == 'repeat':
            losses['loss_distill'] = self._distill(logits, layout, num)

        return self._with_group_losses(losses, 'ce', subnets, kinds,
                                       group_losses)

    def _task_loss(self, batch_inputs: torch.Tensor,
                   data_samples: List) -> Dict[str, torch.Tensor]:
        """A detector's or segmentor's step: group k through subnet k and
        the architecture's own ``loss``; every loss the weighted mean over
        the groups (weight: the group's share of the batch; 1/K in repeat
        mode). Also returns, as ``<kind>.total`` entries (logged, not
        optimised), every group's total loss."""
        size = batch_inputs.shape[0]
        subnets, kinds, num = self._draw(size)
        layout = GroupLayout(num, self.group_layout)
        losses: Dict[str, torch.Tensor] = {}
        totals = []
        with _NormProbe(self) as probe, \
                self.mutator.sliced(subnets) as run_group:
            for k in range(num):
                if self.batch_mode == 'repeat':
                    index, weight = list(range(size)), 1 / num
                else:
                    index = layout.indices(k, size).tolist()
                    weight = len(index) / size
                run_group(k)
                group = self.architecture.loss(
                    batch_inputs[index], [data_samples[i] for i in index])
                group = {key: _summed(value) for key, value in group.items()}
                totals.append(
                    sum(v for key, v in group.items()
                        if 'loss' in key).detach().float())
                for key, value in group.items():
                    losses[key] = losses.get(key, 0) + value * weight
        if probe.values is not None:
            self._norm_values = probe.values
        return self._with_group_losses(losses, 'total', subnets, kinds,
                                       torch.stack(totals))

    def _with_group_losses(self, losses: Dict, name: str, subnets: List,
                           kinds: List[str],
                           group_losses: torch.Tensor) -> Dict:
        """``losses`` with every group's loss as ``<kind>.<name>`` (logged,
        not optimised), which also become the step's records for the prior
        (:attr:`last_records`)."""
        for kind, value in zip(kinds, group_losses):
            losses[f'{kind}.{name}'] = value
        self.last_records = dict(
            widths=[self.mutator.widths_of(s) for s in subnets],
            kinds=kinds,
            losses=group_losses)
        return losses

    def _draw(self, batch_size: int):
        """(subnets, kinds, number of groups) of a step: the K subnets, or
        the first ones for a partial batch."""
        num = self._num_groups(batch_size)
        subnets = self.sample_subnets()  # all K: the draws stay in step
        kinds = self._kinds()
        if num < self.num_subnets:
            if num == 0:
                raise ConfigError(
                    f'a training batch of {batch_size} sample(s) (the last, '
                    'partial batch of the epoch) is too small for one '
                    'subnet group: batch norm needs at least '
                    f'{self._samples_per_group()} samples per group here; '
                    'accepted: train_dataloader.drop_last=True')
            print_log(
                f'a training batch of {batch_size} samples (the last, '
                f'partial batch of the epoch): it trains {num} of the '
                f'{self.num_subnets} subnets ({", ".join(kinds[:num])}), '
                f'with at least {self._samples_per_group()} sample(s) per '
                'group for batch norm', logger='current', level=30)
            subnets, kinds = subnets[:num], kinds[:num]
        return subnets, kinds, num

    @torch.no_grad()
    def _teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The max subnet's logits on the whole batch, without gradient and
        without touching the running statistics."""
        arch = self.architecture
        with self.mutator.sliced([self.mutator.max_choices],
                                 fold_stats=False) as run_group:
            run_group(0)
            return arch.head(arch.extract_feat(inputs)).detach()

    def _split_distill_losses(self, logits: torch.Tensor,
                              teacher: torch.Tensor, data_samples,
                              layout: GroupLayout,
                              num: int) -> Dict[str, torch.Tensor]:
        """Group 0 (the max subnet): cross entropy; every other group: the
        distillation loss against the teacher on its samples; each weighted
        by its share of the batch."""
        size = logits.shape[0]
        index = layout.indices(0, size, logits.device)
        ce = self.architecture.head._get_loss(
            logits[index],
            [data_samples[i] for i in layout.indices(0, size).tolist()])
        losses = {k: v * len(index) / size for k, v in ce.items()}
        distill = logits.new_zeros(())
        for k in range(1, num):
            index = layout.indices(k, size, logits.device)
            if index.numel():
                distill = distill + self.distill_loss(
                    logits[index], teacher[index]) * len(index) / size
        losses['loss_distill'] = distill
        return losses

    def _distill(self, logits: torch.Tensor, layout: GroupLayout,
                 num: int) -> torch.Tensor:
        """Every non-max group against the max group (group 0), sample by
        sample: in repeat mode all groups hold the same samples in order."""
        size = logits.shape[0]
        teacher = logits[layout.indices(0, size, logits.device)].detach()
        students = [
            logits[layout.indices(k, size, logits.device)]
            for k in range(1, num)
        ]
        return sum(self.distill_loss(s, teacher)
                   for s in students) / max(1, len(students))


def forward_subnets(architecture: nn.Module, mutator: PSEChannelMutator,
                    inputs: torch.Tensor, subnets: List[Dict],
                    layout: GroupLayout,
                    execution: str = 'sliced') -> torch.Tensor:
    """The logits of K subnets on their groups of ``inputs``, in batch order:
    group k (``layout``) through subnet k, by group-sliced execution (each
    group through its subnet's sliced weights) or masked execution (one
    full-width pass, channels masked per sample). Both compute what each
    subnet computes alone on its group."""
    if execution == 'masked':
        with mutator.parallel(subnets, layout.layout):
            return architecture.head(architecture.extract_feat(inputs))
    size = inputs.shape[0]
    parts, order = [], []
    with mutator.sliced(subnets) as run_group:
        for k in range(len(subnets)):
            index = layout.indices(k, size, inputs.device)
            if index.numel() == 0:
                continue
            run_group(k)
            parts.append(
                run_model(architecture, inputs.index_select(0, index)))
            order.append(index)
    if not all(isinstance(p, torch.Tensor) for p in parts):
        return parts  # a detector's or segmentor's outputs, group by group
    logits = torch.cat(parts)
    return logits.new_empty(logits.shape).index_copy(0, torch.cat(order),
                                                     logits)


def task_of(architecture: nn.Module) -> str:
    """'classification' (an mmpretrain classifier: ``extract_feat`` and a
    ``head``), 'detection' (an mmdet ``BaseDetector``) or 'segmentation'
    (an mmseg ``BaseSegmentor``); anything else is a ``ConfigError``."""
    try:
        from mmdet.models import BaseDetector
        if isinstance(architecture, BaseDetector):
            return 'detection'
    except ImportError:
        pass
    try:
        from mmseg.models import BaseSegmentor
        if isinstance(architecture, BaseSegmentor):
            return 'segmentation'
    except ImportError:
        pass
    if all(hasattr(architecture, a) for a in ('extract_feat', 'head')):
        return 'classification'
    raise ConfigError(
        f'model.architecture ({type(architecture).__name__}) is not a model '
        'PSENet can train; accepted: an mmpretrain classifier '
        '(extract_feat + a ClsHead), an mmdet detector (BaseDetector, '
        "pip install -e '.[det]') or an mmseg segmentor (BaseSegmentor, "
        "pip install -e '.[seg]')")


def run_model(architecture: nn.Module, inputs: torch.Tensor):
    """The network's raw outputs (mmengine's ``mode='tensor'``): a
    classifier's logits, a detector's or segmentor's head outputs."""
    if hasattr(architecture, 'head') and hasattr(architecture,
                                                 'extract_feat'):
        return architecture.head(architecture.extract_feat(inputs))
    return architecture._forward(inputs)


def _summed(value):
    """A loss entry as one tensor (mmdet gives some as a list per level,
    which mmengine's ``parse_losses`` sums)."""
    if isinstance(value, torch.Tensor):
        return value
    return sum(_summed(v) for v in value)


def _check_choice(key: str, value, accepted) -> None:
    if value not in accepted:
        raise ConfigError(f'{key}={value!r}; accepted: '
                          f'{", ".join(map(repr, accepted))}')


def _demo_shape(mutator: PSEChannelMutator) -> tuple:
    parse_cfg = mutator.parse_cfg
    shape = parse_cfg.get('demo_input', (1, 3, 224, 224)) if isinstance(
        parse_cfg, dict) else (1, 3, 224, 224)
    if isinstance(shape, dict):
        shape = shape.get('input_shape', (1, 3, 224, 224))
    return tuple(shape)


def _repeat(inputs: torch.Tensor, data_samples, num: int, layout: str):
    """Tile the batch so that group k holds a full copy of it."""
    if layout == 'interleaved':
        inputs = inputs.repeat_interleave(num, dim=0)
        data_samples = [s for s in data_samples for _ in range(num)]
    else:
        inputs = inputs.repeat(num, *([1] * (inputs.dim() - 1)))
        data_samples = list(data_samples) * num
    return inputs, data_samples


def _per_sample_ce(logits: torch.Tensor, data_samples) -> torch.Tensor:
    """Cross entropy of every sample (soft targets when the batch was mixed,
    e.g. by Mixup/CutMix), for recording."""
    if data_samples and 'gt_score' in data_samples[0]:
        target = torch.stack([s.gt_score for s in data_samples]).to(logits)
        return -(target * F.log_softmax(logits.float(), dim=1)).sum(1)
    target = torch.cat([s.gt_label for s in data_samples]).to(logits.device)
    return F.cross_entropy(logits.float(), target, reduction='none')


def check_sync_bn(cfg) -> None:
    """Refuse a runner config that sets ``sync_bn`` for a PSENet model, for
    the tools to call before they build the Runner. (The model refuses by
    itself before the first step, :meth:`PSENet.check_norms`; but on a
    machine without a GPU torch's DDP already fails on the SyncBatchNorm
    layers when mmengine wraps the model, with a traceback.)"""
    model = cfg.get('model') or {}
    kind = str(model.get('type', '')) if hasattr(model, 'get') else ''
    if cfg.get('sync_bn') is not None and kind.split('.')[-1] == 'PSENet':
        raise ConfigError(
            f'sync_bn={cfg.get("sync_bn")!r}: mmengine would replace PSE-Net'
            '\'s group-wise batch norms by SyncBatchNorm layers, which mix '
            'the statistics of the subnet groups; accepted: no `sync_bn` '
            'in the config (remove the key, or sync_bn=None): every process '
            'normalises its own groups, as in any DDP run without SyncBN')


def _refuse_checkpointing(architecture: nn.Module) -> None:
    """Activation checkpointing recomputes a block's forward during
    backward, after the parallel step has left its subnets' state: at the
    max width, without the groups' masks (the gradients would be wrong)."""
    found = [
        name for name, module in architecture.named_modules()
        if getattr(module, 'with_cp', False) is True
    ]
    if not found:
        return
    first = found[0]
    owner = first.split('.')[0] if first else ''
    key = 'model.architecture' + (f'.{owner}' if owner else '') + '.with_cp'
    raise ConfigError(
        f'{key}=True: activation checkpointing (in {first!r}'
        f'{f" and {len(found) - 1} more module(s)" if len(found) > 1 else ""}'
        ') recomputes the forward during backward, outside the parallel '
        'step: at the max width, without the subnet groups\' masks, so the '
        'gradients would be wrong; accepted: with_cp=False')


def _batch_len(data) -> Optional[int]:
    """The number of samples of a data batch (before preprocessing)."""
    inputs = data.get('inputs') if isinstance(data, dict) else None
    if isinstance(inputs, (list, tuple, torch.Tensor)):
        return len(inputs)
    return None


class _NormProbe:
    """While training, before the first measurement: the fewest values per
    channel and sample any batch norm normalises (the product of its
    input's spatial size), by forward pre-hooks removed afterwards."""

    def __init__(self, algorithm: PSENet) -> None:
        self.algorithm = algorithm
        self.values: Optional[int] = None
        self.handles: List = []

    def __enter__(self):
        algorithm = self.algorithm
        if algorithm._norm_values is not None or not algorithm.training:
            return self

        def measure(module, args):
            x = args[0]
            values = math.prod(x.shape[2:]) if x.dim() > 2 else 1
            self.values = values if self.values is None else min(
                self.values, values)

        self.handles = [
            m.register_forward_pre_hook(measure)
            for m in algorithm.architecture.modules()
            if isinstance(m, _BatchNorm)
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def _record_layers(arch: nn.Module, mutator: PSEChannelMutator,
                   inputs: torch.Tensor, subnets: List[Dict],
                   layout: GroupLayout, execution: str, layers: List,
                   inputs_of: Optional[str] = None):
    """The self-check's runs: the K subnets by ``execution`` on ``inputs``,
    then each subnet alone on its group, with the outputs of ``layers``
    (and the input of the layer named ``inputs_of``) recorded. Returns
    (tested recorder, one recorder per subnet). Batch norms in training
    mode, the rest in evaluation mode, float64 for a float32 model; all of
    it, the running statistics and the mutator's choices restored
    afterwards."""
    device = next(arch.parameters()).device
    tensors = [t for t in list(arch.parameters()) + list(arch.buffers())
               if t.is_floating_point()]
    native = tensors[0].dtype if tensors else torch.float32
    wide = all(t.dtype == torch.float32 for t in tensors)
    inputs = inputs.to(device, torch.float64 if wide else native)
    norms = [m for m in arch.modules() if isinstance(m, _BatchNorm)]
    saved = [(m, {k: v.clone() for k, v in m.state_dict().items()})
             for m in norms]
    modes = {m: m.training for m in arch.modules()}
    choices = mutator.current_choices
    # The reference: each subnet alone, weights sliced as views (what
    # evaluation, search and export run); for the sliced execution, which
    # runs exactly that, through mmrazor's own slicing instead.
    reference = (mmrazor_slicing
                 if execution == 'sliced' else contextlib.nullcontext)
    tested = _Recorder(layers, inputs_of)
    alone = [_Recorder(layers, inputs_of) for _ in subnets]
    try:
        if wide:
            arch.to(torch.float64)
        arch.eval()
        for m in norms:
            m.train()
        with tested:
            forward_subnets(arch, mutator, inputs, subnets, layout,
                            execution)
        for k, subnet in enumerate(subnets):
            mutator.set_choices(subnet)
            index = layout.indices(k, inputs.shape[0], device)
            with alone[k], reference():
                run_model(arch, inputs[index])
    finally:
        if wide:
            arch.to(native)
        for m, state in saved:
            m.load_state_dict(state)
        for m, training in modes.items():
            m.training = training
        mutator.set_choices(choices)
    return tested, alone


class _Recorder:
    """Within ``with``: forward hooks keeping the output of every layer,
    and the input of the layer named ``inputs_of``, per call."""

    def __init__(self, layers, inputs_of: Optional[str] = None) -> None:
        self.layers = layers
        self.inputs_of = inputs_of
        self.outputs: Dict[str, List[torch.Tensor]] = {}
        self.inputs: Dict[str, List[torch.Tensor]] = {}
        self.order: List[str] = []
        self.handles: List = []

    def _hook(self, name: str):

        def keep(module, args, out):
            if not isinstance(out, torch.Tensor):
                return
            if name not in self.outputs:
                self.order.append(name)
            self.outputs.setdefault(name, []).append(out.detach().clone())
            if name == self.inputs_of and args:
                self.inputs.setdefault(name, []).append(
                    args[0].detach().clone())

        return keep

    def __enter__(self):
        self.handles = [
            m.register_forward_hook(self._hook(n)) for n, m in self.layers
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def _kept_channels(layers: List, mutator: PSEChannelMutator,
                   subnets: List[Dict]) -> Dict[str, List]:
    """Layer name -> per subnet, the indices of the layer's output channels
    the subnet keeps, for the layers where they are not its first ones in
    some subnet (a batch norm after a concatenation, as in DenseNet). One
    pass over the subnets; the mutator's choices are restored."""
    outputs = {}
    for name, module in layers:
        for attr in ('out_channels', 'num_features', 'out_features'):
            if attr in getattr(module, 'attr_mappings', {}) or attr in \
                    getattr(module, 'accepted_mutable_attrs', ()):
                mutable = module.get_mutable_attr(attr)
                if mutable is not None:
                    outputs[name] = mutable
                    break
    kept = {name: [] for name in outputs}
    choices = mutator.current_choices
    try:
        for subnet in subnets:
            mutator.set_choices(subnet)
            for name, mutable in outputs.items():
                mask = mutable.current_mask.bool()
                width = int(mask.sum())
                kept[name].append(None if bool(mask[:width].all()) else
                                  mask.nonzero().flatten())
    finally:
        mutator.set_choices(choices)
    return {name: k for name, k in kept.items()
            if any(i is not None for i in k)}


def _compare_layer(tested: List[torch.Tensor],
                   alone: List[List[torch.Tensor]], layout: GroupLayout,
                   size: int, execution: str, rtol: float,
                   masks: bool,
                   channels: Optional[List] = None) -> Optional[tuple]:
    """(group, what differs) for the first group whose outputs of a layer
    in the tested pass differ from its subnet's alone, or None.
    ``tested``: the layer's outputs, one per call (masked: whole batch;
    sliced: group by group); ``alone[k]``: its outputs in subnet k alone.
    ``masks``: the layer must zero the channels a group's subnet drops.
    ``channels[k]`` (masked): the channels subnet k keeps where they are not
    the first ones (:func:`_kept_channels`)."""
    calls = len(alone[0])
    for k, reference in enumerate(alone):
        if len(reference) != calls or not calls:
            return k, 'is not called as in the subnet alone'
        rows = _rows(layout.indices(k, size))
        for j, expected in enumerate(reference):
            leak = 0.
            if execution == 'masked':
                got = tested[j][rows]
                if channels is not None and channels[k] is not None \
                        and got.dim() > 1:
                    index = channels[k].to(got.device)
                    dropped = torch.ones(got.shape[1], dtype=torch.bool,
                                         device=got.device)
                    dropped[index] = False
                    if masks and bool(dropped.any()):
                        leak = _largest(got[:, dropped])
                    got = got.index_select(1, index)
            else:
                position = k * calls + j
                if position >= len(tested):
                    return k, 'is not called as in the subnet alone'
                got = tested[position]
            if got.dim() != expected.dim() or any(
                    g < e for g, e in zip(got.shape, expected.shape)):
                return k, (f'gives an output of shape {tuple(got.shape)} '
                           f'where the subnet alone gives '
                           f'{tuple(expected.shape)}')
            if not expected.numel():
                continue
            kept = tuple(slice(0, e) for e in expected.shape)
            scale = _largest(expected)
            error = _largest(torch.sub(got[kept], expected))
            if not error <= rtol * scale + 1e-9:
                return k, (f'differs from the subnet alone by {error:.3g} '
                           f'(largest value {scale:.3g})')
            if masks:
                leak = max(leak, _dropped_max(got, expected.shape))
            if leak > 0:
                return k, ('keeps channels its subnet drops (values up to '
                           f'{leak:.3g} beyond its {tuple(expected.shape)[1:]}'
                           ' output)')
    return None


def _rows(index: torch.Tensor):
    """A group's batch indices as a slice where they are evenly spaced (the
    group layouts), so that its rows are a view, not a copy."""
    if index.numel() == 1:
        start = int(index[0])
        return slice(start, start + 1)
    step = int(index[1] - index[0])
    start = int(index[0])
    if step > 0 and torch.equal(
            index, torch.arange(start, start + step * index.numel(), step)):
        return slice(start, start + step * index.numel(), step)
    return index


def _dropped_max(got: torch.Tensor, kept_shape) -> float:
    """The largest |value| of ``got`` outside its first ``kept_shape``
    entries (the channels, or features, the subnet does not have)."""
    largest = 0.
    for dim, (g, e) in enumerate(zip(got.shape, kept_shape)):
        if g > e:
            largest = max(largest, _largest(got.narrow(dim, e, g - e)))
    return largest


def _largest(x: torch.Tensor) -> float:
    """max |x| in one pass, without a temporary tensor."""
    low, high = torch.aminmax(x)
    return max(-float(low), float(high))


def _input_leak(tested: List[torch.Tensor], alone: List[torch.Tensor],
                index: torch.Tensor) -> str:
    """Where a layer's input (masked pass, the group's samples) holds
    nonzero values in channels the subnet alone does not have: a note
    pointing before the layer."""
    rows = _rows(index)
    for got, expected in zip(tested, alone):
        got = got[rows]
        if got.dim() != expected.dim() or got.shape == expected.shape:
            continue
        leak = _dropped_max(got, expected.shape)
        if leak > 0:
            return (f'; its input already holds values up to {leak:.3g} '
                    'in channels the subnet drops: a layer before it does '
                    'not zero its dropped channels (an output mask missing)')
    return ''


def _is_layer(module: nn.Module) -> bool:
    """A layer to compare: a module without submodules, or a dynamic op
    (whose only submodules are its mutable channel containers)."""
    children = [name for name, _ in module.named_children()]
    return not children or children == ['mutable_attrs']
