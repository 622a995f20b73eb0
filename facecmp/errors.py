"""Errors a user can act on.

The CLI prints ``str(error)`` and exits non-zero without a traceback, so every message
must say where (file and line when there is one), what was expected and what to do.
"""


class FacecmpError(Exception):
    """Base class for problems caused by input or environment, not by a bug."""


class DataError(FacecmpError):
    """A dataset, annotation, image or prediction file is unusable."""


class ModelError(FacecmpError):
    """Weights or checkpoints are missing or do not fit the networks."""


class MissingPeerError(ModelError):
    """A peer detector's optional package is not installed; the message names what to install.

    The CLI reports it like any ModelError (one line, exit 2); the benchmark plugin skips the
    variant with the same line instead of failing.
    """
