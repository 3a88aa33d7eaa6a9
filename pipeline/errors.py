"""The user-facing error types the CLI turns into a one-line message instead of a traceback."""

from data_manifests.errors import ManifestError
from stages.errors import StageError


class ConfigError(ValueError):
    """A config file or `--set` override that does not validate; the message names the key and the file."""


USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, ManifestError, StageError, FileNotFoundError)
