"""Find installed OpenMMLab packages without ``pkg_resources``.

Upstream defect: mmengine 0.10 (``mmengine/utils/package_utils.py``) looks up
installed packages with setuptools' ``pkg_resources`` (``get_distribution``),
which setuptools deprecated (a warning on every use) and removed in setuptools
82. ``Config.fromfile`` calls it for every ``mmpretrain::`` or ``mmrazor::``
base of a config (``is_installed``, ``get_installed_path``), so without it no
config of this project loads, and pinning ``setuptools<82`` would downgrade
the user's setuptools.

The fix gives mmengine the same functions written with the standard
library's ``importlib.metadata``, with mmengine's semantics (a distribution
first, then an importable module of that name), bound everywhere mmengine
calls them. Any setuptools version, or none, works.

A config loaded before ``import psenet_plugin`` (e.g. through another
toolbox's ``tools/train.py``, whose ``custom_imports`` run after the bases
are resolved) still goes through mmengine's own functions: there, setuptools
< 82 is needed.
"""
import importlib
import importlib.util
import os.path as osp
import sys
from importlib import metadata

# Where mmengine 0.10 binds these functions (`from ... import` copies).
_MODULES = ('mmengine.utils.package_utils', 'mmengine.utils',
            'mmengine.config.config')
# Bound from mmengine.utils when imported: patched only if already imported.
_LATER = ('mmengine.hub.hub', )


def is_installed(package: str) -> bool:
    """True if a distribution named ``package`` is installed, or a module of
    that name can be imported (mmengine's ``is_installed``)."""
    try:
        metadata.distribution(package)
        return True
    except metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        return spec is not None and spec.origin is not None


def package2module(package: str) -> str:
    """The top-level module of the distribution ``package``."""
    top_level = metadata.distribution(package).read_text('top_level.txt')
    if top_level:
        return top_level.split('\n')[0]
    raise ValueError(f'can not infer the module name of {package}')


def _module_path(package: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise metadata.PackageNotFoundError(package)
    if spec.origin is None:
        raise RuntimeError(f'{package} is a namespace package, which is '
                           'invalid for `get_install_path`')
    return osp.dirname(spec.origin)


def get_installed_path(package: str) -> str:
    """The folder of the installed package ``package`` (mmengine's
    ``get_installed_path``: ``get_installed_path('mmpretrain')`` is
    ``.../site-packages/mmpretrain``)."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return _module_path(package)
    location = str(dist.locate_file(''))
    path = osp.join(location, package)
    if osp.exists(path):
        return path
    try:
        path = osp.join(location, package2module(package))
    except ValueError:
        return _module_path(package)
    # An editable install: the code is not beside the metadata.
    return path if osp.exists(path) else _module_path(package)


def apply() -> None:
    replacements = dict(
        is_installed=is_installed,
        get_installed_path=get_installed_path,
        package2module=package2module)
    modules = [importlib.import_module(name) for name in _MODULES]
    modules += [sys.modules[name] for name in _LATER if name in sys.modules]
    for module in modules:
        for attr, function in replacements.items():
            if hasattr(module, attr):
                setattr(module, attr, function)
