"""mmcv's compiled ops for mmdet and mmsegmentation, on mmcv-lite.

Upstream defect: mmdet 3.x and mmsegmentation 1.x import ``mmcv.ops`` at
import time (``import mmdet.models`` / ``import mmseg.models``), and every
module of ``mmcv.ops`` loads its kernels from the compiled extension
``mmcv._ext`` (``mmcv/utils/ext_loader.py``). mmcv-lite ships no
``mmcv._ext``, and no full mmcv 2.1.0 wheel exists for torch 2.14 (its sdist
does not build as is), so both imports fail with ``No module named
'mmcv._ext'``.

When (and only when) no compiled ``mmcv._ext`` is importable, :func:`apply`
puts a module of that name in ``sys.modules`` that holds the kernels the
configs of ``configs/det`` and ``configs/seg`` call, written with
torchvision and torch:

* ``nms`` (``mmcv.ops.nms`` / ``batched_nms``: RetinaNet's and FCOS's
  post-processing) by ``torchvision.ops.nms``;
* ``sigmoid_focal_loss_forward`` / ``_backward`` (``mmcv.ops.
  sigmoid_focal_loss``, which mmdet's ``FocalLoss`` calls for CUDA tensors;
  on CPU it uses its own Python version) in torch, with the kernel's
  formulas (forward and analytic gradient).

FCN and DeepLabV3 (mmseg) call no compiled op. Every other kernel name
exists (so that ``mmcv.ops`` imports) and raises
:class:`MmcvOpUnavailableError` naming the op when called. Each provided
kernel is tested against its definition (``tests/test_compat_ops.py``).
"""
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import Optional

import torch

from ..errors import PSENetError

#: the kernels this module provides
PROVIDED = ('nms', 'sigmoid_focal_loss_forward', 'sigmoid_focal_loss_backward')

_FLT_MIN = torch.finfo(torch.float32).tiny


