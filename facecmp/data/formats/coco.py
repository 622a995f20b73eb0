"""COCO object-detection JSON (what CVAT, Label Studio, Roboflow and most tools export).

Read: every ``*.json`` at the root, in ``annotations/`` or one folder down whose top level has
``images``, ``annotations`` and ``categories``. A file is one part, named by its file name
(``instances_train2017.json`` -> train, ``instances_val2017.json`` -> test) or, for Roboflow's
``train/_annotations.coco.json``, by its folder. Images are looked up by ``file_name`` beside the
JSON, in ``images/``, in a folder named like the part (``train2017/``), or in ``../images/``.
``bbox`` is ``[x, y, w, h]`` in continuous pixels (see :mod:`facecmp.data.formats.common`); the
category's name is the face's character. ``iscrowd: 1`` regions are not faces (COCO's evaluator
ignores them too): they are skipped with one warning naming how many and the first. CVAT-style
``attributes`` are kept as per-face metadata.

Written: ``annotations/instances_train.json`` with images under ``train/``, ``instances_val.json``
with ``val/`` for the test part; ``file_name`` is the record key (``dad/0001.jpg``), so the
character folders survive and the course layout can be restored.
"""

from __future__ import annotations

import json
from pathlib import Path

from facecmp.atomic import inside, write_json
from facecmp.data.formats.common import (
    TEST,
    TRAIN,
    Face,
    PartReader,
    box_meta,
    choose_parts,
    continuous_to_inclusive,
    inclusive_to_xywh,
    note_unused,
    out_label,
    place_image,
    record_size,
    sorted_labels,
)
from facecmp.data.records import Dataset
from facecmp.errors import DataError

NAME = "coco"
PART_NAMES = {TRAIN: "train", TEST: "val"}


