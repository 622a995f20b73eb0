"""Labelling formats: round trips (hypothesis), pixel conventions, detection, bad input, the CLI, real data."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facecmp.data import ImageRecord, load_archive
from facecmp.data.archive import FORMATS, find_formats, read_parts, resolve_format
from facecmp.data.convert import convert
from facecmp.data.formats import coco, course, voc, wider, yolo
from facecmp.data.formats.common import FACE, TEST, TRAIN, continuous_to_inclusive, inclusive_to_xywh, split_role
from facecmp.data.records import Dataset
from facecmp.data.synthetic import generate_dataset
from facecmp.errors import DataError
from tests.test_cli import assert_user_error, run_cli

WRITERS = {"course": course, "coco": coco, "voc": voc, "yolo": yolo, "wider": wider}
# WIDER FACE has no classes: its faces read back as "face".
WITH_CLASSES = ("course", "coco", "voc", "yolo")


# ----------------------------------------------------------------------------- helpers


def label(text: str) -> str:
    """'' (a face without a character, the course's 5-column files) is written as 'face' elsewhere."""
    return text or FACE


def records_of(ds: Dataset | None) -> list[tuple]:
    if ds is None:
        return []
    return [(r.key, r.boxes.tolist(), [label(x) for x in r.labels]) for r in ds.images]


def boxes_of(ds: Dataset | None) -> list[tuple]:
    return [(k, b) for k, b, _ in records_of(ds)]


def assert_same_records(a, b, *, labels: bool = True) -> None:
    for part in ("train", "test"):
        pa, pb = getattr(a, part), getattr(b, part)
        assert (pa is None) == (pb is None), part
        if labels:
            assert records_of(pa) == records_of(pb), part
        else:
            assert boxes_of(pa) == boxes_of(pb), part
        if pa is not None:
            for ra, rb in zip(pa.images, pb.images):
                assert os.path.samefile(ra.path, rb.path) or Path(ra.path).read_bytes() == Path(rb.path).read_bytes(), ra.key


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("formats") / "ds", n_train_per_character=3, n_test=4, seed=0)


@pytest.fixture(scope="module")
def converted(dataset, tmp_path_factory) -> dict[str, Path]:
    """The generated dataset converted to every format (images hard-linked)."""
    base = tmp_path_factory.mktemp("converted")
    return {fmt: convert(dataset, fmt, base / fmt).out for fmt in FORMATS}


# ----------------------------------------------------------------------------- pixel conventions


@given(st.integers(-50, 5000), st.integers(-50, 5000), st.integers(1, 3000), st.integers(1, 3000))
def test_integer_boxes_round_trip_exactly_between_inclusive_and_continuous(x, y, w, h):
    box = continuous_to_inclusive(x, y, w, h)
    assert box == (x, y, x + w - 1, y + h - 1)  # the course's width is x_max - x_min + 1
    assert inclusive_to_xywh(box) == [x, y, w, h]


@given(st.floats(0, 4000), st.floats(0, 4000), st.floats(0, 2000), st.floats(0, 2000))
def test_fractional_boxes_move_at_most_half_a_pixel_per_edge(x, y, w, h):
    x0, y0, x1, y1 = continuous_to_inclusive(x, y, w, h)
    assert abs(x0 - x) <= 0.5 and abs(y0 - y) <= 0.5
    assert abs((x1 + 1) - (x + w)) <= 0.5 and abs((y1 + 1) - (y + h)) <= 0.5


@pytest.mark.parametrize(
    "name, role",
    [("instances_train2017", "train"), ("instances_val2017", "test"), ("valid", "test"), ("test", "test"),
     ("wider_face_train_bbx_gt", "train"), ("antrenare", "train"), ("instances_default", None), ("images", None)],
)
def test_split_names(name, role):
    assert split_role(name) == role


# ----------------------------------------------------------------------------- round trips (hypothesis)


def _image(path: Path, size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 128).save(path)
    return path


