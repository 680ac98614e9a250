"""Read YAML files without running code from them.

Upstream defect: mmengine 0.10's YAML handler
(``mmengine/fileio/handlers/yaml_handler.py``, ``YamlHandler``) loads with
PyYAML's full ``Loader`` (``CLoader``), which builds any Python object a tag
names: a file holding ``!!python/object/apply:os.system ["..."]`` runs the
command when it is loaded. Every YAML file read through
``mmengine.fileio.load`` goes there: subnet files (``fix_subnet.yaml``, read
by mmrazor's ``sub_model``/``load_fix_subnet`` and by this plugin's tools),
YAML configs (``Config.fromfile``), mmrazor's mutator configs. Subnet files
are exactly what people download and pass around.

The fix makes the handler load with a safe loader (PyYAML's ``SafeLoader``:
mappings, lists, strings, numbers, booleans, null) that also accepts the
two tags OpenMMLab's own YAML dumper writes for plain data, so files written
by mmrazor and by earlier versions of this plugin still load:

* ``!!python/tuple``: a tuple of (safely loaded) values;
* ``!!python/object/apply:mmengine.config.config.ConfigDict`` with one
  mapping argument: a ``ConfigDict`` of that (safely loaded) mapping.

Any other tag is refused, before anything is built, with
:class:`UnsafeYAMLError` naming the tag, its line and (through
``mmengine.fileio.load``) the file. Explicit ``Loader=`` arguments are
respected: code that asks for another loader gets it.

``mmengine.fileio.load`` is wrapped only to put the file name into that
error; the wrapper is rebound wherever mmengine's ``load`` was imported by
name before the fix ran (``mmengine.config.config`` and friends). So is
``Config._file2dict``, which loads a YAML config from a temporary copy: the
error names the config file, not the copy.
"""
import sys
from pathlib import Path

import yaml
from mmengine.config import Config, ConfigDict
from mmengine.fileio import io as fileio_io
from mmengine.fileio.handlers.yaml_handler import YamlHandler

from ..errors import CorruptFileError

_SafeBase = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)

TUPLE_TAG = 'tag:yaml.org,2002:python/tuple'
CONFIG_DICT_TAG = ('tag:yaml.org,2002:python/object/apply:'
                   'mmengine.config.config.ConfigDict')


class UnsafeYAMLError(CorruptFileError):
    """A YAML file holds a tag the safe loader does not build (a tag that
    names Python code, or an unknown one)."""

    def __init__(self, tag: str, line: int, source: str = None) -> None:
        self.tag, self.line, self.source = tag, line, source
        self.named_by_config = False
        where = f'YAML file {source!r}' if source else 'YAML input'
        short = tag.replace('tag:yaml.org,2002:', '!!')
        why = ('it names Python code, which a YAML file could run'
               if 'python/' in tag else 'an unknown tag')
        super().__init__(
            f'{where}, line {line}: tag {short!r} refused ({why}); '
            'psenet_plugin reads YAML with a safe loader: plain mappings, '
            'lists, strings, numbers, booleans and null (and '
            '!!python/tuple, mmengine ConfigDict)')

    def __reduce__(self):
        return type(self), (self.tag, self.line, self.source)


class PlainDataLoader(_SafeBase):
    """PyYAML's safe loader plus the data-only tags OpenMMLab writes."""

    def construct_undefined(self, node):
        raise UnsafeYAMLError(node.tag, node.start_mark.line + 1)


def _construct_tuple(loader, node):
    return tuple(loader.construct_sequence(node, deep=True))


def _construct_config_dict(loader, node):
    if not (isinstance(node, yaml.SequenceNode) and len(node.value) == 1
            and isinstance(node.value[0], yaml.MappingNode)):
        raise UnsafeYAMLError(node.tag, node.start_mark.line + 1)
    return ConfigDict(loader.construct_mapping(node.value[0], deep=True))


PlainDataLoader.add_constructor(TUPLE_TAG, _construct_tuple)
PlainDataLoader.add_constructor(CONFIG_DICT_TAG, _construct_config_dict)
PlainDataLoader.add_constructor(None, PlainDataLoader.construct_undefined)


_upstream_load_from_fileobj = YamlHandler.load_from_fileobj


def load_from_fileobj(self, file, **kwargs):
    """``YamlHandler.load_from_fileobj`` with the safe loader by default."""
    kwargs.setdefault('Loader', PlainDataLoader)
    return yaml.load(file, **kwargs)


_upstream_load = fileio_io.load


def load(file, *args, **kwargs):
    """``mmengine.fileio.load``; a refused YAML tag names the file."""
    try:
        return _upstream_load(file, *args, **kwargs)
    except UnsafeYAMLError as error:
        if error.source is None and isinstance(file, (str, Path)):
            raise UnsafeYAMLError(error.tag, error.line, str(file)) from None
        raise


load.__wrapped__ = _upstream_load

_upstream_file2dict = Config._file2dict


def _file2dict(filename, *args, **kwargs):
    """``Config._file2dict``; a refused YAML tag names the config file
    (the innermost one, for a tag in a ``_base_`` file)."""
    try:
        return _upstream_file2dict(filename, *args, **kwargs)
    except UnsafeYAMLError as error:
        if error.named_by_config:
            raise
        named = UnsafeYAMLError(error.tag, error.line, str(filename))
        named.named_by_config = True
        raise named from None


def apply() -> None:
    YamlHandler.load_from_fileobj = load_from_fileobj
    Config._file2dict = staticmethod(_file2dict)
    for module in list(sys.modules.values()):
        if getattr(module, '__dict__', {}).get('load') is _upstream_load:
            module.load = load
