"""Let mmengine's PyTorch launcher start on machines without a GPU.

Upstream defect: mmengine 0.10 (``mmengine/dist/utils.py``,
``_init_dist_pytorch``) calls ``torch.cuda.set_device(local_rank)`` before
``init_process_group`` whatever the backend. On a machine without an NVIDIA
driver (CPU training with the gloo backend, e.g. ``torchrun ... tools/
train.py CONFIG --launcher pytorch`` on a CPU box or in CI) that raises
``RuntimeError: Found no NVIDIA driver on your system`` and the run never
starts.

The fix wraps ``_init_dist_pytorch``: when no CUDA device is available it
does what the original does minus ``set_device`` (plain
``init_process_group``); otherwise it calls the original unchanged.
"""
import torch
import torch.distributed as torch_dist
from mmengine.dist import utils as dist_utils

_original = dist_utils._init_dist_pytorch


def _init_dist_pytorch(backend='nccl', init_backend='torch', **kwargs):
    if torch.cuda.is_available() or init_backend != 'torch':
        return _original(backend, init_backend=init_backend, **kwargs)
    torch_dist.init_process_group(backend=backend, **kwargs)


def apply() -> None:
    dist_utils._init_dist_pytorch = _init_dist_pytorch
