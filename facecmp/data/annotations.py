"""Parsing course annotation files, one line per face.

Formats (whitespace separated, integer pixels, both ends inclusive):

- training ``<char>_annotations.txt`` and ``validare_annotations.txt``:
  ``IMAGE X_MIN Y_MIN X_MAX Y_MAX CHARACTER``
- ``task1_gt_validare*.txt`` and ``task2_<char>_gt_validare.txt``: ``IMAGE X_MIN Y_MIN X_MAX Y_MAX``

Validation policy (the same everywhere in facecmp):

- A malformed line -- wrong column count, a coordinate that is not an integer, an image name
  that is not a bare image file name (``0001.jpg``, ``001.png``) -- is an *error* problem naming
  ``file:line`` and the expected format. The line is skipped; the caller decides whether to raise.
- Blank lines and lines starting with ``#`` are ignored.
- Boxes are checked against the image size by :func:`clip_box` (the loaders know the size):
  a box reaching outside the image is clipped to it for training and evaluation. A box ending
  exactly one pixel past the border (``x_max == width``, 86 lines in the Dexter set) is told apart
  from one reaching further, but both are clipped and both are counted.
- A box with ``x_max <= x_min`` or ``y_max <= y_min`` (after clipping) is dropped.
- Nothing is changed silently: every clip, drop or rounding is counted by kind in a
  :class:`BoxChanges`, which gives one warning per kind with the count and the first ``file:line``.
  Records keep the boxes as written beside the clipped ones (``ImageRecord.labelled``), so
  ``facecmp convert`` writes what the user labelled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecmp.errors import DataError
from facecmp.data.records import Problem

IMAGE_NAME = re.compile(r"^[A-Za-z0-9_\-.]+\.(jpg|jpeg|png|bmp)$", re.IGNORECASE)
FORMAT_WITH_CLASS = "IMAGE X_MIN Y_MIN X_MAX Y_MAX CHARACTER"
FORMAT_NO_CLASS = "IMAGE X_MIN Y_MIN X_MAX Y_MAX"


@dataclass(frozen=True)
class AnnotationLine:
    """One parsed face line; ``label`` is '' when the file has no class column."""

    file: Path
    line: int
    image: str
    box: tuple[int, int, int, int]
    label: str = ""


def _expected(columns: tuple[int, ...]) -> str:
    formats = {5: FORMAT_NO_CLASS, 6: FORMAT_WITH_CLASS}
    return " or ".join(f"`{formats[c]}`" for c in columns)


def parse_annotation_file(
    path: str | Path, columns: tuple[int, ...] = (6,)
) -> tuple[list[AnnotationLine], list[Problem]]:
    """Every well-formed line of ``path`` plus a problem for each malformed one.

    ``columns`` lists the accepted column counts (5: no class column, 6: with class).
    Boxes are not checked here beyond being integers; see :func:`clip_box`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [], [Problem(path, None, f"cannot read annotation file ({exc})")]
    lines: list[AnnotationLine] = []
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in columns:
            problems.append(Problem(path, number, f"{len(fields)} columns in {raw.strip()!r}; expected {_expected(columns)}"))
            continue
        name = fields[0]
        if not IMAGE_NAME.match(name):
            problems.append(
                Problem(path, number, f"image name {name!r} is not a bare image file name like `0001.jpg`; "
                        f"expected {_expected(columns)}")
            )
            continue
        try:
            box = tuple(int(v) for v in fields[1:5])
        except ValueError:
            problems.append(
                Problem(path, number, f"non-integer coordinate in {raw.strip()!r}; expected {_expected(columns)} "
                        "with integer pixel coordinates")
            )
            continue
        label = fields[5] if len(fields) == 6 else ""
        lines.append(AnnotationLine(path, number, name, box, label))  # type: ignore[arg-type]
    return lines, problems


# What each kind of change does to a box, as the warning says it (after "N box(es) ").
BOX_CHANGES = {
    "edge": "end one pixel past the image (x_max = width or y_max = height in inclusive pixels): clipped to the "
            "last pixel for training and evaluation; `facecmp convert` writes them as labelled",
    "outside": "reach outside the image: clipped to it for training and evaluation; `facecmp convert` writes them "
               "as labelled",
    "no_area": "have no area (x_max <= x_min or y_max <= y_min after clipping to the image): dropped",
    "rounded": "have fractional pixel coordinates: rounded to the nearest pixel edge (each edge moves by at most "
               "half a pixel)",
    "yolo_range": "reach outside the image further than YOLO's normalised [0, 1] values can say: written clipped "
                  "to the image",
}