def _looks_like_coco(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        if b'"images"' not in head and b'"annotations"' not in head and b'"categories"' not in head:
            # keys may come late in big files: fall back to a full parse only for small ones
            if path.stat().st_size > 64 * 1024 * 1024:
                return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and all(k in data for k in ("images", "annotations", "categories"))


def find(root: Path) -> list[Path]:
    """The COCO JSON files of ``root`` (its evidence for format detection)."""
    folders = [root, root / "annotations", *sorted(p for p in root.iterdir() if p.is_dir() and p.name != "annotations")]
    found = []
    for folder in folders:
        if folder.is_dir():
            found.extend(p for p in sorted(folder.glob("*.json")) if _looks_like_coco(p))
    return found


def _part_name(path: Path, root: Path) -> str:
    stem = path.name.removesuffix(".json").removesuffix(".coco")
    if stem.strip("_").lower() in {"annotations", "result", "instances_default", "labels", "coco"} and path.parent != root:
        if path.parent.name != "annotations":
            return path.parent.name
    return stem


def _image_bases(json_path: Path, part: str, root: Path) -> list[Path]:
    here = json_path.parent
    up = here.parent if here.name == "annotations" else here
    split = part.removeprefix("instances_")
    return [here, here / "images", up / split, up / "images" / split, up / "images", up, root]


def _pick_base(bases: list[Path], names: list[str]) -> Path:
    sample = names[:20]
    best, best_hits = bases[0], -1
    for base in bases:
        hits = sum((base / n).is_file() for n in sample)
        if hits > best_hits:
            best, best_hits = base, hits
    return best


def read(root: Path) -> dict[str, Dataset]:
    files = find(root)
    chosen, notes = choose_parts([(_part_name(p, root), p) for p in files], "COCO", root)
    parts = {}
    for role, path in chosen.items():
        parts[role] = _read_file(path, _part_name(path, root), root)  # type: ignore[arg-type]
    return note_unused(parts, notes, root)


def _read_file(path: Path, part: str, root: Path) -> Dataset:
    reader = PartReader(f"{root.name}/{part}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        reader.error(path, None, f"not readable as COCO JSON ({exc}); re-export it")
        return reader.dataset()
    categories: dict[object, str] = {}
    for i, cat in enumerate(data.get("categories") or []):
        if not isinstance(cat, dict) or "id" not in cat or not str(cat.get("name", "")).strip():
            reader.error(path, f"categories[{i}]", "a category needs an `id` and a `name`")
            continue
        categories[cat["id"]] = str(cat["name"]).strip().replace(" ", "_")
    images: dict[object, str] = {}
    refused: set = set()  # ids of images refused above: their annotations go with them
    names = [str(im.get("file_name", "")) for im in data.get("images") or [] if isinstance(im, dict)]
    base = _pick_base(_image_bases(path, part, root), names)
    for i, im in enumerate(data.get("images") or []):
        if not isinstance(im, dict) or "id" not in im or not str(im.get("file_name", "")).strip():
            reader.error(path, f"images[{i}]", "an image needs an `id` and a `file_name`")
            continue
        key = str(im["file_name"]).replace("\\", "/").removeprefix("./")
        if not reader.accept_key(key, path, f"images[{i}] (id {im['id']})"):
            refused.add(im["id"])
            continue
        if im["id"] in images:
            reader.error(path, f"images[{i}] (id {im['id']})", f"image id {im['id']} is used twice")
            continue
        images[im["id"]] = key
        reader.add_image(key, base / key)
    crowd: list[str] = []
    for i, ann in enumerate(data.get("annotations") or []):
        where = f"annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            reader.error(path, where, "an annotation must be an object")
            continue
        if ann.get("iscrowd"):
            crowd.append(where)
            continue
        if ann.get("image_id") in refused:
            continue
        if ann.get("image_id") not in images:
            reader.error(path, where, f"image_id {ann.get('image_id')!r} is not among the file's images")
            continue
        if ann.get("category_id") not in categories:
            reader.error(path, where, f"category_id {ann.get('category_id')!r} is not defined in `categories` "
                         f"(defined: {', '.join(map(str, categories)) or 'none'})")
            continue
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            reader.error(path, where, f"bbox {bbox!r} is not four numbers [x, y, width, height]")
            continue
        if not all(map(_finite, (x, y, w, h))) or w < 0 or h < 0:
            reader.error(path, where, f"bbox {bbox!r} has a negative or non-finite width/height; "
                         "expected [x, y, width, height] with width, height >= 0")
            continue
        reader.note_rounding(path, where, f"bbox {bbox!r} of {images[ann['image_id']]}", x, y, x + w, y + h)
        meta = ann.get("attributes") if isinstance(ann.get("attributes"), dict) else {}
        reader.add_face(images[ann["image_id"]], Face(path, where, continuous_to_inclusive(x, y, w, h),
                                                      categories[ann["category_id"]], dict(meta)))
    if crowd:
        reader.warn(path, crowd[0], f"{len(crowd)} iscrowd region(s) skipped (not single faces; COCO's evaluator "
                    "ignores them too), the first here")
    return reader.dataset()


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def write(parts: dict[str, Dataset], out: Path, *, link: bool = True) -> list[Path]:
    names = sorted_labels(parts.values())
    cat_ids = {name: i + 1 for i, name in enumerate(names)}
    written = []
    ann_id = 0
    for role, ds in parts.items():
        split = PART_NAMES[role]
        images, annotations = [], []
        for image_id, record in enumerate(ds.images, start=1):
            width, height = record_size(record)
            images.append({"id": image_id, "file_name": record.key, "width": width, "height": height})
            place_image(record.path, out, split, record.key, link=link)
            for i, (box, label) in enumerate(zip(record.boxes_as_labelled, record.labels)):
                ann_id += 1
                x, y, w, h = inclusive_to_xywh(box)
                ann = {"id": ann_id, "image_id": image_id, "category_id": cat_ids[out_label(label)],
                       "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
                if box_meta(record, i):
                    ann["attributes"] = box_meta(record, i)
                annotations.append(ann)
        target = inside(out, "annotations", f"instances_{split}.json")
        write_json(target, {
            "info": {"description": f"{ds.name}, written by facecmp"},
            "images": images, "annotations": annotations,
            "categories": [{"id": cat_ids[n], "name": n, "supercategory": "face"} for n in names],
        })
        written.append(target)
    if not written:
        raise DataError("nothing to write: the dataset has no parts")
    return written
