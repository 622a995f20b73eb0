"""``facecmp convert``: a dataset in one labelling format written as another.

Reads through the format dispatch (:mod:`facecmp.data.archive`), so every reader's box and error
policy applies; writes the boxes as labelled, not as clipped.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from facecmp.data.archive import READERS, WRITE_FORMATS, load_archive, resolve_format
from facecmp.data.formats.common import TEST, TRAIN
from facecmp.data.records import Problem
from facecmp.errors import DataError


@dataclass
class Converted:
    """What :func:`convert` wrote: the new folder, the formats read and written, images and faces per
    part, the warnings of the reading, and the annotation files written."""

    out: Path
    fmt: str
    to: str
    counts: dict[str, tuple[int, int]]  # part -> (images, faces)
    warnings: list[Problem] = field(default_factory=list)
    annotation_files: list[Path] = field(default_factory=list)


def convert(src: str | Path, to: str, out: str | Path, *, fmt: str | None = None, link: bool = True,
            strict: bool = False) -> Converted:
    """Read ``src`` (any format, or ``fmt``) and write it as ``to`` into the new folder ``out``.

    Images are hard-linked (copied where linking fails, or with ``link=False``). Everything is
    written into a hidden folder beside ``out`` and renamed into place at the end, so an
    interrupted conversion leaves no half dataset. ``out`` must not exist or be empty.
    """
    if to not in WRITE_FORMATS:
        raise DataError(f"unknown output format {to!r}; --to takes one of {', '.join(WRITE_FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not an empty folder; choose a new --out folder")
    src = Path(src)
    fmt = resolve_format(src, fmt)
    archive = load_archive(src, strict=strict, fmt=fmt)
    parts = {role: ds for role, ds in ((TRAIN, archive.train), (TEST, archive.test)) if ds is not None}
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        written = READERS[to].write(parts, tmp, link=link)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return Converted(
        out, fmt, to, {role: (len(ds), ds.n_faces) for role, ds in parts.items()},
        [p for ds in parts.values() for p in ds.problems],
        [out / p.relative_to(tmp) for p in written],
    )


__all__ = ["Converted", "convert"]
