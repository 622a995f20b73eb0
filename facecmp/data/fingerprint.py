"""What a cached result is keyed by: the data's content, the code, the libraries.

- :func:`data_fingerprint` is the identity of a dataset: its image keys, boxes, character labels
  and the bytes of every image file (not its size or date: a relabelled box or a re-encoded frame
  of the same size is other data). The study keys samples, checkpoints, calibrations, recognizers
  and robustness cells by it, and the benchmark report prints it.
- :func:`code_fingerprint` hashes facecmp's own source (the packages that make a result).
- :func:`library_versions` names the installed versions of the libraries a result depends on.

docs/caches-and-gates.md lists which cache key holds which of these (and how long hashing takes).
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path

import numpy as np

from facecmp.data.records import Dataset
from facecmp.errors import DataError

# The packages whose code produces a cached checkpoint, sample set, calibration or recognizer:
# sample mining, training and calibration (training/), the cascade (detection/), how images and
# annotations are read (data/) and the AP that calibration maximizes (evaluation/).
CODE_PACKAGES = ("training", "detection", "data", "evaluation")
# The libraries every cached result depends on: the networks' arithmetic, image decoding and arrays.
CORE_LIBRARIES = ("torch", "torchvision", "numpy", "pillow")


def data_fingerprint(dataset: Dataset) -> str:
    """SHA-256 over every image's key, boxes, labels and file bytes, in dataset order."""
    h = hashlib.sha256()
    for record in dataset.images:
        h.update(record.key.encode() + b"\0")
        h.update(_array_bytes(record.boxes))
        h.update(json.dumps(list(record.labels)).encode() + b"\0")
        try:
            with open(record.path, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
        except OSError:
            raise DataError(f"{record.path}: image file not found or unreadable (listed as {record.key})") from None
    return h.hexdigest()


def _array_bytes(boxes) -> bytes:
    boxes = np.ascontiguousarray(boxes, dtype=np.int64).reshape(-1, 4)
    return len(boxes).to_bytes(8, "little") + boxes.tobytes()


def files_digest(paths) -> str:
    """SHA-256 (20 hex digits) over the names and bytes of ``paths``, in the order given."""
    h = hashlib.sha256()
    for path in paths:
        path = Path(path)
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:20]


@functools.lru_cache(maxsize=None)
def code_fingerprint(packages: tuple[str, ...] = CODE_PACKAGES, root: Path | None = None) -> str:
    """A hash of the source files of ``<root>/<package>`` for each package (paths and bytes); an
    entry may also name a subpackage (``study/robustness``) or one file. ``root`` defaults to the installed
    ``facecmp`` folder."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in packages:
        where = root / package
        for path in [where] if where.is_file() else sorted(where.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def library_versions(*extra: str) -> dict[str, str | None]:
    """``{distribution: installed version}`` for the core libraries and ``extra`` (None: not installed)."""
    out = {}
    for name in (*CORE_LIBRARIES, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
