"""Load mmengine checkpoints under torch's ``weights_only=True`` default.

Upstream defect: since torch 2.6, ``torch.load`` defaults to
``weights_only=True``, and mmengine 0.10 (``mmengine/runner/checkpoint.py``,
``load_from_local``) calls it without the argument. An mmengine checkpoint
holds more than tensors: the message hub's ``HistoryBuffer`` objects (with
their statistics methods, pickled as ``getattr(HistoryBuffer, 'min')``) and
numpy arrays and scalars. Loading one fails with ``UnpicklingError:
Unsupported global``, so ``load_from`` and ``--resume`` are broken.

The fix keeps ``weights_only=True`` and allow-lists exactly what mmengine
writes, with ``torch.serialization.add_safe_globals``:

* ``mmengine.logging.HistoryBuffer``: a plain data class (lists and numbers);
  building it runs no code beyond setting its ``__dict__``.
* numpy's array reconstruction (``_reconstruct``, ``ndarray``, ``dtype``,
  ``scalar``, and the plain dtype classes): the set torch's own
  documentation gives for numpy data; object arrays are not allowed.
* ``builtins.getattr`` is *not* allowed as such: it would let a malicious
  file fetch any attribute of any allowed object (module globals included).
  It is mapped to :func:`_history_buffer_getattr`, which only returns the
  statistics methods of ``HistoryBuffer`` and refuses everything else.

Why this is safe: nothing that can execute arbitrary code (``eval``,
``os.system``, arbitrary classes) becomes reachable; a checkpoint from an
untrusted source still cannot run code when loaded. Turning the safety off
globally (``weights_only=False``) was the alternative, and is not used.

It needs torch >= 2.6: before, ``torch.load`` defaults to
``weights_only=False`` (mmengine's loads would run any pickle: no trust model
to keep) and ``add_safe_globals`` takes no ``(object, name)`` entries (added
in 2.6, pytorch #142153). :func:`apply` refuses older versions by name;
``psenet_plugin/requirements.py`` admits none of them.
"""
import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from packaging.version import Version

from ..errors import UnsupportedVersionError

#: torch.load defaults to weights_only=True; add_safe_globals takes
#: (object, 'module.name') entries.
MIN_TORCH = '2.6'

# What HistoryBuffer._set_default_statistics registers.
HISTORY_BUFFER_METHODS = frozenset(('min', 'max', 'current', 'mean'))


def _history_buffer_getattr(obj, name):
    """``getattr`` restricted to the statistics methods of HistoryBuffer."""
    if (isinstance(obj, type) and issubclass(obj, HistoryBuffer)
            and name in HISTORY_BUFFER_METHODS):
        return getattr(obj, name)
    raise torch.serialization.pickle.UnpicklingError(
        f'refusing getattr({obj!r}, {name!r}) while loading a checkpoint: '
        'psenet_plugin only allows the statistics methods of mmengine '
        f'HistoryBuffer ({", ".join(sorted(HISTORY_BUFFER_METHODS))})')


def safe_globals():
    """The allow-list, as ``add_safe_globals`` takes it."""
    return [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        # numpy's array/scalar reconstructors (numpy._core.multiarray in
        # numpy 2, numpy.core.multiarray in numpy 1), found through the
        # objects' own pickling so the module path always matches.
        np.empty(0).__reduce__()[0],
        np.float64(0).__reduce__()[0],
        (_history_buffer_getattr, 'builtins.getattr'),
    ] + _plain_dtype_classes()


def _plain_dtype_classes():
    """numpy 2 restores a dtype by building an instance of its class
    (``numpy.dtypes.Float64DType``...): the classes of the numeric, boolean,
    string and datetime dtypes. Object and void dtypes are left out."""
    return sorted({
        type(np.dtype(t))
        for t in np.sctypeDict.values() if np.dtype(t).kind not in 'OV'
    }, key=lambda c: c.__name__)


def apply() -> None:
    installed = Version(torch.__version__).release
    if installed < Version(MIN_TORCH).release:
        raise UnsupportedVersionError(
            f'torch {torch.__version__} is installed; accepted: torch>='
            f'{MIN_TORCH} (mmengine checkpoints load with weights_only=True '
            'and an allow-list from torch 2.6 on)')
    torch.serialization.add_safe_globals(safe_globals())
