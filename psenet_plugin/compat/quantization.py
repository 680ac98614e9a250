"""Let mmrazor 1.0.0 import on torch >= 2, with its quantization disabled.

Upstream defect (open-mmlab/mmrazor issues #615 and #632):
``mmrazor/structures/quantization/backend_config/common_operator_config_utils.py``
imports ``reverse2``, ``reverse3`` and ``reverse_sequential_wrapper2`` from
``torch.ao.quantization.fuser_method_mappings``. torch 2.0 removed them, so the
whole ``try`` block falls back to placeholders, and the module-level code that
follows (gated on ``torch >= 1.13``) touches a placeholder and raises
``ImportError: `torch>=1.13` is not installed properly``. Because
``mmrazor.structures`` imports its quantization part eagerly, this breaks
``import mmrazor.models`` and ``import mmrazor.engine`` entirely, pruning and
NAS included. Upstream main fixed it after the 1.0.0 release by gating the
backend configs to torch 1.13.x.

The fix here does the same without editing installed files: an import hook
serves ``mmrazor.structures.quantization.backend_config`` (and its submodules)
as a stand-in module. It exports the same names; using any of them raises
:class:`QuantizationUnavailableError`, which says why. Nothing else of mmrazor
is touched. The hook is installed only when the defect is present (torch
lacks ``reverse2``), so it is a no-op on torch 1.13.
"""
import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Mapping
from typing import Optional

from ..errors import PSENetError

BACKEND_CONFIG_MODULE = 'mmrazor.structures.quantization.backend_config'

# The public names of the real module (its ``__all__``).
BACKEND_CONFIG_NAMES = (
    'BackendConfigs',
    'get_native_backend_config',
    'get_native_backend_config_dict',
    'get_academic_backend_config',
    'get_academic_backend_config_dict',
    'get_openvino_backend_config',
    'get_openvino_backend_config_dict',
    'get_tensorrt_backend_config',
    'get_tensorrt_backend_config_dict',
)
BACKENDS = ('academic', 'native', 'tensorrt', 'openvino')


class QuantizationUnavailableError(PSENetError, ImportError):
    """mmrazor 1.0.0 quantization was used on torch >= 2."""

    def __init__(self, what: str) -> None:
        import torch
        super().__init__(
            f'{what} is unavailable: mmrazor 1.0.0 quantization needs torch '
            f'1.13.x (its backend configs import fuser helpers that torch 2 '
            f'removed), and torch {torch.__version__} is installed. '
            'Pruning and NAS parts of mmrazor are not affected.')


def defect_present() -> bool:
    """True if torch lacks the fuser helpers mmrazor 1.0.0 imports."""
    fuser = importlib.import_module(
        'torch.ao.quantization.fuser_method_mappings')
    return not hasattr(fuser, 'reverse2')


class _UnavailableBackendConfigs(Mapping):
    """Stands in for mmrazor's ``BackendConfigs`` dict: it lists the
    backends, and looking one up raises the clear error."""

    def __getitem__(self, backend):
        raise QuantizationUnavailableError(
            f'mmrazor quantization backend {backend!r}')

    def __iter__(self):
        return iter(BACKENDS)

    def __len__(self):
        return len(BACKENDS)


def _unavailable_function(name: str):

    def function(*args, **kwargs):
        raise QuantizationUnavailableError(f'mmrazor {name}()')

    function.__name__ = name
    return function


class _StandInLoader(importlib.abc.Loader):

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        if module.__name__ != BACKEND_CONFIG_MODULE:
            raise QuantizationUnavailableError(f'module {module.__name__}')
        module.__doc__ = (
            'Stand-in installed by psenet_plugin.compat.quantization: '
            'mmrazor 1.0.0 quantization is unavailable on torch >= 2.')
        module.__all__ = list(BACKEND_CONFIG_NAMES)
        module.BackendConfigs = _UnavailableBackendConfigs()
        for name in BACKEND_CONFIG_NAMES[1:]:
            setattr(module, name, _unavailable_function(name))


class _StandInFinder(importlib.abc.MetaPathFinder):

    def find_spec(self, fullname, path=None, target=None):
        if fullname == BACKEND_CONFIG_MODULE:
            # A package, so that its submodules come to this finder too.
            spec = importlib.machinery.ModuleSpec(
                fullname, _StandInLoader(), is_package=True)
            spec.submodule_search_locations = []
            return spec
        if fullname.startswith(BACKEND_CONFIG_MODULE + '.'):
            return importlib.machinery.ModuleSpec(fullname, _StandInLoader())
        return None


_FINDER: Optional[_StandInFinder] = None


def apply() -> bool:
    """Install the import hook if the defect is present. Returns whether it
    is installed. Must run before ``mmrazor.structures`` is imported."""
    global _FINDER
    if _FINDER is not None:
        return True
    if not defect_present():
        return False
    if BACKEND_CONFIG_MODULE in sys.modules:
        # Imported before us: on torch >= 2 that import failed and left
        # nothing usable, or someone else fixed it already. Leave it.
        return False
    _FINDER = _StandInFinder()
    sys.meta_path.insert(0, _FINDER)
    return True
