"""What installing psenet_plugin asks of an environment: the supported
ranges hold the tested versions, demo-only and export-only packages are
extras, and nothing pins (or needs) an old setuptools."""
import os.path as osp
import runpy

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from psenet_plugin.compat import checkpoint
from psenet_plugin.compat.versions import check_versions, installed_versions
from psenet_plugin.errors import UnsupportedVersionError
from psenet_plugin.requirements import SUPPORTED

from conftest import DEMO, REPO, run_python


@pytest.fixture(scope='module')
def setup_kwargs():
    """What setup.py passes to setuptools.setup."""
    import setuptools
    captured = {}
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        runpy.run_path(osp.join(REPO, 'setup.py'))
    finally:
        setuptools.setup = original
    return captured


def _tested_pins():
    pins = {}
    with open(osp.join(REPO, 'requirements', 'tested.txt')) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line:
                requirement = Requirement(line)
                pins[requirement.name] = str(requirement.specifier)[2:]
    return pins


def test_the_supported_ranges_hold_the_tested_versions():
    pins = _tested_pins()
    assert {'torch', 'torchvision'} <= set(pins)
    for name, version in pins.items():
        name = 'mmcv' if name == 'mmcv-lite' else name
        assert SpecifierSet(SUPPORTED[name]).contains(Version(version)), (
            name, version, SUPPORTED[name])
    # and this environment is the tested one
    installed = installed_versions()
    assert installed['torch'].split('+')[0] == pins['torch']


def test_torch_without_the_checkpoint_allow_list_is_refused_by_name():
    """Below torch 2.6 mmengine checkpoints would load with full pickle
    (no weights_only default, no named allow-list entries)."""
    torch_range = SpecifierSet(SUPPORTED['torch'])
    for old in ('2.0.1', '2.4.1', '2.5.1'):
        assert not torch_range.contains(Version(old))
    lowest = min(Version(s.version) for s in torch_range
                 if s.operator in ('>=', '=='))
    assert lowest >= Version(checkpoint.MIN_TORCH)
    versions = dict(installed_versions(), torch='2.5.1')
    with pytest.raises(UnsupportedVersionError,
                       match=r"torch 2\.5\.1 is installed; accepted: "
                       r"torch>=2\.11,<2\.15"):
        check_versions(versions)


def test_demo_and_export_packages_are_extras(setup_kwargs):
    required = {Requirement(r).name for r in setup_kwargs['install_requires']}
    assert not {'mlxtend', 'onnx', 'onnxruntime'} & required
    extras = setup_kwargs['extras_require']
    assert 'mlxtend' in extras['demo'] and 'onnx' in extras['export']
    # `make install` (.[demo,export,tests]) and `.[tests]` bring them all
    assert {'mlxtend', 'onnx', 'onnxruntime'} <= set(extras['tests'])


def test_setuptools_is_never_capped(setup_kwargs):
    for line in setup_kwargs['install_requires']:
        requirement = Requirement(line)
        if requirement.name == 'setuptools':
            assert not any(s.operator in ('<', '<=', '==', '~=')
                           for s in requirement.specifier), line
    assert 'setuptools' not in SUPPORTED


def test_configs_load_without_pkg_resources():
    """setuptools 82 removed pkg_resources, with which mmengine 0.10 finds
    the `mmpretrain::` bases of a config; psenet_plugin gives mmengine an
    importlib.metadata version of those functions (compat/package_utils.py)
    that finds the same folders."""
    script = (
        'import importlib.util, os.path as osp, sys\n'
        "names = ('mmpretrain', 'mmrazor', 'mmengine', 'mmcv')\n"
        '# (mmengine\'s own lookup needs pkg_resources: the package folders\n'
        '# from the import system instead)\n'
        'before = [osp.dirname(importlib.util.find_spec(n).origin)\n'
        '          for n in names]\n'
        "sys.modules['pkg_resources'] = None  # as with setuptools >= 82\n"
        'import psenet_plugin\n'
        'import mmengine.config.config as config\n'
        'assert [config.get_installed_path(n) for n in names] == before\n'
        'from mmengine.config import Config\n'
        f'cfg = Config.fromfile({DEMO!r})\n'
        "print('loaded', cfg.model.type)\n")
    result = run_python(['-c', script])
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'loaded PSENet' in result.stdout
