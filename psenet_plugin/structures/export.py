"""A subnet as a physically smaller static model."""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch.nn as nn
from mmrazor.structures import export_fix_subnet
from torch.nn.modules.batchnorm import _BatchNorm

from .io import atomic_path, atomic_write_json
from .subnet import save_subnet


def export_static(algorithm, widths: Dict[str, int]) -> nn.Module:
    """The subnet's architecture with sliced static layers (plain
    ``nn.Conv2d``/``BatchNorm2d``/``Linear``), a copy: the supernet is left
    as it was.

    Args:
        algorithm (PSENet): the supernet algorithm (architecture + mutator).
        widths (dict): unit name -> channels.
    """
    mutator = algorithm.mutator
    saved = mutator.current_choices
    mutator.set_choices(mutator.choices_of(widths))
    try:
        # mmrazor's export: deep copy, then dynamic ops -> sliced static ops.
        _, static = export_fix_subnet(
            algorithm, export_subnet_mode='mutator', slice_weight=True)
    finally:
        mutator.set_choices(saved)
    architecture = static.architecture
    architecture.train(algorithm.training)
    return architecture


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
    import torch

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
                  meta: Optional[Dict] = None) -> Dict:
    """Write a subnet as a physically smaller model in ``out_dir``:

    * ``subnet_static.pth``: the sliced static state dict (loads with
      ``strict=True`` into the model ``fix_subnet.yaml`` describes), as an
      mmengine checkpoint (``state_dict`` + ``meta``);
    * ``subnet.json`` and ``fix_subnet.yaml``: the subnet (this plugin's
      format and mmrazor's ``'mutator'`` mode for ``sub_model``);
    * ``subnet.onnx`` if ``onnx``;
    * ``summary.json``: FLOPs, params and per-layer widths.

    Returns:
        dict: the summary.
    """
    import torch
    os.makedirs(out_dir, exist_ok=True)
    table = algorithm.flops_table
    static = export_static(algorithm, widths).eval()
    mutator = algorithm.mutator
    max_widths = mutator.widths_of(mutator.max_choices)
    summary = dict(
        flops=table.flops(widths),
        params=table.params(widths),
        static_params=sum(p.numel() for p in static.parameters()),
        supernet_flops=table.flops(max_widths),
        supernet_params=table.params(max_widths),
        input_shape=list(input_shape),
        layers=layer_widths(static),
        widths=widths,
        files=dict(
            checkpoint=osp.join(out_dir, 'subnet_static.pth'),
            subnet=osp.join(out_dir, 'subnet.json'),
            fix_subnet=osp.join(out_dir, 'fix_subnet.yaml')))
    with atomic_path(summary['files']['checkpoint']) as tmp:
        torch.save(
            dict(
                state_dict=static.state_dict(),
                meta=dict(meta or {}, subnet=widths,
                          flops=summary['flops'])), tmp)
    save_subnet(summary['files']['subnet'], summary['files']['fix_subnet'],
                mutator, widths, table)
    if onnx:
        info = export_onnx(static, input_shape,
                           osp.join(out_dir, 'subnet.onnx'))
        summary['files']['onnx'] = info['onnx']
        summary['onnx_params'] = info['onnx_params']
    atomic_write_json(osp.join(out_dir, 'summary.json'), summary)
    return summary
