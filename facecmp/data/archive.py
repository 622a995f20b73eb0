"""The format dispatch: which labelling format a folder holds, and any of them loaded as an :class:`Archive`.

Every command's ``--data`` comes here (:func:`load_archive`). It sits above the course reader
(:mod:`facecmp.data.layout`) and the other formats (:mod:`facecmp.data.formats`); neither imports it.
The course layout is one format among the others (``course``), found like them from the files
present, or named by ``fmt``. Each reader collects every problem; :func:`load_formatted` then
raises one :class:`DataError` if any part has an error (any problem at all when ``strict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facecmp.data.annotations import raise_for_problems
from facecmp.data.formats import coco, course, voc, wider, yolo
from facecmp.data.formats.common import TEST, TRAIN
from facecmp.data.layout import archive_parts, load_test, load_training, missing_error
from facecmp.data.records import Dataset
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


@dataclass
class Archive:
    """A course archive: its training part, its test part, or both."""

    root: Path
    train: Dataset | None
    test: Dataset | None


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
            raise missing_error(ds, root)
    return Archive(root, parts.get(TRAIN), parts.get(TEST))


def load_archive(
    root: str | Path, *, strict: bool = False, allow_missing: bool = False, fmt: str | None = None
) -> Archive:
    """A course archive: ``root`` holds ``antrenare/`` and/or ``validare/`` (any casing), or is one of them.

    Or a dataset in another labelling format (COCO, Pascal VOC, YOLO, WIDER FACE), found from the files
    present or named by ``fmt``: see :mod:`facecmp.data.formats`. Every command's ``--data`` comes here.
    """
    root = Path(root)
    fmt = resolve_format(root, fmt)
    if fmt != "course":
        return load_formatted(root, fmt, strict=strict, allow_missing=allow_missing)
    train_dir, test_dir = archive_parts(root)
    train = load_training(train_dir, strict=strict) if train_dir else None
    test = load_test(test_dir, strict=strict, allow_missing=allow_missing) if test_dir else None
    return Archive(root, train, test)


def load_test_set(path: str | Path, *, allow_missing: bool = False, fmt: str | None = None) -> Dataset:
    """The labelled images to test on at ``path``: a course test folder, a course archive's test
    part, or a dataset in another labelling format (its test part, else its only part)."""
    archive = load_archive(path, allow_missing=allow_missing, fmt=fmt)
    chosen = archive.test if archive.test is not None else archive.train
    if chosen is None:
        raise DataError(f"{path}: no labelled images found; expected a course test folder (validare/) or a dataset in "
                        "one of the labelling formats (see `facecmp convert --help`)")
    return chosen


def has_test_part(root: str | Path, fmt: str | None = None) -> bool:
    """Whether the dataset in ``root`` has its own test part (else a study holds out a split)."""
    root = Path(root)
    fmt = resolve_format(root, fmt)
    if fmt == "course":
        return course.find_parts(root)[1] is not None
    return TEST in READERS[fmt].read(root)


__all__ = ["EXPECTED", "FORMATS", "READERS", "WRITE_FORMATS", "Archive", "find_formats", "has_test_part",
           "load_archive", "load_formatted", "load_test_set", "read_parts", "resolve_format"]
