"""What every labelling format shares: pixel conventions, the course's box policy, part roles, output.

Pixel conventions. Our records hold the course's inclusive integer pixels: ``x_min .. x_max`` are
both inside the face, so the width is ``x_max - x_min + 1``. COCO, YOLO and WIDER FACE boxes are
continuous: a face covering pixels 10..19 is ``x = 10, w = 10`` (COCO, WIDER) or centre 15.0,
width 10 in image units (YOLO). Reading rounds continuous edges to the nearest pixel boundary
(``x_min = round(x)``, ``x_max = round(x + w) - 1``), so integer boxes round-trip exactly and a
fractional box moves by at most half a pixel per edge. Pascal VOC's ``xmin .. xmax`` are
1-based inclusive pixels (the VOC devkit subtracts 1), so ``xmin = x_min + 1``.

Reading counts every box whose edges are not whole pixels (rounded, one warning with the count).
After conversion, every face goes through the course's policy (:func:`facecmp.data.annotations.clip_box`):
clipped to its image, dropped when it has no area, each kind counted in one warning naming the
first file and object (``instances_train.json:annotations[3] (id 17)``, ``0001.xml:object 2``).
Writers write the boxes as labelled (``ImageRecord.boxes_as_labelled``), not the clipped ones.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from facecmp.atomic import inside
from facecmp.data.annotations import AnnotationLine, BoxChanges, clip_box
from facecmp.data.images import IMAGE_SUFFIXES, image_size
from facecmp.data.layout import odd_size_problems
from facecmp.data.records import UNKNOWN, Dataset, ImageRecord, Problem
from facecmp.errors import DataError

TRAIN, TEST = "train", "test"
# A continuous edge this close to a whole pixel is whole (YOLO's 8 decimals of a 1000 px image err by 1e-5 px).
ROUNDING_TOLERANCE = 1e-3
# The class a face without a character gets in formats that need one; read back as-is.
FACE = "face"
_TRAIN_WORDS = ("train", "training", "trainval", "antrenare")
_TEST_WORDS = ("test", "testing", "val", "valid", "validation", "validare", "dev")


def split_role(name: str) -> str | None:
    """``train`` / ``test`` from a split's name (``instances_val2017`` -> test), None when it says neither."""
    words = [w.rstrip("0123456789") for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    if any(w in _TRAIN_WORDS for w in words):
        return TRAIN
    if any(w in _TEST_WORDS for w in words):
        return TEST
    return None


def out_label(label: str) -> str:
    """The class name written for a face: its character, or ``face`` when it has none ('')."""
    return label or FACE


# ----------------------------------------------------------------------------- pixel conventions


def nearest(v: float) -> int:
    """The nearest integer, halves up (a pixel boundary)."""
    return int(math.floor(v + 0.5))


def continuous_to_inclusive(x: float, y: float, w: float, h: float) -> tuple[int, int, int, int]:
    """COCO/WIDER ``[x, y, w, h]`` (continuous) -> inclusive integer pixels ``x_min, y_min, x_max, y_max``."""
    x0, y0 = nearest(x), nearest(y)
    return x0, y0, nearest(x + w) - 1, nearest(y + h) - 1


def inclusive_to_xywh(box) -> list[int]:
    """Inclusive pixels -> COCO/WIDER ``[x, y, w, h]``."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


# ----------------------------------------------------------------------------- reading


@dataclass
class Face:
    """One face as a format states it, already in inclusive pixels, with where it was written."""

    file: Path
    where: int | str
    box: tuple[int, int, int, int]
    label: str
    meta: dict = field(default_factory=dict)


@dataclass
class PartReader:
    """Collects one part's images and faces, then applies the course's box policy in :meth:`dataset`."""

    name: str
    problems: list[Problem] = field(default_factory=list)
    images: dict[str, Path] = field(default_factory=dict)  # key -> image path
    faces: dict[str, list[Face]] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int] | None] = field(default_factory=dict)  # known sizes (else read from the header)
    changes: BoxChanges = field(default_factory=BoxChanges)

    def accept_key(self, key: str, file: Path, where) -> bool:
        """Whether ``key`` (an image name from ``file``) may be used: an absolute one, or one that climbs with
        ``..``, is refused with an error naming the file and entry (it would read or write outside the dataset)."""
        why = unsafe_key(key)
        if why:
            self.error(file, where, f"image name {key!r} {why}; image names must be relative paths inside the dataset "
                       "(like dad/0001.jpg): fix the entry")
        return why is None

    def add_image(self, key: str, path: Path, size: tuple[int, int] | None = None) -> None:
        self.images.setdefault(key, path)
        self.faces.setdefault(key, [])
        if size is not None:
            self.sizes[key] = size

    def add_face(self, key: str, face: Face) -> None:
        self.faces.setdefault(key, []).append(face)

    def note_rounding(self, file: Path, where, stated: str, *edges: float) -> None:
        """Count a box whose continuous ``edges`` (pixels) are not whole: reading rounds them."""
        if any(abs(v - nearest(v)) > ROUNDING_TOLERANCE for v in edges):
            self.changes.note("rounded", file, where, stated)

    def error(self, file: Path, where, message: str) -> None:
        self.problems.append(Problem(file, where, message))

    def warn(self, file: Path, where, message: str) -> None:
        self.problems.append(Problem(file, where, message, severity="warning"))

    def dataset(self) -> Dataset:
        """Records sorted like the course loader's (folder, then file name): training draws samples in this order."""
        records: list[ImageRecord] = []
        sizes: dict[Path, tuple[int, int] | None] = {}
        entries: dict[Path, list[AnnotationLine]] = {}
        labels_seen: set[str] = set()
        for key in sorted(self.images, key=lambda k: k.rpartition("/")[::2]):
            path = self.images[key]
            if not path.is_file():
                where = self.faces[key][0] if self.faces.get(key) else None
                self.error(where.file if where else path, where.where if where else None,
                           f"image {key} is referenced but absent ({path} not found); restore it or remove its annotations")
                continue
            size = self.sizes.get(key)
            if size is None:
                try:
                    size = image_size(path)
                except DataError as exc:
                    self.error(path, None, f"unreadable image ({exc}); re-export or remove it")
            sizes[path] = size
            lines = [AnnotationLine(f.file, f.where, key, f.box, f.label) for f in self.faces.get(key, [])]  # type: ignore[arg-type]
            entries[path] = lines
            boxes, written, labels, metas = [], [], [], []
            for face, line in zip(self.faces.get(key, []), lines):
                box = clip_box(line, size, self.changes)
                if box is not None:
                    boxes.append(box)
                    written.append(face.box)
                    labels.append(face.label)
                    metas.append(face.meta)
                    labels_seen.add(face.label)
            meta = tuple(metas) if any(metas) else ()
            records.append(ImageRecord.of(key, path, boxes, written, labels, meta))
        self.problems.extend(self.changes.problems())
        self.problems.extend(odd_size_problems(sizes, entries))
        characters = tuple(sorted(labels_seen - {UNKNOWN, FACE, ""}))
        return Dataset(self.name, records, self.problems, characters=characters)


def unsafe_key(key: str) -> str | None:
    """Why an image name from a file cannot be a key (absolute, a drive, or ``..``), else None."""
    posix = key.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "is an absolute path"
    if ".." in posix.split("/"):
        return "climbs out of its folder with '..'"
    return None


def image_files_under(folder: Path) -> list[Path]:
    """Every image file below ``folder`` (recursively), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def relative_key(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def choose_parts(candidates: list[tuple[str, object]], fmt: str, where: Path) -> tuple[dict[str, object], list[str]]:
    """Assign candidate parts (``(split name, source)``) to ``train`` / ``test``.

    A single part whose name says neither is the training part (``compare`` then holds out a split).
    Of several test-like parts, one named ``test`` wins over ``val``; the others are reported.
    Returns ``{role: source}`` and notes about parts left out.
    """
    if len(candidates) == 1 and split_role(candidates[0][0]) is None:
        return {TRAIN: candidates[0][1]}, []
    by_role: dict[str, list[tuple[str, object]]] = {TRAIN: [], TEST: []}
    unknown = []
    for name, source in candidates:
        role = split_role(name)
        (by_role[role] if role else unknown).append((name, source))
    if unknown:
        raise DataError(
            f"{where}: {fmt} parts {', '.join(n for n, _ in unknown)} are neither training nor test "
            f"(their names say neither train nor val/test); rename them, or keep one part"
        )
    if len(by_role[TRAIN]) > 1:
        raise DataError(f"{where}: several {fmt} training parts ({', '.join(n for n, _ in by_role[TRAIN])}); keep one")
    chosen: dict[str, object] = {}
    notes: list[str] = []
    if by_role[TRAIN]:
        chosen[TRAIN] = by_role[TRAIN][0][1]
    tests = sorted(by_role[TEST], key=lambda c: (split_role(c[0]) != TEST or "test" not in c[0].lower(), c[0]))
    if tests:
        chosen[TEST] = tests[0][1]
        notes = [f"{fmt} part {n} is not used (facecmp takes one test part: {tests[0][0]})" for n, _ in tests[1:]]
    return chosen, notes


def note_unused(parts: dict[str, Dataset], notes: list[str], root: Path) -> dict[str, Dataset]:
    """Add :func:`choose_parts`' notes (test-like parts left out) to the test part as warnings."""
    if notes and TEST in parts:
        parts[TEST].problems.extend(Problem(root, None, n, severity="warning") for n in notes)
    return parts


# ----------------------------------------------------------------------------- writing


def place_image(src: Path, out: Path, *parts: str, link: bool = True) -> None:
    """Hard-link ``src`` at ``out / parts`` (same bytes, no space), else copy it; refused outside ``out``."""
    dst = inside(out, *parts)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def sorted_labels(datasets: Iterable[Dataset | None]) -> list[str]:
    """The class names of every face, sorted (``face`` for a face without a character)."""
    return sorted({out_label(label) for ds in datasets if ds is not None for r in ds.images for label in r.labels})


def box_meta(record: ImageRecord, i: int) -> dict:
    return dict(record.meta[i]) if i < len(record.meta) else {}


def record_size(record: ImageRecord) -> tuple[int, int]:
    return image_size(record.path)


def no_duplicate_keys(parts: dict[str, Dataset], fmt: str) -> None:
    keys = [set(r.key for r in ds.images) for ds in parts.values()]
    if len(keys) == 2 and keys[0] & keys[1]:
        shared = sorted(keys[0] & keys[1])
        raise DataError(f"the training and test parts share image names ({', '.join(shared[:3])}); "
                        f"{fmt} keeps all images in one folder, so rename them first")
