"""A subnet as a physically smaller static model, with its batch norm
statistics recalibrated for that subnet."""
import contextlib
import copy
import os.path as osp
import random
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmrazor.structures import export_fix_subnet
from torch.nn.modules.batchnorm import _BatchNorm

from .io import atomic_path, atomic_write_json, staged_folder
from .subnet import save_subnet

#: What an export folder holds (:func:`export_subnet`).
EXPORT_FILES = ('subnet_static.pth', 'subnet.json', 'fix_subnet.yaml',
                'subnet.onnx', 'summary.json')


def export_static(algorithm, widths: Dict[str, int]) -> nn.Module:
    """The subnet's architecture with sliced static layers (plain
    ``nn.Conv2d``/``BatchNorm2d``/``Linear``), a copy: the supernet is left
    as it was.

    Args:
        algorithm (BaseAlgorithm): the supernet algorithm (architecture +
            one-shot channel mutator): PSENet, or mmrazor's AutoSlim.
        widths (dict): unit name -> channels.
    """
    mutator = algorithm.mutator
    saved = mutator.current_choices
    mutator.set_choices(_choices(mutator, widths))
    try:
        # mmrazor's export: deep copy, then dynamic ops -> sliced static ops.
        _, static = export_fix_subnet(
            algorithm, export_subnet_mode='mutator', slice_weight=True)
    finally:
        mutator.set_choices(saved)
    architecture = static.architecture
    architecture.train(algorithm.training)
    return architecture


#: Seed of the sampler and the augmentations of the calibration images.
CALIBRATION_SEED = 0


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's global generators (the transforms
    of a dataloader without workers draw from them); restore them after."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


class CalibrationLoader:
    """The training images that recalibrate batch norm statistics: the same
    images, in the same order and with the same augmentations, at every
    pass.

    The dataloader is built from ``dataloader_cfg`` (a config's
    ``train_dataloader``) with its sampler replaced by a shuffling
    ``DefaultSampler`` seeded with ``seed`` (a random sample of the
    training set, not its first classes), and every pass runs with seeded
    global generators (and seeded workers).

    Args:
        dataloader_cfg (dict): an mmengine dataloader config.
        seed (int): seed of the sampler and the augmentations. Defaults to
            :data:`CALIBRATION_SEED`.
        default_scope (str, optional): the registry scope the dataset and
            transform types are looked up in (a config's
            ``default_scope``). Defaults to the current scope.
    """

    def __init__(self,
                 dataloader_cfg: Dict,
                 seed: int = CALIBRATION_SEED,
                 default_scope: Optional[str] = None) -> None:
        from mmengine.registry import DefaultScope
        from mmengine.runner import Runner
        cfg = copy.deepcopy(dataloader_cfg)
        cfg['sampler'] = dict(type='DefaultSampler', shuffle=True, seed=seed)
        cfg['persistent_workers'] = False  # one pass
        with DefaultScope.overwrite_default_scope(default_scope):
            self.dataloader = Runner.build_dataloader(cfg, seed=seed)
        self.seed = seed

    def __iter__(self) -> Iterator:
        with _seeded(self.seed):
            yield from self.dataloader

    def __len__(self) -> int:
        return len(self.dataloader)


def _num_images(batch) -> int:
    return len(batch['inputs'] if isinstance(batch, dict) else batch)


def _first_images(batch, num: int):
    """The first ``num`` images of a collated batch (tensor or dict of
    per-image sequences, ``default_collate`` or ``pseudo_collate``)."""
    if not isinstance(batch, dict):
        return batch[:num]
    return {
        key: value[:num] if isinstance(value,
                                       (list, tuple, torch.Tensor)) else value
        for key, value in batch.items()
    }


def _choices(mutator, widths: Dict[str, int]) -> Dict:
    """The mutator's choices of a subnet given as unit -> channels (PSE
    units take channels; mmrazor's one-shot units, e.g. AutoSlim's, their
    candidate ratios)."""
    from ..models.channel_widths import ChannelWidths
    return ChannelWidths(mutator).choices_of(widths)


