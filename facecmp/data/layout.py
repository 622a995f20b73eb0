"""The course reader: finding and loading the course's folder layouts.

Any dataset, the course's included, is loaded through the format dispatch
(:func:`facecmp.data.archive.load_archive`), which sits above this module.

Training folder (``antrenare/``)::

    <char>/NNNN.jpg  +  <char>_annotations.txt   (IMAGE X_MIN Y_MIN X_MAX Y_MAX CHARACTER)

Every image file of a character folder is a record keyed ``<char>/NNNN.jpg``; a folder's
annotation file lists all faces of its images, whatever character they show.

Test folder (``validare/``)::

    validare/ or Validare/ (any casing)   the images, 3- or 4-digit names
    task1_gt_validare.txt                 all faces, 5 columns (subsets like task1_gt_validare20.txt too)
    task2_<char>_gt_validare.txt          optional, the faces of one named character
    validare_annotations.txt              optional, 6 columns (class in the last one)

Records are keyed by the bare file name. Box policy and malformed lines: see
:mod:`facecmp.data.annotations`. Loaders read image headers only (fast), collect every problem,
then raise one :class:`DataError` if any error was found (any problem at all when ``strict``).
An image named in ground truth but absent from disk is an error for a training folder; for a
test folder it is listed in ``Dataset.missing`` and raises unless ``allow_missing`` is given.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from facecmp.errors import DataError
from facecmp.data.annotations import (
    AnnotationLine,
    BoxChanges,
    clip_box,
    parse_annotation_file,
    raise_for_problems,
)
from facecmp.data.images import IMAGE_SUFFIXES, image_size
from facecmp.data.records import UNKNOWN, Dataset, ImageRecord, Problem

TASK1_FULL = "task1_gt_validare.txt"
TASK1_PATTERN = re.compile(r"^task1_gt_validare.*\.txt$", re.IGNORECASE)
TASK2_PATTERN = re.compile(r"^task2_(.+)_gt_validare\.txt$", re.IGNORECASE)
TEST_ANNOTATIONS = "validare_annotations.txt"
TRAIN_NAME = "antrenare"
TEST_NAME = "validare"


# ----------------------------------------------------------------------------- helpers


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _child_named(parent: Path, name: str, *, want_dir: bool = True) -> Path | None:
    """The child of ``parent`` called ``name`` in any casing (the exact casing first)."""
    exact = parent / name
    if (exact.is_dir() if want_dir else exact.is_file()):
        return exact
    for child in sorted(parent.iterdir()):
        if child.name.lower() == name.lower() and (child.is_dir() if want_dir else child.is_file()):
            return child
    return None


def _dataset_name(folder: Path) -> str:
    return f"{folder.parent.name}/{folder.name}" if folder.parent.name else folder.name


def _boxes_for_image(
    entries: list[AnnotationLine], size: tuple[int, int] | None, changes: BoxChanges
) -> tuple[list[tuple[int, int, int, int]], list[AnnotationLine]]:
    """The boxes kept by the policy (clipped) and the lines they came from (boxes as written)."""
    boxes, kept = [], []
    for entry in entries:
        box = clip_box(entry, size, changes)
        if box is not None:
            boxes.append(box)
            kept.append(entry)
    return boxes, kept


def _header_size(path: Path, problems: list[Problem]) -> tuple[int, int] | None:
    try:
        return image_size(path)
    except DataError as exc:
        problems.append(Problem(path, None, f"unreadable image ({exc}); re-export or remove it"))
        return None


def _group_by_image(entries: list[AnnotationLine]) -> dict[str, list[AnnotationLine]]:
    grouped: dict[str, list[AnnotationLine]] = {}
    for entry in entries:
        grouped.setdefault(entry.image, []).append(entry)
    return grouped


def odd_size_problems(
    sizes: dict[Path, tuple[int, int] | None], entries: dict[Path, list[AnnotationLine]], share: float = 0.9
) -> list[Problem]:
    """Warnings for images whose size differs from the one shared by >= ``share`` of the dataset.

    Such an image was often re-encoded at another resolution after annotation (in the Dexter set
    mom/0046.jpg is 957x720 among 480x360 frames, and mom_annotations.txt:83 has y_max 460). Its boxes
    are kept in the image's own pixels; the warning names each line that would not fit the usual frame.
    """
    counts = Counter(s for s in sizes.values() if s is not None)
    if not counts:
        return []
    usual, n_usual = counts.most_common(1)[0]
    if n_usual < share * len(sizes):
        return []
    uw, uh = usual
    problems = []
    for path, size in sizes.items():
        if size is None or size == usual:
            continue
        note = f"{path.parent.name}/{path.name} is {size[0]}x{size[1]} but {n_usual} of {len(sizes)} images here are {uw}x{uh}"
        outside = [e for e in entries.get(path, []) if e.box[2] > uw or e.box[3] > uh]
        for e in outside:
            problems.append(Problem(e.file, e.line, f"box {list(e.box)} does not fit the usual {uw}x{uh} frame: "
                                    f"{note}. The box fits the image itself and is kept; check the image was "
                                    "not resized after annotation", severity="warning"))
        if not outside:
            problems.append(Problem(path, None, f"{note}; check it was not resized after annotation",
                                    severity="warning"))
    return problems


# ----------------------------------------------------------------------------- layout detection


def is_test_dir(folder: Path) -> bool:
    """A folder holding task-1 ground truth or ``validare_annotations.txt``."""
    return folder.is_dir() and any(
        p.is_file() and (TASK1_PATTERN.match(p.name) or p.name.lower() == TEST_ANNOTATIONS) for p in folder.iterdir()
    )


def character_folders(folder: Path) -> list[str]:
    """Names of sub-folders that have a ``<name>_annotations.txt`` beside them."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and (folder / f"{p.name}_annotations.txt").is_file())