class MmcvOpUnavailableError(PSENetError, NotImplementedError):
    """An mmcv op without a compiled kernel here was called."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f'mmcv op {name!r} is unavailable: mmcv-lite has no compiled '
            "kernels (mmcv._ext) and psenet_plugin provides only "
            f'{", ".join(PROVIDED)} (psenet_plugin/compat/mmcv_ops.py); '
            'accepted: a model that needs no other mmcv op (configs/det, '
            'configs/seg), or a full mmcv built for this torch '
            '(MMCV_FULL=1, README.md)')


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
        offset: int = 0) -> torch.Tensor:
    """Greedy NMS: indices of the kept boxes, by decreasing score.

    ``offset=1`` is mmcv's legacy pixel convention (a box spans
    ``x2 - x1 + 1`` pixels): shifting x2 and y2 by 1 gives torchvision the
    same areas and intersections.
    """
    import torchvision
    if boxes.numel() == 0:
        return boxes.new_zeros(0, dtype=torch.long)
    if offset:
        boxes = torch.cat([boxes[:, :2], boxes[:, 2:4] + offset], dim=1)
    return torchvision.ops.nms(boxes[:, :4].float(), scores.float(),
                               float(iou_threshold))


def _focal_terms(input: torch.Tensor, target: torch.Tensor,
                 weight: torch.Tensor):
    """(p, is the target class, class weight per element or None)."""
    classes = input.size(1)
    p = input.sigmoid()
    positive = target.unsqueeze(1) == torch.arange(
        classes, device=input.device).unsqueeze(0)
    scale = None
    if weight.numel():
        if bool((target >= weight.numel()).any()):
            raise MmcvOpUnavailableError(
                'sigmoid_focal_loss with a class weight and background '
                'targets')
        scale = weight[target].unsqueeze(1)
    return p, positive, scale


def sigmoid_focal_loss_forward(input: torch.Tensor, target: torch.Tensor,
                               weight: torch.Tensor, output: torch.Tensor,
                               gamma: float = 2.0,
                               alpha: float = 0.25) -> None:
    """mmcv's kernel: ``output[n, c]`` = the focal loss of logit
    ``input[n, c]`` for "class c present" iff ``target[n] == c`` (a target
    of ``num_classes`` is background), times ``weight[target[n]]`` if a
    weight is given. Written into ``output``."""
    p, positive, scale = _focal_terms(input, target, weight)
    term_p = (1 - p).pow(gamma) * p.clamp(min=_FLT_MIN).log()
    term_n = p.pow(gamma) * (1 - p).clamp(min=_FLT_MIN).log()
    loss = -torch.where(positive, alpha * term_p, (1 - alpha) * term_n)
    if scale is not None:
        loss = loss * scale
    output.copy_(loss)


def sigmoid_focal_loss_backward(input: torch.Tensor, target: torch.Tensor,
                                weight: torch.Tensor,
                                grad_input: torch.Tensor,
                                gamma: float = 2.0,
                                alpha: float = 0.25) -> None:
    """d output / d input of :func:`sigmoid_focal_loss_forward`, element
    by element (mmcv's analytic gradient). Written into ``grad_input``."""
    p, positive, scale = _focal_terms(input, target, weight)
    term_p = (1 - p).pow(gamma) * (
        1 - p - gamma * p * p.clamp(min=_FLT_MIN).log())
    term_n = p.pow(gamma) * (
        gamma * (1 - p) * (1 - p).clamp(min=_FLT_MIN).log() - p)
    grad = -torch.where(positive, alpha * term_p, (1 - alpha) * term_n)
    if scale is not None:
        grad = grad * scale
    grad_input.copy_(grad)


class _Ext(types.ModuleType):
    """``mmcv._ext``: the provided kernels; any other name is a function
    that raises :class:`MmcvOpUnavailableError` when called."""

    def __getattr__(self, name: str):
        if name.startswith('__'):
            raise AttributeError(name)

        def unavailable(*args, **kwargs):
            raise MmcvOpUnavailableError(name)

        unavailable.__name__ = name
        return unavailable


def compiled_ext_available() -> bool:
    """Whether a compiled ``mmcv._ext`` is installed (a full mmcv)."""
    existing = sys.modules.get('mmcv._ext')
    if existing is not None:
        return not isinstance(existing, _Ext)
    try:
        return importlib.util.find_spec('mmcv._ext') is not None
    except (ImportError, ValueError):
        return False


def apply() -> Optional[types.ModuleType]:
    """Install the torchvision-backed ``mmcv._ext`` if mmcv has none;
    returns it (None where a compiled one exists or mmcv is missing)."""
    existing = sys.modules.get('mmcv._ext')
    if isinstance(existing, _Ext):
        return existing
    try:
        import mmcv
    except ImportError:
        return None
    if compiled_ext_available():
        return None
    # With mmcv.ops importable, mmcv/cnn/bricks/transformer.py warns on
    # every import that MultiScaleDeformableAttention moved there (an
    # ImportWarning; nothing here imports it from the old place).
    warnings.filterwarnings(
        'ignore', message=r'``MultiScaleDeformableAttention`` has been moved',
        category=ImportWarning)
    ext = _Ext('mmcv._ext', __doc__)
    # A spec without a loader: mmengine's mmcv_full_available() (a
    # pkgutil.find_loader) keeps answering False, and does not fail.
    ext.__spec__ = importlib.machinery.ModuleSpec('mmcv._ext', None)
    for name in PROVIDED:
        setattr(ext, name, globals()[name])
    sys.modules['mmcv._ext'] = ext
    mmcv._ext = ext
    bricks = sys.modules.get('mmcv.cnn.bricks.transformer')
    if bricks is not None and not hasattr(bricks,
                                          'MultiScaleDeformableAttention'):
        # imported before: it gave up on mmcv.ops (mmdet imports the name)
        from mmcv.ops.multi_scale_deform_attn import \
            MultiScaleDeformableAttention
        bricks.MultiScaleDeformableAttention = MultiScaleDeformableAttention
    return ext
