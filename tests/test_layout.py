"""Loading the course layouts: training folders, test folders and their variations, archives."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecmp.data import load_archive, load_image_folder, load_test, load_training, read_image
from facecmp.errors import DataError


def shared_datasets() -> Path:
    env = os.environ.get("FACECMP_SHARED_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def image(path: Path, size=(100, 80), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)
    return path


def make_train(root: Path, lines: dict[str, str], n_images: int = 3) -> Path:
    for char, text in lines.items():
        for i in range(1, n_images + 1):
            image(root / char / f"{i:04d}.jpg")
        (root / f"{char}_annotations.txt").write_text(text)
    return root


def make_test(root: Path, gt: str, names=("0001.jpg", "0002.jpg"), folder="validare", **extra: str) -> Path:
    for name in names:
        image(root / folder / name)
    (root / "task1_gt_validare.txt").write_text(gt)
    for file_name, text in extra.items():
        (root / file_name).write_text(text)
    return root


def test_training_keys_labels_and_images_without_faces(tmp_path):
    train = make_train(tmp_path / "antrenare", {
        "ann": "0001.jpg 1 2 30 40 ann\n0001.jpg 50 2 90 40 unknown\n0002.jpg 5 5 20 20 bob\n",
        "bob": "0003.jpg 1 1 10 10 bob\n",
    })
    ds = load_training(train)
    assert ds.characters == ("ann", "bob")
    assert [r.key for r in ds.images] == ["ann/0001.jpg", "ann/0002.jpg", "ann/0003.jpg",
                                          "bob/0001.jpg", "bob/0002.jpg", "bob/0003.jpg"]
    first = ds.images[0]
    assert first.boxes.tolist() == [[1, 2, 30, 40], [50, 2, 90, 40]]
    assert first.labels == ("ann", "unknown")
    assert first.folder == "ann"
    assert ds.n_faces == 4
    assert len(ds.images[2].boxes) == 0  # ann/0003.jpg has no faces


def test_training_clips_and_drops_with_warnings_and_strict_raises(tmp_path):
    train = make_train(tmp_path, {"ann": "0001.jpg 10 10 150 60 ann\n0002.jpg 10 10 10 60 ann\n"})
    ds = load_training(train)
    assert ds.images[0].boxes.tolist() == [[10, 10, 99, 60]]
    assert len(ds.images[1].boxes) == 0
    assert [(p.line, p.severity) for p in ds.problems] == [(1, "warning"), (2, "warning")]
    with pytest.raises(DataError, match="ann_annotations.txt:1"):
        load_training(train, strict=True)


def test_training_collects_all_errors_into_one_data_error(tmp_path):
    train = make_train(tmp_path, {"ann": "0001.jpg 1 2 x 40 ann\n0009.jpg 1 2 30 40 ann\n0002.jpg 1 2 30 ann\n"})
    with pytest.raises(DataError) as info:
        load_training(train)
    message = str(info.value)
    assert "3 error(s)" in message
    assert "ann_annotations.txt:1" in message and "ann_annotations.txt:3" in message
    assert "ann/0009.jpg not found" in message


def test_corrupt_image_is_an_error_naming_its_path(tmp_path):
    train = make_train(tmp_path, {"ann": "0001.jpg 1 2 30 40 ann\n"})
    bad = train / "ann" / "0002.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=str(bad)):
        load_training(train)


def test_rgba_and_grayscale_images_decode_to_rgb(tmp_path):
    for mode in ("RGBA", "L", "P"):
        arr = read_image(image(tmp_path / f"{mode}.png", size=(7, 5), mode=mode))
        assert arr.shape == (5, 7, 3) and arr.dtype == np.uint8


@pytest.mark.parametrize("folder", ["validare", "Validare", "VALIDARE"])
@pytest.mark.parametrize("names", [("001.jpg", "002.jpg"), ("0001.jpg", "0002.jpg")])
def test_test_folder_casing_and_name_widths(tmp_path, folder, names):
    gt = f"{names[0]} 1 1 20 20\n{names[0]} 30 30 60 60\n"
    root = make_test(tmp_path, gt, names=names, folder=folder)
    ds = load_test(root)
    assert [r.key for r in ds.images] == list(names)
    assert ds.images[0].boxes.tolist() == [[1, 1, 20, 20], [30, 30, 60, 60]]
    assert ds.images[0].labels == ("", "")
    assert len(ds.images[1].boxes) == 0  # present, not in the ground truth
    assert ds.images[0].path.parent.name == folder


def test_test_labels_from_task2_files_others_unknown(tmp_path):
    root = make_test(tmp_path, "0001.jpg 1 1 20 20\n0001.jpg 30 30 60 60\n0002.jpg 5 5 9 9\n",
                     **{"task2_ann_gt_validare.txt": "0001.jpg 30 30 60 60\n",
                        "task2_bob_gt_validare.txt": "0002.jpg 5 5 9 9\n"})
    ds = load_test(root)
    assert ds.characters == ("ann", "bob")
    assert [r.labels for r in ds.images] == [("unknown", "ann"), ("bob",)]


def test_test_labels_from_validare_annotations(tmp_path):
    root = make_test(tmp_path, "0001.jpg 1 1 20 20\n",
                     **{"validare_annotations.txt": "0001.jpg 1 1 20 20 ann\n"})
    ds = load_test(root)
    assert ds.images[0].labels == ("ann",)
    assert ds.characters == ("ann",)


def test_full_task1_file_preferred_over_subsets(tmp_path):
    root = make_test(tmp_path, "0001.jpg 1 1 20 20\n0002.jpg 1 1 20 20\n",
                     **{"task1_gt_validare20.txt": "0001.jpg 1 1 20 20\n"})
    assert load_test(root).n_faces == 2


def test_missing_test_images_raise_unless_allowed(tmp_path):
    gt = "".join(f"{i:04d}.jpg 1 1 20 20\n" for i in range(1, 10))
    root = make_test(tmp_path, gt)
    with pytest.raises(DataError) as info:
        load_test(root)
    message = str(info.value)
    assert "7 of the images" in message and "0003.jpg" in message and "--allow-missing" in message
    ds = load_test(root, allow_missing=True)
    assert ds.missing == [f"{i:04d}.jpg" for i in range(3, 10)]
    assert [r.key for r in ds.images] == ["0001.jpg", "0002.jpg"]


def test_archive_finds_both_parts_in_any_casing(tmp_path):
    make_train(tmp_path / "Antrenare", {"ann": "0001.jpg 1 2 30 40 ann\n"})
    make_test(tmp_path / "validare", "0001.jpg 1 1 20 20\n")
    archive = load_archive(tmp_path)
    assert archive.train is not None and archive.train.n_faces == 1
    assert archive.test is not None and archive.test.n_faces == 1
    assert load_archive(tmp_path / "validare").train is None
    assert load_archive(tmp_path / "Antrenare").test is None


def test_archive_without_a_layout_says_what_was_expected(tmp_path):
    image(tmp_path / "x.jpg")
    with pytest.raises(DataError, match="antrenare/<char>/NNNN.jpg"):
        load_archive(tmp_path)


def test_image_folder(tmp_path):
    image(tmp_path / "b.png")
    image(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("x")
    ds = load_image_folder(tmp_path)
    assert [r.key for r in ds.images] == ["a.jpg", "b.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_image_folder(tmp_path / "empty")


@pytest.mark.real_data
def test_dexter_training_loads_fast_and_complete():
    root = shared_datasets() / "dexter"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    ds = load_archive(root).train
    assert len(ds) == 4000
    dropped = sum(int(p.message.split(" box(es)")[0]) for p in ds.problems if p.message.endswith("dropped") or ": dropped;" in p.message)
    assert ds.n_faces == 5813 - dropped
    assert ds.characters == ("dad", "deedee", "dexter", "mom")
    record = next(r for r in ds.images if r.key == "dad/0001.jpg")
    assert record.boxes[0].tolist() == [242, 28, 429, 256] and record.labels[0] == "dad"


@pytest.mark.real_data
def test_scooby_doo_partial_validation_set():
    root = shared_datasets() / "scooby-doo"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    with pytest.raises(DataError, match="110 of the images"):
        load_archive(root)
    test = load_archive(root, allow_missing=True).test
    assert len(test.missing) == 110 and len(test) == 90
    assert test.characters == ("daphne", "fred", "shaggy", "velma")
