"""Errors psenet_plugin raises for bad input.

Every error names the config key, file or package that is wrong and what is
accepted. The command-line tools print them as one line (no traceback).
"""


class PSENetError(Exception):
    """Base class of the errors that describe bad input, not a bug."""


class ConfigError(PSENetError, ValueError):
    """A config key holds a value that is not accepted."""


class DataNotPreparedError(PSENetError, FileNotFoundError):
    """A dataset folder a config points to does not exist yet."""


class UnsupportedVersionError(PSENetError, ImportError):
    """An installed dependency is outside the supported range."""


class CorruptFileError(ConfigError):
    """A file a config or the command line names exists but cannot be read
    (truncated, garbage, another format): a prior file, a checkpoint, a
    search state."""


class DataError(PSENetError, ValueError):
    """A dataset's files or labels are wrong (a missing or undecodable
    image, a label outside ``num_classes``)."""


class WorkDirError(PSENetError, OSError):
    """The work dir cannot be created or written, or is in use by another
    run."""
