"""Refuse to run on dependency versions outside the supported ranges.

The rest of the compat layer patches around defects of specific releases
(mmrazor 1.0.0, mmengine 0.10, torch 2.x). On other releases those patches
may be wrong or unnecessary, and the failure would surface far from the
cause. This check turns that into one error that names the package, the
installed version and the accepted range.
"""
from importlib import metadata
from typing import Dict, Mapping, Optional

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from ..errors import UnsupportedVersionError
from ..requirements import SUPPORTED

# Distributions that provide an import name (mmcv comes as full or lite).
_DISTRIBUTIONS = {'mmcv': ('mmcv', 'mmcv-lite')}


def installed_versions() -> Dict[str, Optional[str]]:
    """Return the installed version of each supported package (None if
    absent), read from the distribution metadata without importing it."""
    versions = {}
    for name in SUPPORTED:
        versions[name] = None
        for dist in _DISTRIBUTIONS.get(name, (name, )):
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def check_versions(installed: Optional[Mapping[str, Optional[str]]] = None
                   ) -> None:
    """Raise :class:`UnsupportedVersionError` if a dependency is missing or
    outside its supported range.

    Args:
        installed (Mapping[str, str | None], optional): package name to
            version. Defaults to the versions installed in this environment.
    """
    installed = installed_versions() if installed is None else installed
    problems = []
    for name, spec in SUPPORTED.items():
        version = installed.get(name)
        accepted = f'{name}{spec}'
        if name in _DISTRIBUTIONS:
            accepted += f' (any of: {", ".join(_DISTRIBUTIONS[name])})'
        if version is None:
            problems.append(f'{name} is not installed; accepted: {accepted}')
            continue
        try:
            ok = SpecifierSet(spec).contains(
                Version(version), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(
                f'{name} {version} is installed; accepted: {accepted}')
    if problems:
        raise UnsupportedVersionError(
            'psenet_plugin cannot run on this environment: ' +
            '; '.join(problems) +
            '. Reinstall with `pip install -e .` from the project root '
            '(see README.md).')
