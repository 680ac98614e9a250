"""The PSE-Net algorithm: parallel-subnets training.

Every training step draws K subnets, splits the batch into K groups (or
repeats it K times) and runs all of them in one forward/backward of the
supernet (see :mod:`.parallel`), with one optimizer step. The loss is the
batch mean, i.e. ``sum_k |G_k| / B * L_k``. Each step also leaves, for the
prior-recording hook, every group's subnet widths and loss.
"""
import random
from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from mmengine.dist import sync_random_seed
from mmrazor.models.algorithms import BaseAlgorithm
from mmrazor.registry import MODELS
from torch import nn

from ..errors import ConfigError
from ..structures import FlopsTable, flops_uniform_widths, sandwich_kinds
from .mutator import PSEChannelMutator
from .parallel import LAYOUTS, GroupLayout

SAMPLE_STRATEGIES = ('sandwich', 'uniform', 'flops_uniform')
BATCH_MODES = ('split', 'repeat')
EXECUTIONS = ('sliced', 'masked')


@MODELS.register_module()
class PSENet(BaseAlgorithm):
    """Parallel-subnets estimator (PSE-Net) supernet training.

    Args:
        architecture (dict | nn.Module): the supernet, an mmpretrain
            classifier (``extract_feat`` and a ``ClsHead``).
        mutator (dict): the channel mutator; must be a
            ``PSEChannelMutator``. Defaults to its defaults (AutoSlim's
            candidate widths, FxTracer on a 224x224 demo input).
        num_subnets (int): K, the subnets trained per step. Defaults to 4.
        sample_strategy (str): how the K subnets are drawn: ``'sandwich'``
            (max, min and K-2 uniform random), ``'uniform'`` (K uniform) or
            ``'flops_uniform'`` (K with FLOPs uniform over [min, max]).
            Defaults to ``'sandwich'``.
        batch_mode (str): ``'split'`` (group k gets every K-th sample) or
            ``'repeat'`` (the batch is tiled K times so every subnet sees
            every sample; costs K times more). Defaults to ``'split'``.
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
                 seed: Optional[int] = None,
                 data_preprocessor: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None) -> None:
        _check_choice('model.sample_strategy', sample_strategy,
                      SAMPLE_STRATEGIES)
        _check_choice('model.batch_mode', batch_mode, BATCH_MODES)
        _check_choice('model.group_layout', group_layout, LAYOUTS)
        _check_choice('model.execution', execution, EXECUTIONS)
        if not isinstance(num_subnets, int) or num_subnets < 1:
            raise ConfigError(f'model.num_subnets={num_subnets!r}; accepted: '
                              'an integer >= 1')
        if distill_loss is not None and sample_strategy != 'sandwich':
            raise ConfigError(
                'model.distill_loss distils from the max subnet, which only '
                'model.sample_strategy=\'sandwich\' always draws')
        if isinstance(data_preprocessor, dict):
            data_preprocessor = dict(data_preprocessor)
            data_preprocessor.setdefault('type',
                                         'mmpretrain.ClsDataPreprocessor')
        super().__init__(architecture, data_preprocessor, init_cfg)
        for attr in ('extract_feat', 'head'):
            if not hasattr(self.architecture, attr):
                raise ConfigError(
                    f'model.architecture ({type(self.architecture).__name__}'
                    f') has no `{attr}`: PSENet trains mmpretrain '
                    'classifiers (extract_feat + a ClsHead)')

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

    # mmrazor's SubnetValLoop evaluates these kinds of subnets.
    sample_kinds = ['max', 'min']

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
        if self.sample_strategy == 'sandwich':
            return [
                mutator.sample_choices(kind, self.rng)
                if kind == 'random' else mutator.sample_choices(kind)
                for kind in sandwich_kinds(self.num_subnets)
            ]
        if self.sample_strategy == 'uniform':
            return [
                mutator.sample_choices('random', self.rng)
                for _ in range(self.num_subnets)
            ]
        table = self.flops_table
        candidates = mutator.candidate_widths(table.unit_names)
        subnets = []
        for _ in range(self.num_subnets):
            widths = flops_uniform_widths(table, candidates, self.rng)
            subnets.append(
                mutator.choices_of(dict(zip(table.unit_names,
                                            widths.astype(int).tolist()))))
        return subnets

    def _kinds(self) -> List[str]:
        if self.sample_strategy == 'sandwich':
            kinds = sandwich_kinds(self.num_subnets)
        else:
            kinds = ['random'] * self.num_subnets
        return [k if k != 'random' else f'rand{i}' for i, k in
                enumerate(kinds)]

    # training

    def loss(self, batch_inputs: torch.Tensor,
             data_samples: Optional[List] = None) -> Dict[str, torch.Tensor]:
        """One parallel forward of K subnets; returns the losses to
        optimise and, as ``<kind>.ce`` entries, every group's loss (logged,
        not optimised: their names hold no ``loss``)."""
        num = self.num_subnets
        batch_size = batch_inputs.shape[0]
        if self.batch_mode == 'split' and num > batch_size:
            raise ConfigError(
                f'model.num_subnets={num} is larger than the batch '
                f'({batch_size} samples): every subnet needs at least one '
                'sample; lower num_subnets or raise the batch size')
        layout = GroupLayout(num, self.group_layout)
        if self.batch_mode == 'repeat':
            batch_inputs, data_samples = _repeat(batch_inputs, data_samples,
                                                 num, self.group_layout)
        subnets = self.sample_subnets()
        teacher = None
        if self.distill_loss is not None and self.batch_mode == 'split':
            teacher = self._teacher_logits(batch_inputs)
        logits = forward_subnets(self.architecture, self.mutator,
                                 batch_inputs, subnets, layout,
                                 self.execution)
        if teacher is None:
            losses = self.architecture.head._get_loss(logits, data_samples)
        else:
            losses = self._split_distill_losses(logits, teacher,
                                                data_samples, layout)

        group = layout.group_index(logits.shape[0], logits.device)
        per_sample = _per_sample_ce(logits.detach(), data_samples)
        group_losses = torch.zeros(
            num, device=logits.device).index_add_(0, group, per_sample)
        group_losses /= torch.bincount(group, minlength=num).clamp(min=1)

        if self.distill_loss is not None and self.batch_mode == 'repeat':
            losses['loss_distill'] = self._distill(logits, layout)

        kinds = self._kinds()
        for kind, value in zip(kinds, group_losses):
            losses[f'{kind}.ce'] = value
        self.last_records = dict(
            widths=[self.mutator.widths_of(s) for s in subnets],
            kinds=kinds,
            losses=group_losses)
        return losses

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
                              layout: GroupLayout) -> Dict[str, torch.Tensor]:
        """Group 0 (the max subnet): cross entropy; every other group: the
        distillation loss against the teacher on its samples; each weighted
        by its share of the batch."""
        size = logits.shape[0]
        index = layout.indices(0, size, logits.device)
        ce = self.architecture.head._get_loss(
            logits[index], [data_samples[i] for i in index.tolist()])
        losses = {k: v * len(index) / size for k, v in ce.items()}
        distill = logits.new_zeros(())
        for k in range(1, self.num_subnets):
            index = layout.indices(k, size, logits.device)
            if index.numel():
                distill = distill + self.distill_loss(
                    logits[index], teacher[index]) * len(index) / size
        losses['loss_distill'] = distill
        return losses

    def _distill(self, logits: torch.Tensor,
                 layout: GroupLayout) -> torch.Tensor:
        """Every non-max group against the max group (group 0), sample by
        sample: in repeat mode all groups hold the same samples in order."""
        size = logits.shape[0]
        teacher = logits[layout.indices(0, size, logits.device)].detach()
        students = [
            logits[layout.indices(k, size, logits.device)]
            for k in range(1, self.num_subnets)
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
                architecture.head(
                    architecture.extract_feat(inputs.index_select(0, index))))
            order.append(index)
    logits = torch.cat(parts)
    return logits.new_empty(logits.shape).index_copy(0, torch.cat(order),
                                                     logits)


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
