"""Silence two import-time warnings that are expected on this stack.

* mmcv-lite has no compiled ops by design; ``mmcv/cnn/bricks/transformer.py``
  warns on every import that ``MultiScaleDeformableAttention`` is missing.
  Nothing here uses it.
* mmengine 0.10 (``mmengine/utils/package_utils.py``) imports the deprecated
  ``pkg_resources`` to resolve ``mmpretrain::`` config bases, which warns on
  every config load where setuptools < 82 still has it (psenet_plugin
  replaces those calls: compat/package_utils.py).

Only these two messages are filtered; every other warning is left alone.
"""
import warnings

EXPECTED = (
    r'Fail to import ``MultiScaleDeformableAttention``',
    r'pkg_resources is deprecated as an API',
)


def apply() -> None:
    for message in EXPECTED:
        warnings.filterwarnings('ignore', message=message,
                                category=UserWarning)
