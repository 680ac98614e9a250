"""PSE-Net channel pruning for MMRazor.

``import psenet_plugin`` (or ``custom_imports=dict(imports=['psenet_plugin'])``
in a config) first makes the OpenMMLab stack work together (see
:mod:`psenet_plugin.compat`), then registers the plugin's datasets, models,
hooks and loops in the OpenMMLab registries.
"""
from .version import __version__
from . import compat

compat.apply()

from . import datasets, engine, models, structures  # noqa: E402,F401

__all__ = ['__version__']