def is_train_dir(folder: Path) -> bool:
    return not is_test_dir(folder) and bool(character_folders(folder))


# ----------------------------------------------------------------------------- training


def read_training(train_dir: str | Path) -> Dataset:
    """The training folder with every problem recorded in ``Dataset.problems`` (never raises on content)."""
    train_dir = Path(train_dir)
    if not train_dir.is_dir():
        raise DataError(f"{train_dir}: training folder not found; expected <char>/NNNN.jpg + <char>_annotations.txt")
    chars = character_folders(train_dir)
    if not chars:
        raise DataError(
            f"{train_dir}: no training layout found; expected character folders <char>/NNNN.jpg, "
            "each with a <char>_annotations.txt file beside it (lines `IMAGE X_MIN Y_MIN X_MAX Y_MAX CHARACTER`)"
        )
    problems: list[Problem] = []
    for orphan in sorted(train_dir.glob("*_annotations.txt")):
        if not (train_dir / orphan.name[: -len("_annotations.txt")]).is_dir():
            problems.append(Problem(orphan, None, f"annotation file without its image folder "
                                    f"{orphan.name[: -len('_annotations.txt')]}/; its faces are ignored"))
    images: list[ImageRecord] = []
    sizes: dict[Path, tuple[int, int] | None] = {}
    entries: dict[Path, list[AnnotationLine]] = {}
    changes = BoxChanges()
    for char in chars:
        images.extend(_read_character_folder(train_dir, char, problems, sizes, entries, changes))
    problems.extend(changes.problems())
    problems.extend(odd_size_problems(sizes, entries))
    return Dataset(_dataset_name(train_dir), images, problems, characters=tuple(c for c in chars if c != UNKNOWN))


def _read_character_folder(
    train_dir: Path,
    char: str,
    problems: list[Problem],
    sizes: dict[Path, tuple[int, int] | None],
    entries_by_path: dict[Path, list[AnnotationLine]],
    changes: BoxChanges,
) -> list[ImageRecord]:
    ann_file = train_dir / f"{char}_annotations.txt"
    entries, parse_problems = parse_annotation_file(ann_file, columns=(6,))
    problems.extend(parse_problems)
    grouped = _group_by_image(entries)
    files = {p.name: p for p in _image_files(train_dir / char)}
    for name in sorted(set(grouped) - set(files)):
        first = grouped[name][0]
        problems.append(Problem(ann_file, first.line, f"annotated image {char}/{name} not found in {train_dir / char}"))
    records = []
    for name, path in files.items():
        size = sizes[path] = _header_size(path, problems)
        entries_by_path[path] = grouped.get(name, [])
        boxes, kept = _boxes_for_image(grouped.get(name, []), size, changes)
        records.append(ImageRecord.of(f"{char}/{name}", path, boxes, [e.box for e in kept], [e.label for e in kept]))
    return records


def load_training(train_dir: str | Path, *, strict: bool = False) -> Dataset:
    """Load a course training folder (see the module docstring for layout and policy)."""
    ds = read_training(train_dir)
    raise_for_problems(ds.problems, strict=strict, what=str(train_dir))
    return ds


# ----------------------------------------------------------------------------- test


def find_image_folder(test_dir: Path) -> Path | None:
    """``validare/`` in any casing inside ``test_dir``."""
    return _child_named(test_dir, TEST_NAME)


def _task1_file(test_dir: Path) -> Path | None:
    candidates = sorted(p for p in test_dir.iterdir() if p.is_file() and TASK1_PATTERN.match(p.name))
    for p in candidates:
        if p.name.lower() == TASK1_FULL:
            return p
    # Only subsets (task1_gt_validare20.txt ...): take the largest, ties by name.
    return max(candidates, key=lambda p: (p.stat().st_size, p.name), default=None)


def _label_table(test_dir: Path, problems: list[Problem]) -> tuple[dict[tuple[str, tuple], str], tuple[str, ...], bool]:
    """``(image, box) -> label`` from validare_annotations.txt or task2 files; named characters; any found."""
    table: dict[tuple[str, tuple], str] = {}
    ann = _child_named(test_dir, TEST_ANNOTATIONS, want_dir=False)
    task2 = sorted((m.group(1), p) for p in test_dir.iterdir() if p.is_file() and (m := TASK2_PATTERN.match(p.name)))
    chars: set[str] = {c for c, _ in task2}
    if ann is not None:
        entries, parse_problems = parse_annotation_file(ann, columns=(6,))
        problems.extend(parse_problems)
        for e in entries:
            table[(e.image, e.box)] = e.label
            chars.add(e.label)
    for char, path in task2:
        entries, parse_problems = parse_annotation_file(path, columns=(5,))
        problems.extend(parse_problems)
        for e in entries:
            table.setdefault((e.image, e.box), char)
    chars.discard(UNKNOWN)
    return table, tuple(sorted(chars)), ann is not None or bool(task2)


