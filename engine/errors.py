"""Typed errors the engine raises for bad input.

Each message names the field, file or row at fault and says what to do. The
studio shows them as a gr.Error, the CLI as one line and a non-zero exit;
tracebacks appear only with --debug.
"""


class TunesmithError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class ConfigError(TunesmithError):
    """A RunConfig field, YAML file or override is wrong."""


class DataError(TunesmithError):
    """A dataset is missing, empty, unreadable or malformed."""


class ModelError(TunesmithError):
    """A model cannot be found or loaded."""


class RunError(TunesmithError):
    """A run id is unknown, or the run is in the wrong state for the request."""


class ExportError(TunesmithError):
    """An export cannot be done as asked."""


class RegistryError(TunesmithError):
    """The run registry (tunesmith.db) cannot be read or written: full disk, locked, damaged."""


class DiskFullError(TunesmithError):
    """A write failed because the disk is full; the message names the folder and the space needed."""
