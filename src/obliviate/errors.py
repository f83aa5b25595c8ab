"""User-facing errors.

Every error a user can cause (bad flag, unknown name, corrupt file, mismatched model and data) is an
``ObliviateError``: the CLI prints its message as one line and exits non-zero, the library raises it.
Subclassing ``ValueError`` keeps ``except ValueError`` code working.
"""


class ObliviateError(ValueError):
    """A problem with the user's input, named in the message."""


class RequestError(ObliviateError):
    """A forget request that cannot be honoured (unknown class, empty set, id out of range, ...)."""


class CheckpointError(ObliviateError):
    """A checkpoint or run directory that is missing, corrupt or does not match the data."""


class AccessError(ObliviateError):
    """A method reached for data it did not declare (e.g. a zero-glance method asking for forget samples)."""
