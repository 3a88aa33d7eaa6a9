"""Errors a user can cause (a wrong path, a malformed label file, a root that matches no layout).

The CLI prints these as one clear message, without a traceback.
"""


class ManifestError(ValueError):
    """A dataset root, labels CSV, fold file or manifest that cannot be used; the message names the file."""
