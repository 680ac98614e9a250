"""The dependency ranges psenet_plugin supports: the one source of truth.

``setup.py`` reads this file without importing the package (its imports are
not installed yet at build time), and ``psenet_plugin.compat.versions`` checks
the installed versions against it on import. Keep it free of imports.

Each entry maps a distribution to a PEP 440 specifier. ``mmcv`` accepts either
the ``mmcv`` (full, with compiled ops) or the ``mmcv-lite`` distribution: both
install the ``mmcv`` import name.
"""

SUPPORTED = {
    # The versions tested (requirements/tested.txt): 2.14.1 on CPU machines
    # (the default suite), 2.11 on the GPU machine (the CUDA tests). Below
    # 2.6, torch.load does not default to weights_only=True and the
    # checkpoint allow-list cannot name entries (compat/checkpoint.py).
    'torch': '>=2.11,<2.15',
    'torchvision': '>=0.26,<0.30',
    'mmengine': '>=0.10,<1.0',
    # mmrazor 1.0.0 asserts mmcv <= 2.1.0 on import.
    'mmcv': '>=2.0.0,<=2.1.0',
    'mmpretrain': '>=1.2,<1.3',
    # The last release; the compat layer is written against its defects.
    'mmrazor': '==1.0.0',
}
