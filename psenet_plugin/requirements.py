"""The dependency ranges psenet_plugin supports: the one source of truth.

``setup.py`` reads this file without importing the package (its imports are
not installed yet at build time), and ``psenet_plugin.compat.versions`` checks
the installed versions against it on import. Keep it free of imports.

Each entry maps a distribution to a PEP 440 specifier. ``mmcv`` accepts either
the ``mmcv`` (full, with compiled ops) or the ``mmcv-lite`` distribution: both
install the ``mmcv`` import name.
"""

SUPPORTED = {
    # torch 2.x: mmrazor 1.0.0 needs the compat layer to import on it.
    'torch': '>=2.0,<2.15',
    'torchvision': '>=0.15,<0.30',
    'mmengine': '>=0.10,<1.0',
    # mmrazor 1.0.0 asserts mmcv <= 2.1.0 on import.
    'mmcv': '>=2.0.0,<=2.1.0',
    'mmpretrain': '>=1.2,<1.3',
    # The last release; the compat layer is written against its defects.
    'mmrazor': '==1.0.0',
    # mmengine 0.10 resolves `mmpretrain::` config bases with pkg_resources
    # (mmengine/utils/package_utils.py), which setuptools 81 removed.
    'setuptools': '<81',
}