@st.composite
def part(draw, *, folders: bool):
    """A part of a dataset: images of random sizes, each with inclusive boxes that fit (and keep area)."""
    n = draw(st.integers(1, 4))
    images = []
    for i in range(n):
        w, h = draw(st.integers(8, 700)), draw(st.integers(8, 500))
        faces = []
        for _ in range(draw(st.integers(0, 4))):
            x0, y0 = draw(st.integers(0, w - 2)), draw(st.integers(0, h - 2))
            x1, y1 = draw(st.integers(x0 + 1, w - 1)), draw(st.integers(y0 + 1, h - 1))
            faces.append(((x0, y0, x1, y1), draw(st.sampled_from(["", "ada", "bo", "unknown", "Dee_Dee"]))))
        folder = draw(st.sampled_from(["ada", "bo", "x-1"])) + "/" if folders else ""
        suffix = draw(st.sampled_from([".png", ".jpg"]))
        images.append((f"{folder}{i:04d}{suffix}", (w, h), faces))
    return images


def _dataset(where: Path, name: str, images) -> Dataset:
    records = []
    for key, size, faces in images:
        path = _image(where / name / key, size)
        boxes = np.array([b for b, _ in faces], dtype=np.int64).reshape(-1, 4)
        records.append(ImageRecord(key, path, boxes, tuple(lab for _, lab in faces)))
    records.sort(key=lambda r: r.key.rpartition("/")[::2])
    return Dataset(name, records)


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(train=part(folders=True), test=st.one_of(st.none(), part(folders=False)))
def test_write_then_read_gives_the_same_records(fmt, train, test):
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        parts = {TRAIN: _dataset(src, "train", train)}
        if test is not None:
            parts[TEST] = _dataset(src, "test", test)
        out = Path(tmp) / "out"
        WRITERS[fmt].write(parts, out)
        assert resolve_format(out) == fmt
        found, back = read_parts(out)
        assert set(back) == set(parts)
        for role, ds in parts.items():
            assert not [p for p in back[role].problems], back[role].problems
            if fmt in WITH_CLASSES:
                assert records_of(back[role]) == records_of(ds)
            else:
                assert boxes_of(back[role]) == boxes_of(ds)
                assert all(set(r.labels) <= {FACE} for r in back[role].images)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "course"])
def test_convert_to_each_format_and_back_to_the_course_layout(fmt, dataset, converted, tmp_path):
    original = load_archive(dataset)
    assert_same_records(original, load_archive(converted[fmt]), labels=fmt in WITH_CLASSES)
    back = convert(converted[fmt], "course", tmp_path / "back")
    restored = load_archive(back.out)
    assert_same_records(original, restored, labels=fmt in WITH_CLASSES)
    # the character folders and their annotation files come back from the image paths
    train = back.out / "antrenare"
    assert sorted(p.name for p in train.glob("*_annotations.txt")) == sorted(
        p.name for p in (dataset / "antrenare").glob("*_annotations.txt"))
    if fmt in WITH_CLASSES:
        for ann in (dataset / "antrenare").glob("*_annotations.txt"):
            assert (train / ann.name).read_text().split() == ann.read_text().split()


def test_images_are_hard_linked_unless_copied(dataset, converted, tmp_path):
    original = load_archive(dataset).train.images[0]
    linked = next(r for r in load_archive(converted["coco"]).train.images if r.key == original.key)
    assert Path(linked.path).stat().st_ino == Path(original.path).stat().st_ino
    copied = convert(dataset, "coco", tmp_path / "copy", link=False)
    record = next(r for r in load_archive(copied.out).train.images if r.key == original.key)
    assert Path(record.path).stat().st_ino != Path(original.path).stat().st_ino
    assert Path(record.path).read_bytes() == Path(original.path).read_bytes()


def test_coco_output_is_plain_coco(converted):
    data = json.loads((converted["coco"] / "annotations" / "instances_train.json").read_text())
    assert {c["name"] for c in data["categories"]} == {"ada", "bo", "cy", "dot", "unknown"}
    ann = data["annotations"][0]
    image = next(im for im in data["images"] if im["id"] == ann["image_id"])
    record = next(r for r in load_archive(converted["course"]).train.images if r.key == image["file_name"])
    x0, y0, x1, y1 = record.boxes[0].tolist()
    assert ann["bbox"] == [x0, y0, x1 - x0 + 1, y1 - y0 + 1] and ann["area"] == (x1 - x0 + 1) * (y1 - y0 + 1)


