"""YOLO txt labels (Ultralytics, Roboflow, CVAT's "YOLO 1.1").

One ``.txt`` per image, a line per face: ``CLASS CX CY W H``, the class an index into the names,
the box normalised by the image size to [0, 1] (continuous: see :mod:`facecmp.data.formats.common`).
An image without a label file has no faces. The labels of ``.../images/<sub>/x.jpg`` are in
``.../labels/<sub>/x.txt`` (Ultralytics' rule), or beside the image.

Read: a ``data.yaml`` (``train:`` / ``val:`` / ``test:`` image folders, relative to ``path:`` or the
YAML's folder; ``names:`` a list or ``{index: name}``; needs PyYAML: ``pip install 'facecmp[yolo]'``),
at the root or one folder down; or a ``classes.txt`` (one name a line) with ``images/`` (one
folder per part, or the images directly) and ``labels/`` beside it, or images and labels together.

Written: ``data.yaml``, ``images/train/<key>``, ``labels/train/<key stem>.txt``, ``images/val`` and
``labels/val`` for the test part.
"""

from __future__ import annotations

import json
from pathlib import Path

from facecmp.atomic import inside, is_within, write_text
from facecmp.data.formats.common import (
    TEST,
    TRAIN,
    Face,
    PartReader,
    choose_parts,
    image_files_under,
    nearest,
    note_unused,
    out_label,
    place_image,
    record_size,
    relative_key,
    sorted_labels,
)
from facecmp.data.annotations import BoxChanges
from facecmp.data.images import image_size
from facecmp.data.records import Dataset
from facecmp.errors import DataError

NAME = "yolo"
PART_NAMES = {TRAIN: "train", TEST: "val"}
INSTALL = "pip install 'facecmp[yolo]' (PyYAML)"


def _yaml_files(root: Path) -> list[Path]:
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    found = []
    for folder in folders:
        for p in sorted(folder.glob("*.y*ml")):
            try:
                text = p.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if "names" in text and any(k in text for k in ("train", "val", "test")):
                found.append(p)
    return found


def find(root: Path) -> list[Path]:
    """``data.yaml`` files, else a ``classes.txt`` at the root."""
    found = _yaml_files(root)
    if not found and (root / "classes.txt").is_file():
        found = [root / "classes.txt"]
    return found


def _load_yaml(path: Path) -> dict:
    try:
        import yaml
    except ImportError:
        raise DataError(f"{path}: reading a YOLO data.yaml needs PyYAML: {INSTALL}") from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: YAML does not parse ({str(exc).splitlines()[0]}); fix or re-export it") from None
    if not isinstance(data, dict) or "names" not in data:
        raise DataError(f"{path}: a YOLO data.yaml needs `names:` (the class names) and `train:` / `val:` image folders")
    return data


def _names(raw, where: Path) -> list[str]:
    if isinstance(raw, dict):
        try:
            ordered = [raw[k] for k in sorted(raw, key=int)]
        except (TypeError, ValueError):
            raise DataError(f"{where}: `names:` keys must be the class indices 0, 1, ...") from None
        raw = ordered
    if not isinstance(raw, list):
        raise DataError(f"{where}: `names:` must be a list of class names (or {{index: name}})")
    return [str(n).strip().replace(" ", "_") for n in raw]