@torch.no_grad()
def calibrate_bn(algorithm,
                 widths: Dict[str, int],
                 dataloader: Iterable,
                 num_samples: int,
                 logger=None) -> int:
    """Recompute the batch norm running statistics of the supernet set to a
    subnet on its first ``num_samples`` images of ``dataloader``, as
    mmrazor's ``CalibrateBNMixin`` does for ``SubnetValLoop`` and the
    search: ``test_step`` forward passes in train mode, statistics reset
    first, then cumulative averages of every batch's mean and unbiased
    variance, each image counting once (torch's ``momentum=None`` when the
    batches are of equal size; the last batch is cut to ``num_samples``).
    The supernet's running statistics are changed in place (those of the
    channels outside the subnet are reset); the choices, the train/eval
    mode and every batch norm's momentum are restored afterwards.

    Not the mixin itself: it needs a runner, rounds ``num_samples`` up to
    whole batches, and slices a dict batch (an error) when one or two
    images remain. The tests check that both give the same statistics.

    Args:
        algorithm (BaseAlgorithm): the supernet algorithm: PSENet, or any
            one-shot channel supernet (mmrazor's AutoSlim).
        widths (dict): unit name -> channels, the subnet.
        dataloader (Iterable): batches of training images, e.g. a
            :class:`CalibrationLoader`.
        num_samples (int): the number of images.
        logger (MMLogger, optional): progress goes there. Defaults to
            mmengine's current logger.

    Returns:
        int: the number of images that calibrated the statistics:
        ``num_samples``, or fewer if ``dataloader`` holds fewer.
    """
    from mmengine.logging import MMLogger
    if num_samples < 1:
        raise ValueError(f'num_samples={num_samples}; accepted: >= 1')
    logger = logger or MMLogger.get_current_instance()
    norms = [
        m for m in algorithm.modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
    ]
    momenta = [m.momentum for m in norms]
    mutator = algorithm.mutator
    saved_choices = mutator.current_choices
    was_training = algorithm.training
    logger.info(f'Calibrating the statistics of {len(norms)} batch norms '
                f'for the subnet on {num_samples} training images')
    seen, logged = 0, 0
    try:
        mutator.set_choices(_choices(mutator, widths))
        for norm in norms:
            norm.reset_running_stats()
        algorithm.train()
        for batch in dataloader:
            size = min(_num_images(batch), num_samples - seen)
            seen += size
            for norm in norms:  # cumulative average over images
                norm.momentum = size / seen
            algorithm.test_step(_first_images(batch, size))
            if seen * 10 // num_samples > logged or seen == num_samples:
                logged = seen * 10 // num_samples
                logger.info(f'BN calibration: {seen}/{num_samples} images')
            if seen >= num_samples:
                break
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        algorithm.train(was_training)
        mutator.set_choices(saved_choices)
    if seen == 0:
        raise ValueError('the calibration dataloader holds no images')
    if seen < num_samples:
        logger.warning(f'BN statistics calibrated on {seen} images, all the '
                       f'dataloader holds, not the {num_samples} asked for')
    return seen


def evaluate_subnet(algorithm, widths: Dict[str, int], dataloader: Iterable,
                    evaluator) -> Dict[str, float]:
    """The metrics of ``evaluator`` over ``dataloader`` of the supernet set
    to a subnet (eval mode, no gradient; its batch norm statistics as they
    are: recalibrate them first with :func:`calibrate_bn`). The mutator is
    left set to the subnet."""
    mutator = algorithm.mutator
    mutator.set_choices(_choices(mutator, widths))
    algorithm.eval()
    with torch.no_grad():
        for batch in dataloader:
            evaluator.process(algorithm.test_step(batch), batch)
    metrics = evaluator.evaluate(len(dataloader.dataset))
    return {key: float(value) for key, value in metrics.items()}


def layer_widths(static: nn.Module) -> List[Dict]:
    """Per-layer channels of a static model (conv, linear, batch norm)."""
    rows = []
    for name, module in static.named_modules():
        if isinstance(module, nn.Conv2d):
            rows.append(
                dict(
                    name=name,
                    type='Conv2d' + (' (depthwise)' if module.groups > 1
                                     and module.groups == module.in_channels
                                     else ''),
                    in_channels=module.in_channels,
                    out_channels=module.out_channels))
        elif isinstance(module, nn.Linear):
            rows.append(
                dict(
                    name=name,
                    type='Linear',
                    in_channels=module.in_features,
                    out_channels=module.out_features))
        elif isinstance(module, _BatchNorm):
            rows.append(
                dict(
                    name=name,
                    type=type(module).__name__,
                    in_channels=module.num_features,
                    out_channels=module.num_features))
    return rows


def export_onnx(static: nn.Module, input_shape: Sequence[int],
                path: str) -> Dict:
    """Write ``static`` (its ``forward(inputs)``, tensor mode: the logits)
    as ONNX, batch dimension dynamic. Batch norm is kept as a node, not
    folded into the convolutions, so the file holds exactly the subnet's
    parameters. Returns the number of parameter values in the file."""
    import warnings

    import onnx

    class Logits(nn.Module):

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, inputs):
            return self.model(inputs, mode='tensor')

    wrapper = Logits(static).eval()
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(
            wrapper, (torch.zeros(*input_shape), ),
            tmp,
            dynamo=False,
            input_names=['input'],
            output_names=['logits'],
            dynamic_axes={
                'input': {
                    0: 'batch'
                },
                'logits': {
                    0: 'batch'
                }
            },
            opset_version=17,
            do_constant_folding=False)
    parameter_names = {f'model.{n}' for n, _ in static.named_parameters()}
    graph = onnx.load(path).graph
    params = sum(
        int(np.prod(t.dims)) for t in graph.initializer
        if t.name in parameter_names)
    return dict(onnx=path, onnx_params=params)