@dataclass
class BoxChanges:
    """Every box the policy changed, counted by kind (see ``BOX_CHANGES``), with the first of each."""

    counts: dict = field(default_factory=dict)  # kind -> [count, file, line, example]

    def note(self, kind: str, file: Path, line, example: str) -> None:
        if kind in self.counts:
            self.counts[kind][0] += 1
        else:
            self.counts[kind] = [1, file, line, example]

    def count(self, kind: str) -> int:
        return self.counts[kind][0] if kind in self.counts else 0

    def problems(self) -> list[Problem]:
        """One warning per kind: the count, what was done, and the first box (located at its ``file:line``)."""
        return [Problem(file, line, f"{n} box(es) {BOX_CHANGES[kind]}; the first here: {example}", severity="warning")
                for kind, (n, file, line, example) in self.counts.items()]


def clip_box(entry: AnnotationLine, size: tuple[int, int] | None, changes: BoxChanges) -> tuple[int, int, int, int] | None:
    """Apply the box policy; ``size`` is ``(width, height)`` or None when unknown.

    Returns the box to keep (None when dropped); every change is noted in ``changes``.
    Without a size only the lower bound (0) is known and clipped.
    """
    x0, y0, x1, y1 = entry.box
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = x1, y1
    if size is not None:
        w, h = size
        cx0, cy0 = min(cx0, w - 1), min(cy0, h - 1)
        cx1, cy1 = min(max(x1, 0), w - 1), min(max(y1, 0), h - 1)
    clipped = (cx0, cy0, cx1, cy1)
    where = f" ({size[0]}x{size[1]})" if size is not None else ""
    if cx1 <= cx0 or cy1 <= cy0:  # its fate is the drop, whether or not clipping came first
        changes.note("no_area", entry.file, entry.line, f"box {list(entry.box)} of {entry.image}{where}")
        return None
    if clipped != entry.box:
        # Only the far edge is past the frame, by exactly one pixel (x_max = width or y_max = height).
        edge = size is not None and 0 <= x0 and 0 <= y0 and x1 <= size[0] and y1 <= size[1]
        changes.note("edge" if edge else "outside", entry.file, entry.line,
                     f"box {list(entry.box)} of {entry.image}{where}, clipped to {list(clipped)}")
    return clipped


def read_ground_truth(path: str | Path, *, strict: bool = False) -> tuple[dict[str, np.ndarray], list[Problem]]:
    """A task-1 style ground-truth file (5 or 6 columns) as ``image -> (K, 4) int64 boxes``.

    Boxes stay in file order (it decides ties in evaluation). No image is opened, so boxes are
    only checked for negative coordinates and zero area (see the module policy).
    Raises :class:`DataError` when the file is absent, when any line is malformed, or -- with
    ``strict`` -- when any problem at all was found.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: ground-truth file not found; expected a file of lines `{FORMAT_NO_CLASS}`")
    entries, problems = parse_annotation_file(path, columns=(5, 6))
    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    changes = BoxChanges()
    for entry in entries:
        box = clip_box(entry, None, changes)
        boxes.setdefault(entry.image, [])
        if box is not None:
            boxes[entry.image].append(box)
    problems.extend(changes.problems())
    raise_for_problems(problems, strict=strict, what=str(path))
    return {k: as_box_array(v) for k, v in boxes.items()}, problems


def as_box_array(boxes) -> np.ndarray:
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)


def raise_for_problems(problems: list[Problem], *, strict: bool, what: str, limit: int = 10) -> None:
    """Raise one DataError listing the first ``limit`` problems if any is an error (any at all if strict)."""
    fatal = [p for p in problems if strict or p.severity == "error"]
    if not fatal:
        return
    shown = "\n".join(f"  {p}" for p in fatal[:limit])
    more = f"\n  ... and {len(fatal) - limit} more" if len(fatal) > limit else ""
    kind = ("problem(s) (strict mode)" if strict else "error(s)")
    raise DataError(
        f"{what}: {len(fatal)} {kind} in the annotations:\n{shown}{more}\n"
        "Fix the lines listed (or run `facecmp check` for the full report)"
        + ("; without --strict, warnings are repaired by the documented policy." if strict else ".")
    )
