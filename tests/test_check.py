"""`facecmp check`: all problems collected, summary of the data, real-data acceptance."""

import os
from pathlib import Path

import pytest
from PIL import Image

from facecmp.data import check_dataset
from facecmp.errors import DataError


def shared_datasets() -> Path:
    env = os.environ.get("FACECMP_SHARED_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def make_train(root: Path, text: str, n: int = 4) -> Path:
    (root / "ann").mkdir(parents=True)
    for i in range(1, n + 1):
        Image.new("RGB", (100, 80), (i * 20, 0, 0)).save(root / "ann" / f"{i:04d}.jpg")
    (root / "ann_annotations.txt").write_text(text)
    return root


def test_clean_dataset_is_ok_and_summarised(tmp_path):
    root = make_train(tmp_path / "antrenare", "0001.jpg 1 1 20 30 ann\n0002.jpg 1 1 60 60 unknown\n")
    report = check_dataset(tmp_path)
    assert report.ok and report.problems == []
    text = report.summary_text()
    assert "4 images, 2 faces, 2 images without faces" in text
    assert "ann 1, unknown 1" in text
    assert "12-23: 1" in text and "48-95: 1" in text
    assert "No problems found" in text
    assert root.name in text


def test_check_collects_every_problem_including_undecodable_images(tmp_path):
    root = make_train(tmp_path, "0001.jpg 1 1 x 30 ann\n0002.jpg 1 1 60 60\n0003.jpg 5 5 500 60 ann\n")
    truncated = root / "ann" / "0004.jpg"
    truncated.write_bytes(truncated.read_bytes()[:-200])  # header intact, data cut
    report = check_dataset(root)
    assert not report.ok
    lines = {(p.file.name, p.line, p.severity) for p in report.problems}
    assert ("ann_annotations.txt", 1, "error") in lines
    assert ("ann_annotations.txt", 2, "error") in lines
    assert ("ann_annotations.txt", 3, "warning") in lines
    assert ("0004.jpg", None, "error") in lines
    assert str(truncated) in report.summary_text()


def test_check_without_a_layout_raises(tmp_path):
    with pytest.raises(DataError, match="no course dataset layout"):
        check_dataset(tmp_path)


@pytest.mark.real_data
def test_dexter_check_names_the_known_defect():
    root = shared_datasets() / "dexter"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    report = check_dataset(root)
    assert any(p.file.name == "mom_annotations.txt" and p.line == 83 for p in report.problems)
    text = report.summary_text()
    assert "mom_annotations.txt:83" in text
    assert "4000 images, 5813 faces" in text


@pytest.mark.real_data
def test_scooby_doo_check_reports_110_missing_images():
    root = shared_datasets() / "scooby-doo"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    report = check_dataset(root)
    assert not report.ok
    assert "110 images listed in the ground truth are missing" in report.summary_text()