def test_yolo_coordinates_are_normalised_continuous(converted):
    record = load_archive(converted["course"]).train.images[0]
    x0, y0, x1, y1 = record.boxes[0].tolist()
    w, h = Image.open(record.path).size
    stem = Path(record.key).with_suffix(".txt")
    cls, cx, cy, bw, bh = (converted["yolo"] / "labels" / "train" / stem).read_text().splitlines()[0].split()
    assert float(cx) == pytest.approx((x0 + x1 + 1) / 2 / w) and float(bw) == pytest.approx((x1 - x0 + 1) / w)
    names = (converted["yolo"] / "data.yaml").read_text()
    assert "names:" in names and "train: images/train" in names


def test_voc_boxes_are_one_based(converted):
    record = load_archive(converted["course"]).train.images[0]
    xml = (converted["voc"] / "Annotations" / Path(record.key).with_suffix(".xml")).read_text()
    assert f"<xmin>{record.boxes[0][0] + 1}</xmin>" in xml and f"<xmax>{record.boxes[0][2] + 1}</xmax>" in xml


# ----------------------------------------------------------------------------- reading what tools export


def test_roboflow_style_coco_parts_in_folders(dataset, tmp_path):
    """``train/_annotations.coco.json`` with images beside it, ``valid/`` and ``test/`` likewise."""
    written = convert(dataset, "coco", tmp_path / "c").out
    root = tmp_path / "roboflow"
    for split, name in (("train", "train"), ("valid", "val"), ("test", "val")):
        data = json.loads((written / "annotations" / f"instances_{name}.json").read_text())
        (root / split).mkdir(parents=True)
        for im in data["images"]:
            target = root / split / im["file_name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.hardlink_to(written / name / im["file_name"])
        (root / split / "_annotations.coco.json").write_text(json.dumps(data))
    archive = load_archive(root)
    original = load_archive(dataset)
    assert records_of(archive.train) == records_of(original.train)
    assert records_of(archive.test) == records_of(original.test)
    assert any("valid is not used" in p.message for p in read_parts(root)[1][TEST].problems)


def test_yolo_with_classes_txt_and_no_yaml(tmp_path):
    _image(tmp_path / "images" / "a.jpg", (100, 50))
    _image(tmp_path / "images" / "b.jpg", (100, 50))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n")
    (tmp_path / "classes.txt").write_text("dog\ncat\n")
    train = load_archive(tmp_path).train
    assert [(r.key, r.boxes.tolist(), r.labels) for r in train.images] == [
        ("a.jpg", [[40, 15, 59, 34]], ("cat",)), ("b.jpg", [], ())]


def test_wider_attributes_and_invalid_faces_are_kept(tmp_path):
    _image(tmp_path / "WIDER_train" / "images" / "0--Parade" / "a.jpg", (200, 100))
    _image(tmp_path / "WIDER_train" / "images" / "0--Parade" / "b.jpg", (200, 100))
    split = tmp_path / "wider_face_split"
    split.mkdir()
    (split / "wider_face_train_bbx_gt.txt").write_text(
        "0--Parade/a.jpg\n2\n10 20 30 40 2 0 1 0 1 0 \n50 20 10 12 0 0 0 1 0 0 \n0--Parade/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n")
    train = load_archive(tmp_path).train
    a, b = train.images
    assert a.boxes.tolist() == [[10, 20, 39, 59], [50, 20, 59, 31]] and a.labels == ("face", "face")
    assert a.meta == ({"blur": 2, "illumination": 1, "occlusion": 1}, {"invalid": 1})
    assert len(b.boxes) == 0
    out = convert(tmp_path, "coco", tmp_path.parent / "wider_coco").out
    again = convert(out, "wider", tmp_path.parent / "wider_again").out
    assert (again / "wider_face_split" / "wider_face_train_bbx_gt.txt").read_text().split() == \
        (split / "wider_face_train_bbx_gt.txt").read_text().split()


def test_voc_difficult_is_kept_and_image_sets_give_the_parts(dataset, converted):
    xml = sorted((converted["voc"] / "Annotations").glob("*/*.xml"))[0]  # a training image
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    try:
        train = load_archive(converted["voc"]).train
        key = xml.relative_to(converted["voc"] / "Annotations").with_suffix(".jpg").as_posix()
        assert next(r for r in train.images if r.key == key).meta[0] == {"difficult": 1}
    finally:
        xml.write_text(xml.read_text().replace("<difficult>1</difficult>", "<difficult>0</difficult>", 1))


# ----------------------------------------------------------------------------- bad input


def _coco(tmp_path: Path, annotations, categories=({"id": 1, "name": "ada"},), images=None) -> Path:
    root = tmp_path / "coco"
    _image(root / "train" / "a.jpg", (100, 80))
    images = images or [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": list(categories)}))
    return root


def _ann(i, bbox, cat=1, image=1, **extra):
    return {"id": i, "image_id": image, "category_id": cat, "bbox": bbox, **extra}


def test_every_coco_problem_is_listed_at_once_with_file_and_object(tmp_path):
    root = _coco(tmp_path, [_ann(1, [10, 10, -5, 20]), _ann(2, [10, 10, 20, 20], cat=9), _ann(3, [1, 1, 5, 5], image=7),
                            _ann(4, [10, 10, 20, 20])],
                 images=[{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "gone.jpg"}])
    with pytest.raises(DataError) as info:
        load_archive(root)
    message = str(info.value)
    assert "4 error(s)" in message
    assert "instances_train.json:annotations[0] (id 1)" in message and "negative" in message
    assert "annotations[1] (id 2)" in message and "category_id 9 is not defined" in message
    assert "annotations[2] (id 3)" in message and "image_id 7" in message
    assert "gone.jpg is referenced but absent" in message


def test_coco_box_outside_the_image_is_clipped_with_a_warning(tmp_path):
    root = _coco(tmp_path, [_ann(1, [90, 70, 30, 30]), _ann(2, [0, 0, 5, 5], iscrowd=1)])
    train = load_archive(root).train
    assert train.images[0].boxes.tolist() == [[90, 70, 99, 79]]
    warnings = [str(p) for p in train.problems]
    assert any("annotations[0] (id 1)" in w and "clipped" in w for w in warnings)
    assert any("1 iscrowd region(s) skipped" in w and "annotations[1]" in w for w in warnings)
    with pytest.raises(DataError, match="strict"):
        load_archive(root, strict=True)


def test_yolo_bad_lines_name_the_file_and_line(tmp_path):
    _image(tmp_path / "images" / "train" / "a.jpg", (100, 50))
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 1.2 0.2\n3 0.5 0.5 0.1 0.1\n0 0.5 0.5\n")
    (tmp_path / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [ada, bo]\n")
    with pytest.raises(DataError) as info:
        load_archive(tmp_path)
    message = str(info.value)
    assert "a.txt:1" in message and "outside [0, 1]" in message
    assert "a.txt:2" in message and "class 3 is not defined in data.yaml" in message
    assert "a.txt:3" in message and "3 columns" in message
    assert "orphan.txt" in message and "without its image" in message


def test_voc_xml_that_does_not_parse_and_a_negative_box(tmp_path):
    _image(tmp_path / "JPEGImages" / "a.jpg", (100, 50))
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><object><name>ada</name><bndbox><xmin>50</xmin><ymin>1</ymin>"
        "<xmax>10</xmax><ymax>20</ymax></bndbox></object></annotation>")
    (tmp_path / "Annotations" / "b.xml").write_text("<annotation><filename>")
    with pytest.raises(DataError) as info:
        load_archive(tmp_path)
    message = str(info.value)
    assert "a.xml:object 1" in message and "negative width" in message
    assert "b.xml" in message and "does not parse" in message


def test_unknown_format_says_what_was_found(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "pictures").mkdir()
    with pytest.raises(DataError) as info:
        load_archive(tmp_path)
    message = str(info.value)
    assert "Found: notes.txt, pictures/" in message and "COCO JSON" in message and "data.yaml" in message


def test_mixed_formats_are_named(dataset, converted, tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "antrenare").symlink_to(dataset / "antrenare")
    (root / "data.yaml").symlink_to(converted["yolo"] / "data.yaml")
    with pytest.raises(DataError, match=r"mixed formats: course \(antrenare\); yolo \(data.yaml\). Name the one"):
        load_archive(root)
    assert find_formats(root).keys() == {"course", "yolo"}
    assert load_archive(root, fmt="course").train is not None


def test_a_named_format_that_is_not_there(converted):
    with pytest.raises(DataError, match="no voc dataset found.*Found coco instead"):
        load_archive(converted["coco"], fmt="voc")


def test_convert_refuses_a_folder_that_is_not_empty(dataset, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not an empty folder"):
        convert(dataset, "coco", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_course_writer_refuses_names_the_course_cannot_read(tmp_path):
    path = _image(tmp_path / "a b.jpg", (50, 50))
    ds = Dataset("x", [ImageRecord("ada/a b.jpg", path)])
    with pytest.raises(DataError, match="plain image file names"):
        course.write({TRAIN: ds}, tmp_path / "out")


# ----------------------------------------------------------------------------- command line


def test_cli_convert_check_and_format_option(dataset, tmp_path):
    code, out, err = run_cli(["convert", "--data", dataset, "--to", "yolo", "--out", tmp_path / "y"])
    assert code == 0, err
    assert "course -> yolo: train: 12 images" in out and "data.yaml" in out
    code, out, err = run_cli(["check", "--data", tmp_path / "y"])
    assert code == 0, out + err
    assert "faces per character: ada" in out
    code, _, err = run_cli(["check", "--data", tmp_path / "y", "--format", "coco"])
    assert_user_error(code, err, "no coco dataset found", "Found yolo instead")
    code, _, err = run_cli(["convert", "--data", dataset, "--to", "yolo", "--out", tmp_path / "y"])
    assert_user_error(code, err, "not an empty folder")


def test_cli_check_lists_problems_of_a_coco_dataset(tmp_path):
    root = _coco(tmp_path, [_ann(1, [10, 10, -5, 20]), _ann(2, [10, 10, 20, 20], cat=9)])
    code, out, _ = run_cli(["check", "--data", root])
    assert code == 1
    assert "annotations[0] (id 1)" in out and "annotations[1] (id 2)" in out


def test_cli_finetune_on_a_bad_coco_dataset_is_one_error_line(tmp_path):
    root = _coco(tmp_path, [_ann(1, [10, 10, -5, 20])])
    code, _, err = run_cli(["finetune", "--data", root, "--out", tmp_path / "ft"])
    assert_user_error(code, err, "instances_train.json:annotations[0] (id 1)")


def test_cli_format_choices_are_the_readers():
    from facecmp import cli

    assert cli.FORMATS == FORMATS


# ----------------------------------------------------------------------------- real data


@pytest.mark.real_data
@pytest.mark.slow
def test_dexter_training_set_to_each_format_and_back_with_identical_records(dexter_root, tmp_path):
    original = load_archive(dexter_root)
    for fmt in ("coco", "voc", "yolo"):
        there = convert(dexter_root, fmt, tmp_path / fmt).out
        assert_same_records(original, load_archive(there))
        back = convert(there, "course", tmp_path / f"{fmt}-back").out
        restored = load_archive(back)
        assert_same_records(original, restored)
        assert restored.train.characters == original.train.characters
        assert sorted(p.name for p in (back / "antrenare").iterdir()) == sorted(
            p.name for p in (dexter_root / "antrenare").iterdir())


def test_benchmark_plugin_data_takes_any_format(dataset, converted, tmp_path):
    """``--facecmp-data`` goes through the same loader: a COCO folder with a val part is tested on it,
    one with a training part only gets the held-out split."""
    from facecmp.bench.session import BenchOptions, BenchSession

    with_val = BenchSession(BenchOptions(data=converted["coco"], dev_per_folder=1))
    assert with_val.test_selection == "archive"
    assert records_of(with_val.splits.test) == records_of(load_archive(dataset).test)
    train_only = tmp_path / "train_only"
    (train_only / "annotations").mkdir(parents=True)
    (train_only / "train").symlink_to(converted["coco"] / "train")
    (train_only / "annotations" / "instances_train.json").symlink_to(converted["coco"] / "annotations" / "instances_train.json")
    session = BenchSession(BenchOptions(data=train_only, split="split:1", dev_per_folder=1))
    assert session.test_selection == "split:1"
    assert len(session.splits.test) == 4 and len(session.splits.train) == 4


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "wider"])
def test_a_converted_copy_has_the_training_data_fingerprint_of_the_original(fmt, dataset, converted):
    """Same keys, boxes, order and image bytes: fine-tuning caches (and results) carry over."""
    from facecmp.data.fingerprint import data_fingerprint

    original = load_archive(dataset)
    copy = load_archive(converted[fmt])
    assert data_fingerprint(copy.train) == data_fingerprint(original.train)
    assert data_fingerprint(copy.test) == data_fingerprint(original.test)
