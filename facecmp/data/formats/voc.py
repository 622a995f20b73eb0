"""Pascal VOC: one ``Annotations/<id>.xml`` per image, images in ``JPEGImages/``.

Read: a folder holding ``Annotations/`` (the root, or one folder down as in ``VOCdevkit/VOC2012``).
Each XML is an image: ``<filename>`` in ``JPEGImages/`` (at the XML's sub-path, so
``Annotations/dad/0001.xml`` is the image ``dad/0001.jpg``), else ``<path>``, else beside the XML.
``<object>``s with ``<name>`` and ``<bndbox>`` (``xmin ymin xmax ymax``, 1-based inclusive pixels:
see :mod:`facecmp.data.formats.common`) are faces; ``difficult``, ``truncated`` and ``occluded``
are kept as per-face metadata. Parts come from ``ImageSets/Main/{train,val,test}.txt`` when
present (ids, one a line), else every XML is the training part.

Written: ``Annotations/<key>.xml``, ``JPEGImages/<key>``, ``ImageSets/Main/train.txt`` and
``val.txt`` (the test part).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from facecmp.atomic import inside, is_within, write_text
from facecmp.data.formats.common import (
    TEST,
    TRAIN,
    Face,
    PartReader,
    box_meta,
    choose_parts,
    nearest,
    no_duplicate_keys,
    note_unused,
    out_label,
    place_image,
    record_size,
)
from facecmp.data.records import Dataset, Problem

NAME = "voc"
PART_NAMES = {TRAIN: "train", TEST: "val"}
FLAGS = ("difficult", "truncated", "occluded")


def find(root: Path) -> list[Path]:
    """``Annotations/`` folders holding XML files, at the root or one folder down."""
    candidates = [root / "Annotations"] + [p / "Annotations" for p in sorted(root.iterdir()) if p.is_dir()]
    return [c for c in candidates if c.is_dir() and next(c.rglob("*.xml"), None) is not None]


def read(root: Path) -> dict[str, Dataset]:
    ann_dir = find(root)[0]
    base = ann_dir.parent
    xmls = sorted(ann_dir.rglob("*.xml"))
    by_id = {p.relative_to(ann_dir).with_suffix("").as_posix(): p for p in xmls}
    sets = base / "ImageSets" / "Main"
    lists = sorted(p for p in sets.glob("*.txt") if p.stem in ("train", "val", "test", "trainval")) if sets.is_dir() else []
    if not lists:
        return {TRAIN: _read_part(f"{root.name}/{base.name}", list(by_id.items()), base, ann_dir, [])}
    if any(p.stem == "train" for p in lists):
        lists = [p for p in lists if p.stem != "trainval"]  # trainval = train + val
    chosen, notes = choose_parts([(p.stem, p) for p in lists], "VOC", root)
    parts = {}
    for role, list_file in chosen.items():
        problems = []
        items = []
        for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):  # type: ignore[union-attr]
            image_id = line.split()[0] if line.split() else ""
            if not image_id:
                continue
            if image_id not in by_id:
                problems.append(Problem(list_file, number, f"image id {image_id} has no {ann_dir.name}/{image_id}.xml"))  # type: ignore[arg-type]
                continue
            items.append((image_id, by_id[image_id]))
        parts[role] = _read_part(f"{root.name}/{list_file.stem}", items, base, ann_dir, problems)  # type: ignore[union-attr]
    return note_unused(parts, notes, root)


def _read_part(name: str, items, base: Path, ann_dir: Path, problems) -> Dataset:
    reader = PartReader(name, problems=list(problems))
    for image_id, xml in items:
        try:
            tree = ET.parse(xml)
        except (ET.ParseError, OSError) as exc:
            reader.error(xml, None, f"XML does not parse ({exc}); re-export it")
            continue
        ann = tree.getroot()
        filename = (ann.findtext("filename") or "").strip() or Path(image_id).name + ".jpg"
        if not reader.accept_key(filename, xml, "<filename>"):
            continue
        sub = Path(image_id).parent
        key = (sub / Path(filename).name).as_posix() if str(sub) != "." else Path(filename).name
        path = base / "JPEGImages" / key
        if not path.is_file():
            stated = (ann.findtext("path") or "").strip()
            for alt in ([Path(stated)] if stated else []) + [xml.parent / Path(filename).name]:
                if alt.is_file():
                    path = alt
                    break
            if stated and path == Path(stated) and not is_within(path, base):
                reader.error(xml, "<path>", f"image path {stated!r} lies outside the dataset folder {base}; facecmp "
                             "reads images inside the dataset only: put the image in JPEGImages/")
                continue
        reader.add_image(key, path)
        for k, obj in enumerate(ann.findall("object"), start=1):
            where = f"object {k}"
            label = (obj.findtext("name") or "").strip().replace(" ", "_")
            bnd = obj.find("bndbox")
            if not label or bnd is None:
                reader.error(xml, where, "an object needs a <name> and a <bndbox>")
                continue
            try:
                xmin, ymin, xmax, ymax = (float(bnd.findtext(t) or "nan") for t in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError:
                reader.error(xml, where, "<bndbox> needs numeric <xmin> <ymin> <xmax> <ymax>")
                continue
            if not all(v == v for v in (xmin, ymin, xmax, ymax)):
                reader.error(xml, where, "<bndbox> needs numeric <xmin> <ymin> <xmax> <ymax>")
                continue
            if xmax < xmin or ymax < ymin:
                reader.error(xml, where, f"box xmin {xmin:g} xmax {xmax:g} ymin {ymin:g} ymax {ymax:g} has a negative "
                             "width or height; expected xmax >= xmin and ymax >= ymin")
                continue
            reader.note_rounding(xml, where, f"<bndbox> {xmin:g} {ymin:g} {xmax:g} {ymax:g} of {key}", xmin, ymin, xmax, ymax)
            box = tuple(nearest(v) - 1 for v in (xmin, ymin, xmax, ymax))
            meta = {}
            for flag in FLAGS:
                text = (obj.findtext(flag) or "").strip()
                if text not in ("", "0"):
                    meta[flag] = int(text) if text.isdigit() else text
            reader.add_face(key, Face(xml, where, box, label, meta))  # type: ignore[arg-type]
    return reader.dataset()


def _xml(record, size) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = Path(record.key).name
    s = ET.SubElement(root, "size")
    for tag, v in zip(("width", "height", "depth"), (*size, 3)):
        ET.SubElement(s, tag).text = str(v)
    for i, (box, label) in enumerate(zip(record.boxes_as_labelled, record.labels)):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = out_label(label)
        meta = box_meta(record, i)
        for flag in FLAGS:
            ET.SubElement(obj, flag).text = str(meta.pop(flag, 0))
        bnd = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bnd, tag).text = str(int(v) + 1)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write(parts: dict[str, Dataset], out: Path, *, link: bool = True) -> list[Path]:
    no_duplicate_keys(parts, "VOC")
    written = []
    for role, ds in parts.items():
        ids = []
        for record in ds.images:
            stem = Path(record.key).with_suffix("").as_posix()
            write_text(inside(out, "Annotations", f"{stem}.xml"), _xml(record, record_size(record)))
            place_image(record.path, out, "JPEGImages", record.key, link=link)
            ids.append(stem)
        target = inside(out, "ImageSets", "Main", f"{PART_NAMES[role]}.txt")
        write_text(target, "".join(f"{i}\n" for i in ids))
        written.append(target)
    return written
