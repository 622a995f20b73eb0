"""WIDER FACE: ``wider_face_split/wider_face_{train,val}_bbx_gt.txt`` + ``WIDER_{train,val}/images/``.

Each image is a block: its path (``0--Parade/0_Parade_marchingband_1_849.jpg``, the record key:
the event folder plays the course's character folder), the face count, then a line per face
``x y w h blur expression illumination invalid occlusion pose`` (continuous ``x, y, w, h``; see
:mod:`facecmp.data.formats.common`). A count of 0 is followed by one line of zeros. The six
attributes are kept as per-face metadata, ``invalid`` included: an invalid face stays a face (the
WIDER evaluation ignores, not deletes, it) with ``meta["invalid"] == 1``. Faces are class ``face``.
"""

from __future__ import annotations

from pathlib import Path

from facecmp.atomic import inside, write_text
from facecmp.data.formats.common import (
    TEST,
    TRAIN,
    Face,
    PartReader,
    box_meta,
    choose_parts,
    continuous_to_inclusive,
    inclusive_to_xywh,
    no_duplicate_keys,
    note_unused,
    place_image,
)
from facecmp.data.records import Dataset

NAME = "wider"
PART_NAMES = {TRAIN: "train", TEST: "val"}
ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
PATTERN = "wider_face_*_bbx_gt.txt"


def find(root: Path) -> list[Path]:
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    return [p for folder in folders for p in sorted(folder.glob(PATTERN))]


def _split(gt: Path) -> str:
    return gt.name.removeprefix("wider_face_").removesuffix("_bbx_gt.txt")


def _images_dir(gt: Path, root: Path, split: str) -> Path:
    for base in (gt.parent.parent, root, gt.parent):
        for name in (f"WIDER_{split}", f"wider_{split}"):
            if (base / name / "images").is_dir():
                return base / name / "images"
    return root / f"WIDER_{split}" / "images"


def read(root: Path) -> dict[str, Dataset]:
    chosen, notes = choose_parts([(_split(p), p) for p in find(root)], "WIDER FACE", root)
    parts = {}
    for role, gt in chosen.items():
        split = _split(gt)  # type: ignore[arg-type]
        parts[role] = _read_file(gt, _images_dir(gt, root, split), f"{root.name}/{split}")  # type: ignore[arg-type]
    return note_unused(parts, notes, root)


def _read_file(gt: Path, images: Path, name: str) -> Dataset:
    reader = PartReader(name)
    lines = gt.read_text(encoding="utf-8", errors="replace").splitlines()
    i = 0
    while i < len(lines):
        key = lines[i].strip()
        i += 1
        if not key:
            continue
        if len(key.split()) != 1 or "." not in key:
            reader.error(gt, i, f"{key!r} is not an image path; expected blocks of `IMAGE_PATH`, `N`, then N lines "
                         "`x y w h blur expression illumination invalid occlusion pose`")
            continue
        accepted = reader.accept_key(key, gt, i)
        if accepted:
            reader.add_image(key, images / key)
        try:
            count = int(lines[i].strip()) if i < len(lines) else -1
        except ValueError:
            count = -1
        if count < 0:
            reader.error(gt, i + 1, f"expected the face count of {key} (a whole number)")
            continue
        i += 1
        if count == 0 and i < len(lines) and lines[i].split() == ["0"] * 10:
            i += 1  # the zeros line that stands for "no faces"
        for _ in range(count):
            number = i + 1
            fields = lines[i].split() if i < len(lines) else []
            i += 1
            if len(fields) < 4:
                reader.error(gt, number, f"{len(fields)} columns; expected `x y w h` and the six attributes")
                continue
            try:
                x, y, w, h = (float(v) for v in fields[:4])
                attrs = [int(v) for v in fields[4:10]]
            except ValueError:
                reader.error(gt, number, f"non-numeric value in {' '.join(fields)!r}")
                continue
            if w < 0 or h < 0:
                reader.error(gt, number, f"box {fields[:4]} has a negative width or height")
                continue
            meta = {k: v for k, v in zip(ATTRIBUTES, attrs) if v}
            reader.note_rounding(gt, number, f"box {' '.join(fields[:4])} of {key}", x, y, x + w, y + h)
            if accepted:
                reader.add_face(key, Face(gt, number, continuous_to_inclusive(x, y, w, h), "face", meta))
    return reader.dataset()


def write(parts: dict[str, Dataset], out: Path, *, link: bool = True) -> list[Path]:
    no_duplicate_keys(parts, "WIDER FACE")
    written = []
    for role, ds in parts.items():
        split = PART_NAMES[role]
        rows = []
        for record in ds.images:
            place_image(record.path, out, f"WIDER_{split}", "images", record.key, link=link)
            rows += [record.key, str(len(record.boxes))]
            for i, box in enumerate(record.boxes_as_labelled):
                meta = box_meta(record, i)
                rows.append(" ".join(str(v) for v in [*inclusive_to_xywh(box), *(int(meta.get(k, 0)) for k in ATTRIBUTES)]))
            if not len(record.boxes):
                rows.append(" ".join(["0"] * 10))
        target = inside(out, "wider_face_split", f"wider_face_{split}_bbx_gt.txt")
        write_text(target, "\n".join(rows) + "\n")
        written.append(target)
    return written
