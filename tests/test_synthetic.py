"""The built-in synthetic dataset: course layout, determinism, idempotent generation."""

from pathlib import Path

import numpy as np
import pytest

from facecmp.data import synthetic
from facecmp.data import load_archive, read_image
from facecmp.errors import DataError

SMALL = dict(n_train_per_character=3, n_test=4, seed=7)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return synthetic.generate_dataset(tmp_path_factory.mktemp("syn") / "a", **SMALL)


def test_layout_loads_strictly_with_boxes_inside_the_images(small):
    archive = load_archive(small, strict=True)
    train, test = archive.train, archive.test
    assert train.characters == synthetic.CHARACTERS and test.characters == synthetic.CHARACTERS
    assert len(train) == 4 * 3 and len(test) == 4
    for ds in (train, test):
        for record in ds.images:
            h, w, _ = read_image(record.path).shape
            assert (w, h) == (480, 360)
            assert 1 <= len(record.boxes) <= 4
            b = record.boxes
            assert (b[:, :2] >= 0).all() and (b[:, 2] < w).all() and (b[:, 3] < h).all()
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    # every training image shows its folder's character
    assert all(r.labels[0] == r.folder for r in train.images)
    assert all(set(r.labels) <= {*synthetic.CHARACTERS, "unknown"} for r in test.images)


def test_same_seed_same_bytes_other_seed_other_images(small, tmp_path):
    again = synthetic.generate_dataset(tmp_path / "b", **SMALL)
    assert files(again) == files(small)
    other = synthetic.generate_dataset(tmp_path / "c", **{**SMALL, "seed": 8})
    assert files(other)["antrenare/ada/0001.jpg"] != files(small)["antrenare/ada/0001.jpg"]


def test_complete_dataset_is_not_regenerated(small):
    image = small / "antrenare" / "ada" / "0001.jpg"
    image.write_bytes(image.read_bytes())  # same content, new mtime
    before = image.stat().st_mtime_ns
    (small / "marker").write_text("x")
    synthetic.generate_dataset(small, **SMALL)
    assert image.stat().st_mtime_ns == before
    (small / "marker").unlink()


def test_refuses_other_parameters_and_foreign_folders(small, tmp_path):
    with pytest.raises(DataError, match="other parameters"):
        synthetic.generate_dataset(small, **{**SMALL, "n_test": 5})
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(DataError, match="not empty"):
        synthetic.generate_dataset(tmp_path, **SMALL)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_unfinished_generation_is_completed(tmp_path):
    root = synthetic.generate_dataset(tmp_path / "d", **SMALL)
    manifest = (root / synthetic.MANIFEST).read_text()
    (root / synthetic.MANIFEST).unlink()
    (root / synthetic.PARTIAL).write_text(manifest)
    (root / "validare" / "task1_gt_validare.txt").unlink()
    synthetic.generate_dataset(root, **SMALL)
    assert (root / "validare" / "task1_gt_validare.txt").exists()
    assert not (root / synthetic.PARTIAL).exists()


def test_default_dataset_dir_uses_the_cache_env_and_parameter_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("FACECMP_CACHE", str(tmp_path))
    a = synthetic.default_dataset_dir()
    assert a.parent == tmp_path and a.name.startswith("synthetic-")
    assert synthetic.default_dataset_dir(seed=1) != a
    root = synthetic.ensure_default_dataset(**SMALL)
    assert root == synthetic.default_dataset_dir(**SMALL)
    assert (root / synthetic.MANIFEST).exists()


def test_faces_are_drawn_where_annotated(small):
    # The face oval is filled with skin: its centre differs from the image's background statistics.
    record = load_archive(small).train.images[0]
    pixels = read_image(record.path).astype(int)
    x0, y0, x1, y1 = record.boxes[0]
    centre = pixels[(y0 + y1) // 2, (x0 + x1) // 2]
    skin = np.array(synthetic.STYLES[record.folder].skin)
    assert np.abs(centre - skin).max() < 60
