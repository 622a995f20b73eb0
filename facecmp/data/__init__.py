"""Datasets: the course layouts, their annotations, problems found in them, and splits."""

from .annotations import read_ground_truth
from .check import CheckReport, check_dataset
from .images import image_size, read_image
from .layout import Archive, load_archive, load_image_folder, load_test, load_training
from .records import UNKNOWN, Dataset, ImageRecord, Problem
from .split import split_dataset

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
