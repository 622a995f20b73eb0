"""Errors a user can act on.

The CLI prints ``str(error)`` and exits non-zero without a traceback, so every message
must say where (file and line when there is one), what was expected and what to do.
"""

from __future__ import annotations

import functools
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


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


class BrokenPeerError(ModelError):
    """A peer detector's package or environment is there but does not work (an import fails for
    another reason than absence, a worker that does not start, a version known to answer nothing).

    Unlike a missing peer it is never skipped: the message says what failed and how to rebuild it.
    """


class SilentPeerError(ModelError):
    """A detector found no face on any image of a set that has faces: an environment that runs but
    answers nothing (animeface on Pillow >= 12 does this), never a result to report as AP 0."""


# Worker processes (torch DataLoader workers) hand their FacecmpError back as an item instead of
# raising it: raised in a worker, it would reach the main process wrapped in a worker traceback,
# and the CLI's one line would be lost. ``returns_errors`` is the worker's half, ``raise_returned``
# the main process's.


def returns_errors(getitem):
    """Wrap a worker dataset's ``__getitem__`` so a FacecmpError it raises is returned as the item."""

    @functools.wraps(getitem)
    def wrapper(*args, **kwargs):
        try:
            return getitem(*args, **kwargs)
        except FacecmpError as exc:
            return exc

    return wrapper


def raise_returned(items: Iterable[T]) -> Iterator[T]:
    """Yield ``items`` in order, raising the first one that is a returned FacecmpError."""
    for item in items:
        if isinstance(item, FacecmpError):
            raise item
        yield item
