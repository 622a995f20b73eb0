"""The course layout as one format among the others: read through :mod:`facecmp.data.layout`, written here.

Written from any records: ``antrenare/<folder>/<name>`` and ``antrenare/<folder>_annotations.txt``
(``IMAGE X_MIN Y_MIN X_MAX Y_MAX CHARACTER``) for the training part, the folder taken from the
image's key (``dad/0001.jpg``; an image without a folder goes to ``images/``);
``validare/validare/<name>`` and ``validare/task1_gt_validare.txt`` for the test part, plus
``validare/validare_annotations.txt`` when its faces have characters.
"""

from __future__ import annotations

from pathlib import Path

from facecmp.atomic import inside, write_text
from facecmp.data.annotations import IMAGE_NAME
from facecmp.data.formats.common import FACE, TEST, TRAIN, out_label, place_image
from facecmp.data.layout import TASK1_FULL, TEST_ANNOTATIONS, find_parts, read_test, read_training
from facecmp.data.records import Dataset
from facecmp.errors import DataError

NAME = "course"
FLAT_FOLDER = "images"


def find(root: Path) -> list[Path]:
    return [p for p in find_parts(root) if p is not None]


def read(root: Path) -> dict[str, Dataset]:
    train_dir, test_dir = find_parts(root)
    parts = {}
    if train_dir is not None:
        parts[TRAIN] = read_training(train_dir)
    if test_dir is not None:
        parts[TEST] = read_test(test_dir)
    return parts


def _line(name: str, box, label: str | None) -> str:
    cols = [name, *(str(int(v)) for v in box)] + ([label] if label is not None else [])
    return " ".join(cols) + "\n"


def _check_name(name: str, key: str) -> None:
    if not IMAGE_NAME.match(name):
        raise DataError(f"{key}: the course layout needs plain image file names like 0001.jpg "
                        "(letters, digits, _ - .); rename the image first")


def write(parts: dict[str, Dataset], out: Path, *, link: bool = True) -> list[Path]:
    written = []
    if TRAIN in parts:
        train = out / "antrenare"
        by_folder: dict[str, list[str]] = {}
        for record in parts[TRAIN].images:
            folder, _, name = record.key.rpartition("/")
            folder = folder or FLAT_FOLDER
            if "/" in folder:
                raise DataError(f"{record.key}: the course layout has one level of character folders; "
                                "this image is nested deeper")
            _check_name(name, record.key)
            place_image(record.path, out, train.name, folder, name, link=link)
            rows = by_folder.setdefault(folder, [])
            rows.extend(_line(name, box, out_label(label)) for box, label in zip(record.boxes_as_labelled, record.labels))
        for folder, rows in by_folder.items():
            target = inside(out, train.name, f"{folder}_annotations.txt")
            write_text(target, "".join(rows))
            written.append(target)
    if TEST in parts:
        test = out / "validare"
        task1, labelled = [], []
        for record in parts[TEST].images:
            if "/" in record.key:
                raise DataError(f"{record.key}: the course's test layout keeps every image in one folder (validare/validare/)")
            _check_name(record.key, record.key)
            place_image(record.path, out, test.name, "validare", record.key, link=link)
            task1.extend(_line(record.key, box, None) for box in record.boxes_as_labelled)
            labelled.extend(_line(record.key, box, out_label(label))
                            for box, label in zip(record.boxes_as_labelled, record.labels))
        write_text(test / TASK1_FULL, "".join(task1))
        written.append(test / TASK1_FULL)
        if any(label not in ("", FACE) for record in parts[TEST].images for label in record.labels):
            write_text(test / TEST_ANNOTATIONS, "".join(labelled))
            written.append(test / TEST_ANNOTATIONS)
    return written
