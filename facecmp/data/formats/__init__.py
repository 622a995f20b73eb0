"""The labelling formats facecmp reads and writes, found from the files present or named.

``course`` (the course archive, :mod:`facecmp.data.layout`), ``coco``, ``voc``, ``yolo`` and
``wider`` (WIDER FACE). Every reader maps to the same records (:mod:`facecmp.data.records`) with
the course's box policy and error policy: each problem names its file and line or object, boxes
outside the image are clipped (one warning per kind of change, with the count), image names that
are absolute or climb with ``..`` are refused, and every problem is listed at once before a
loader raises. :func:`convert` writes the boxes as labelled, not as clipped. A dataset has a training part, a test part, or both (``train`` / ``val`` / ``test``
in the names of files or folders; a single unnamed part is the training part).

:func:`facecmp.data.layout.load_archive` comes here for anything but the course layout, so every
command's ``--data`` takes any of them; :func:`convert` writes one as another.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from facecmp.data.annotations import raise_for_problems
from facecmp.data.formats import coco, course, voc, wider, yolo
from facecmp.data.formats.common import TEST, TRAIN
from facecmp.data.layout import Archive
from facecmp.data.records import Dataset, Problem
from facecmp.errors import DataError

READERS = {m.NAME: m for m in (course, coco, voc, yolo, wider)}
FORMATS = tuple(READERS)
WRITE_FORMATS = FORMATS
EXPECTED = {
    "course": "antrenare/<char>/NNNN.jpg with antrenare/<char>_annotations.txt, and/or validare/task1_gt_validare.txt "
    "with images in validare/validare/",
    "coco": "a COCO JSON (images, annotations, categories) at the root, in annotations/ or one folder down",
    "voc": "Annotations/*.xml with JPEGImages/ (Pascal VOC)",
    "yolo": "a data.yaml (train:/val: image folders, names:) or classes.txt with images/ and labels/*.txt",
    "wider": "wider_face_split/wider_face_<split>_bbx_gt.txt with WIDER_<split>/images/",
}


def find_formats(root: Path) -> dict[str, list[Path]]:
    """``format -> the files or folders that show it``, for every format present in ``root``."""
    found = {}
    for name, module in READERS.items():
        evidence = module.find(root)
        if evidence:
            found[name] = evidence
    return found


def _shown(root: Path, paths: list[Path]) -> str:
    def rel(p: Path) -> str:
        try:
            return p.relative_to(root).as_posix() or "."
        except ValueError:
            return str(p)

    return ", ".join(rel(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")


def resolve_format(root: str | Path, fmt: str | None = None) -> str:
    """``fmt`` when given (checked), else the one format found in ``root``; a DataError naming what was found
    when there is none or more than one."""
    root = Path(root)
    if fmt is not None and fmt not in READERS:
        raise DataError(f"unknown format {fmt!r}; --format takes one of {', '.join(FORMATS)}")
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    found = find_formats(root)
    if fmt is not None:
        if fmt not in found:
            raise DataError(f"{root}: no {fmt} dataset found; expected {EXPECTED[fmt]}"
                            + (f". Found {', '.join(found)} instead" if found else ""))
        return fmt
    if len(found) == 1:
        return next(iter(found))
    if not found:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
        listing = ", ".join(entries[:12]) + (", ..." if len(entries) > 12 else "") or "nothing"
        raise DataError(
            f"{root}: no course dataset layout found, nor any labelling format. Expected "
            + "; or ".join(f"{k}: {v}" for k, v in EXPECTED.items())
            + f". The folder may also be antrenare/ or validare/ itself. Found: {listing}"
        )
    raise DataError(
        f"{root}: mixed formats: " + "; ".join(f"{k} ({_shown(root, v)})" for k, v in found.items())
        + ". Name the one to read with --format, or keep one per folder"
    )


def read_parts(root: str | Path, fmt: str | None = None) -> tuple[str, dict[str, Dataset]]:
    """``(format, {"train"/"test": Dataset})`` with every problem recorded in the datasets (never raises on content)."""
    root = Path(root)
    fmt = resolve_format(root, fmt)
    parts = READERS[fmt].read(root)
    if not parts:
        raise DataError(f"{root}: the {fmt} dataset has no training or test part; expected {EXPECTED[fmt]}")
    return fmt, parts


def load_formatted(root: str | Path, fmt: str | None = None, *, strict: bool = False, allow_missing: bool = False) -> Archive:
    """Any format as an :class:`Archive`: every part read, then one DataError if any has an error."""
    root = Path(root)
    fmt, parts = read_parts(root, fmt)
    for role, ds in parts.items():
        raise_for_problems(ds.problems, strict=strict, what=f"{root} ({fmt}, {role} part)")
        if ds.missing and not allow_missing:
            from facecmp.data.layout import missing_error

            raise missing_error(ds, root)
    return Archive(root, parts.get(TRAIN), parts.get(TEST))


def has_test_part(root: str | Path, fmt: str | None = None) -> bool:
    """Whether the dataset in ``root`` has its own test part (else a study holds out a split)."""
    root = Path(root)
    fmt = resolve_format(root, fmt)
    if fmt == "course":
        return course.find_parts(root)[1] is not None
    return TEST in READERS[fmt].read(root)


@dataclass
class Converted:
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
    from facecmp.data.layout import load_archive

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


__all__ = ["FORMATS", "WRITE_FORMATS", "Converted", "convert", "find_formats", "has_test_part", "load_formatted",
           "read_parts", "resolve_format"]