def read(root: Path) -> dict[str, Dataset]:
    source = find(root)
    if len(source) > 1:
        raise DataError(f"{root}: several YOLO dataset files ({', '.join(str(p) for p in source)}); keep one")
    source = source[0]
    base = source.parent
    if source.name == "classes.txt":
        names = [line.strip().replace(" ", "_") for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        images = root / "images"
        if images.is_dir():
            subs = sorted(p for p in images.iterdir() if p.is_dir())
            candidates = [(p.name, p) for p in subs] if subs and not any(f.is_file() for f in images.iterdir()) else [("images", images)]
        else:
            candidates = [("images", root)]
    else:
        data = _load_yaml(source)
        names = _names(data["names"], source)
        if data.get("path"):
            stated = Path(str(data["path"]))
            base = stated if stated.is_absolute() else (source.parent / stated)
            if not base.is_dir():
                base = source.parent
        candidates = []
        for split in ("train", "val", "test"):
            value = data.get(split)
            if not value:
                continue
            if isinstance(value, list):
                if len(value) != 1:
                    raise DataError(f"{source}: `{split}:` lists several folders; facecmp reads one folder per part")
                value = value[0]
            folder = (base / str(value)) if not Path(str(value)).is_absolute() else Path(str(value))
            if not folder.is_dir():
                folder = source.parent / str(value)
            if not folder.is_dir():
                raise DataError(f"{source}: `{split}: {value}` is not a folder of images (looked in {base}); "
                                "facecmp reads image folders, not image lists")
            if not is_within(folder, root):
                raise DataError(f"{source}: `{split}: {value}` lies outside the dataset folder {root} (it resolves to "
                                f"{folder.resolve()}); facecmp reads images inside the dataset only: move them in, or "
                                "pass the folder that holds them as --data")
            candidates.append((split, folder))
        if not candidates:
            raise DataError(f"{source}: no `train:`, `val:` or `test:` image folder given")
    chosen, notes = choose_parts(candidates, "YOLO", root)
    parts = {}
    for role, folder in chosen.items():
        parts[role] = _read_part(f"{root.name}/{Path(folder).name}", Path(folder), names, source, base)  # type: ignore[arg-type]
    return note_unused(parts, notes, root)


def label_path(image: Path, base: Path) -> Path:
    """Ultralytics' rule below ``base``: ``images/`` -> ``labels/`` (the last one), suffix -> ``.txt``;
    else beside the image."""
    parts = image.relative_to(base).parts
    if "images" in parts[:-1]:
        i = len(parts) - 2 - parts[-2::-1].index("images")
        return Path(base, *parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")
    return image.with_suffix(".txt")


def _read_part(name: str, folder: Path, names: list[str], source: Path, base: Path) -> Dataset:
    reader = PartReader(name)
    if not folder.is_relative_to(base):
        base = folder.parent
    images = image_files_under(folder)
    seen_labels = set()
    for path in images:
        key = relative_key(path, folder)
        reader.add_image(key, path)
        txt = label_path(path, base)
        seen_labels.add(txt)
        if not txt.is_file():
            continue
        try:
            width, height = image_size(path)
        except DataError as exc:
            reader.error(path, None, f"unreadable image ({exc}); re-export or remove it")
            continue
        reader.sizes[key] = (width, height)
        for number, raw in enumerate(txt.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            fields = raw.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 5:
                reader.error(txt, number, f"{len(fields)} columns in {raw.strip()!r}; expected `CLASS CX CY W H` "
                             "(segments and keypoints are not read)")
                continue
            try:
                cls = int(fields[0])
                cx, cy, w, h = (float(v) for v in fields[1:])
            except ValueError:
                reader.error(txt, number, f"{raw.strip()!r} is not `CLASS CX CY W H` (an integer class, four numbers)")
                continue
            if not 0 <= cls < len(names):
                reader.error(txt, number, f"class {cls} is not defined in {source.name} "
                             f"({len(names)} names: 0..{len(names) - 1})")
                continue
            if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
                reader.error(txt, number, f"coordinates {fields[1:]} outside [0, 1]; YOLO boxes are normalised by "
                             f"the image size ({width}x{height})")
                continue
            edges = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            reader.note_rounding(txt, number, f"{raw.strip()!r} ({width}x{height}) of {key}", *edges)
            x0, y0, x1, y1 = nearest(edges[0]), nearest(edges[1]), nearest(edges[2]) - 1, nearest(edges[3]) - 1
            reader.add_face(key, Face(txt, number, (x0, y0, x1, y1), names[cls]))
    # label files without an image
    labels_root = label_path(folder / "x.jpg", base).parent
    if labels_root != folder and labels_root.is_dir():
        for txt in sorted(labels_root.rglob("*.txt")):
            if txt not in seen_labels and txt.name != "classes.txt":
                reader.error(txt, None, f"label file without its image (no image {txt.stem}.* in "
                             f"{folder / txt.parent.relative_to(labels_root)}); restore the image or remove the file")
    return reader.dataset()


def _normalised(box, width: int, height: int) -> tuple[float, float, float, float]:
    """Inclusive pixels -> YOLO's ``CX CY W H`` normalised by the image size."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return (x0 + x1 + 1) / 2 / width, (y0 + y1 + 1) / 2 / height, (x1 - x0 + 1) / width, (y1 - y0 + 1) / height


def write(parts: dict[str, Dataset], out: Path, *, link: bool = True) -> list[Path]:
    names = sorted_labels(parts.values())
    index = {n: i for i, n in enumerate(names)}
    lines_yaml = ["# YOLO dataset written by facecmp (paths relative to this file's folder)"]
    for role, ds in parts.items():
        split = PART_NAMES[role]
        lines_yaml.append(f"{split}: images/{split}")
        changes = BoxChanges()
        for record in ds.images:
            width, height = record_size(record)
            place_image(record.path, out, "images", split, record.key, link=link)
            rows = []
            for box, clipped, label in zip(record.boxes_as_labelled, record.boxes, record.labels):
                values = _normalised(box, width, height)
                if not all(0.0 <= v <= 1.0 for v in values):  # YOLO cannot state it: the clipped box, counted
                    changes.note("yolo_range", record.path, None, f"box {list(map(int, box))} of {record.key} ({width}x{height})")
                    values = _normalised(clipped, width, height)
                rows.append(f"{index[out_label(label)]} " + " ".join(f"{v:.8f}" for v in values) + "\n")
            write_text(inside(out, "labels", split, Path(record.key).with_suffix(".txt")), "".join(rows))
        ds.problems.extend(changes.problems())  # convert reports them with the part's own warnings
    lines_yaml += [f"nc: {len(names)}", f"names: {json.dumps(names)}", ""]
    write_text(inside(out, "data.yaml"), "\n".join(lines_yaml))
    return [out / "data.yaml"]
