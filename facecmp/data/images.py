"""Reading images as RGB uint8 arrays, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from facecmp.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

# What the Python API's detectors accept as an image.
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def read_image(path: str | Path) -> np.ndarray:
    """``H x W x 3`` uint8 RGB. Grayscale, palette and RGBA images are converted."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB") if im.mode != "RGB" else im
            return np.asarray(rgb, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot decode image ({exc}). The file is corrupt or not an image; "
            "re-export it or remove it and its annotation lines."
        ) from None


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the header only (no full decode)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image header ({exc}); the file is corrupt or not an image") from None


def as_rgb_array(image: ImageInput, where: str = "image") -> np.ndarray:
    """``H x W x 3`` uint8 RGB from a path (decoded by :func:`read_image`), a PIL image of any mode
    (converted to RGB) or an ``H x W x 3`` uint8 RGB array (returned as it is).
    ``where`` names the image in errors (e.g. ``"images[3]"``)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8).copy()
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(
                f"{where}: an image array must be H x W x 3 uint8 RGB; got shape {image.shape}, dtype {image.dtype}. "
                "Pass np.asarray(PIL.Image.open(path).convert('RGB')), a PIL image or the file's path instead."
            )
        return image
    raise DataError(
        f"{where}: expected an image path, a PIL image or an H x W x 3 uint8 RGB array; got {type(image).__name__}"
    )
