"""Data: archives and their records: the course layout and the labelling formats (``formats/``),
annotations, images, splits, face sizes, ``facecmp check`` and ``facecmp convert``, task-2 ground
truth, course prediction files, cache fingerprints and the built-in generated dataset.

Imports only the top-level helpers (errors, atomic)."""

from facecmp.data.annotations import read_ground_truth
from facecmp.data.check import CheckReport, check_dataset
from facecmp.data.images import image_size, read_image
from facecmp.data.archive import Archive, load_archive
from facecmp.data.layout import load_image_folder, load_test, load_training
from facecmp.data.records import UNKNOWN, Dataset, ImageRecord, Problem
from facecmp.data.split import split_dataset

__all__ = [
    "UNKNOWN",
    "Archive",
    "CheckReport",
    "Dataset",
    "ImageRecord",
    "Problem",
    "check_dataset",
    "image_size",
    "load_archive",
    "load_image_folder",
    "load_test",
    "load_training",
    "read_ground_truth",
    "read_image",
    "split_dataset",
]