def export_subnet(algorithm,
                  widths: Dict[str, int],
                  out_dir: str,
                  input_shape: Sequence[int],
                  onnx: bool = False,
                  meta: Optional[Dict] = None,
                  bn_calibration_images: int = 0) -> Dict:
    """Write a subnet as a physically smaller model in ``out_dir``:

    * ``subnet_static.pth``: the sliced static state dict (loads with
      ``strict=True`` into the model ``fix_subnet.yaml`` describes), as an
      mmengine checkpoint (``state_dict`` + ``meta``);
    * ``subnet.json`` and ``fix_subnet.yaml``: the subnet (this plugin's
      format and mmrazor's ``'mutator'`` mode for ``sub_model``);
    * ``subnet.onnx`` if ``onnx``;
    * ``summary.json``: FLOPs, params, per-layer widths and
      ``bn_calibration_images``.

    The files are written to a staging folder beside ``out_dir`` that
    replaces ``out_dir`` whole once every file is written: a failure
    (a full disk, an error in the ONNX export) leaves an earlier export in
    ``out_dir`` as it was, and no staging folder behind.

    The batch norm statistics are the supernet's as they are: call
    :func:`calibrate_bn` first for statistics of this subnet.

    Args:
        algorithm (BaseAlgorithm): the supernet algorithm: PSENet, or any
            one-shot channel supernet (mmrazor's AutoSlim).
        widths (dict): unit name -> channels, the subnet.
        out_dir (str): the output folder.
        input_shape (Sequence[int]): (N, C, H, W) of the ONNX input; the
            FLOPs are counted per image of (C, H, W) (the supernet's table
            when it is at that shape, else a table built for it).
        onnx (bool): also write ``subnet.onnx``. Defaults to False.
        meta (dict, optional): added to the checkpoint's ``meta``.
        bn_calibration_images (int): how many images :func:`calibrate_bn`
            recalibrated the batch norm statistics on (0: the supernet's
            statistics), recorded in the summary and the checkpoint's
            ``meta``. Defaults to 0.

    Returns:
        dict: the summary.

    Raises:
        ConfigError: ``out_dir`` holds files that an export does not write.
        WorkDirError: ``out_dir`` cannot be written.
    """
    from ..models.channel_widths import (ChannelWidths, demo_input_shape,
                                         flops_table_of)
    from .flops import FlopsTable
    mutator = algorithm.mutator
    table = flops_table_of(algorithm)
    table_shape = getattr(algorithm, 'flops_input_shape',
                          None) or demo_input_shape(mutator)
    if tuple(input_shape[1:]) != tuple(table_shape[1:]):
        convention = getattr(table, 'convention', None)
        table = FlopsTable.from_model(algorithm.architecture,
                                      algorithm.mutator,
                                      (1, *input_shape[1:]))
        if convention is not None:
            table = table.with_convention(convention)
    static = export_static(algorithm, widths).eval()
    max_widths = ChannelWidths(mutator).widths_of(mutator.max_choices)
    summary = dict(
        flops=table.flops(widths),
        params=table.params(widths),
        static_params=sum(p.numel() for p in static.parameters()),
        supernet_flops=table.flops(max_widths),
        supernet_params=table.params(max_widths),
        input_shape=list(input_shape),
        bn_calibration_images=bn_calibration_images,
        layers=layer_widths(static),
        widths=widths,
        files=dict(
            checkpoint=osp.join(out_dir, 'subnet_static.pth'),
            subnet=osp.join(out_dir, 'subnet.json'),
            fix_subnet=osp.join(out_dir, 'fix_subnet.yaml')))
    if onnx:
        summary['files']['onnx'] = osp.join(out_dir, 'subnet.onnx')
    with staged_folder(out_dir, replaces=EXPORT_FILES) as staging:
        torch.save(
            dict(
                state_dict=static.state_dict(),
                meta=dict(
                    meta or {},
                    subnet=widths,
                    flops=summary['flops'],
                    bn_calibration_images=bn_calibration_images)),
            osp.join(staging, 'subnet_static.pth'))
        save_subnet(
            osp.join(staging, 'subnet.json'),
            osp.join(staging, 'fix_subnet.yaml'), mutator, widths, table)
        if onnx:
            info = export_onnx(static, input_shape,
                               osp.join(staging, 'subnet.onnx'))
            summary['onnx_params'] = info['onnx_params']
        atomic_write_json(osp.join(staging, 'summary.json'), summary)
    return summary