def read_test(test_dir: str | Path) -> Dataset:
    """The test folder with every problem recorded (never raises on content); see :func:`load_test`."""
    test_dir = Path(test_dir)
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: test folder not found")
    problems: list[Problem] = []
    gt_file = _task1_file(test_dir) or _child_named(test_dir, TEST_ANNOTATIONS, want_dir=False)
    image_dir = find_image_folder(test_dir)
    if gt_file is None or image_dir is None:
        raise DataError(
            f"{test_dir}: not a test layout; expected {TASK1_FULL} (or {TEST_ANNOTATIONS}) and an image folder "
            f"validare/ (any casing) inside it"
        )
    entries, parse_problems = parse_annotation_file(gt_file, columns=(5, 6))
    problems.extend(parse_problems)
    labels_by_box, chars, have_labels = _label_table(test_dir, problems)
    grouped = _group_by_image(entries)
    files = {p.name: p for p in _image_files(image_dir)}
    by_lower = {name.lower(): p for name, p in files.items()}
    missing = [name for name in grouped if name not in files and name.lower() not in by_lower]
    records = []
    sizes: dict[Path, tuple[int, int] | None] = {}
    entries_by_path: dict[Path, list[AnnotationLine]] = {}
    changes = BoxChanges()
    for name in sorted(set(grouped) | set(files)):
        path = files.get(name) or by_lower.get(name.lower())
        if path is None:
            continue
        if name not in grouped and path.name != name:
            continue  # a case variant of a ground-truth name, already recorded under that name
        size = sizes[path] = _header_size(path, problems)
        entries_by_path[path] = grouped.get(name, [])
        boxes, kept = _boxes_for_image(grouped.get(name, []), size, changes)
        labels = [labels_by_box.get((e.image, e.box), (e.label or UNKNOWN) if have_labels else e.label) for e in kept]
        records.append(ImageRecord.of(name, path, boxes, [e.box for e in kept], labels))
    problems.extend(changes.problems())
    problems.extend(odd_size_problems(sizes, entries_by_path))
    return Dataset(_dataset_name(test_dir), records, problems, missing=sorted(missing), characters=chars)


def missing_error(ds: Dataset, where: Path) -> DataError:
    first = ", ".join(ds.missing[:5]) + (", ..." if len(ds.missing) > 5 else "")
    return DataError(
        f"{where}: {len(ds.missing)} of the images listed in the ground truth are missing from the image folder "
        f"({first}). Restore them, or evaluate on the {len(ds.images)} present images only with --allow-missing "
        f"(allow_missing=True); the report will say so."
    )


def load_test(test_dir: str | Path, *, strict: bool = False, allow_missing: bool = False) -> Dataset:
    """Load a course test folder (see the module docstring for layout and policy).

    Labels come from ``validare_annotations.txt`` or the task-2 files when present (faces in
    neither are ``unknown``), else they are ''. Images present but absent from the ground truth
    are records with no faces.
    """
    ds = read_test(test_dir)
    raise_for_problems(ds.problems, strict=strict, what=str(test_dir))
    if ds.missing and not allow_missing:
        raise missing_error(ds, Path(test_dir))
    return ds


# ----------------------------------------------------------------------------- others


def load_image_folder(folder: str | Path) -> Dataset:
    """A bare folder of images, no faces (for running detection only). Keys are file names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    files = _image_files(folder)
    if not files:
        raise DataError(f"{folder}: no images found (expected files ending in {', '.join(IMAGE_SUFFIXES)})")
    return Dataset(folder.name, [ImageRecord(p.name, p) for p in files])


def archive_parts(root: str | Path) -> tuple[Path | None, Path | None]:
    """``(training folder, test folder)`` of a course archive, at least one of them; else a DataError."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    train_dir, test_dir = find_parts(root)
    if train_dir is None and test_dir is None:
        raise DataError(
            f"{root}: no course dataset layout found. Expected antrenare/<char>/NNNN.jpg with "
            "antrenare/<char>_annotations.txt, and/or validare/task1_gt_validare.txt with images in "
            "validare/validare/; the folder may also be antrenare/ or validare/ itself."
        )
    return train_dir, test_dir


def find_parts(root: Path) -> tuple[Path | None, Path | None]:
    """``(training folder, test folder)`` of an archive root; either may be None."""
    if is_test_dir(root):
        return None, root
    if is_train_dir(root):
        return root, None
    train = _child_named(root, TRAIN_NAME)
    test = _child_named(root, TEST_NAME)
    return (train if train is not None and is_train_dir(train) else None,
            test if test is not None and is_test_dir(test) else None)
