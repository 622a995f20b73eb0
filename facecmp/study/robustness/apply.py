"""A condition applied to a frame and its boxes: a corruption (the reference's code, through
:mod:`facecmp.study.robustness.compat`, or our exact blurs), or a geometric change.

Every corruption is deterministic per (image pixels, corruption, severity, seed): the reference
draws from numpy's global random state, so each call seeds it from a stable hash of those four
and restores the caller's state afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
from functools import lru_cache

import numpy as np

from facecmp.study.robustness.blurs import glass_blur, zoom_blur
from facecmp.study.robustness.compat import patched_module
from facecmp.study.robustness.conditions import (
    GEOMETRIC,
    PHOTOMETRIC,
    SCALE_FACTORS,
    Condition,
    CorruptionError,
    check_condition,
)
from facecmp.study.robustness.geometric import mirror_boxes, scale_boxes, scale_image


@lru_cache(maxsize=None)
def _functions() -> dict[str, object]:
    """Name -> corruption function: the patched reference package's, our blurs for two of them."""
    module = patched_module()
    functions = {name: getattr(module, name) for name in PHOTOMETRIC}
    functions["glass_blur"] = glass_blur
    functions["zoom_blur"] = zoom_blur
    return functions


def condition_seed(image: np.ndarray, name: str, severity: int, seed: int) -> int:
    """A 32-bit seed from the pixels, the condition and the user's seed: the same in any process."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{name}:{severity}:{seed}:{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).data)
    return int.from_bytes(digest.digest()[:4], "little")


@contextlib.contextmanager
def _global_random_state(seed: int):
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise CorruptionError(
            f"expected an H x W x 3 uint8 RGB image, got {type(image).__name__} "
            f"{getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        )
    if min(image.shape[:2]) < 32:
        raise CorruptionError(f"image of {image.shape[1]}x{image.shape[0]} px: corruptions need at least 32x32 px")
    return image


def corrupt(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``image`` (H x W x 3 uint8 RGB) under a photometric corruption; same size, uint8.

    Equals ``imagecorruptions.corrupt(image, severity, name)`` with numpy's global random state
    seeded by ``condition_seed`` (the caller's random state is left as it was).
    """
    check_condition(name, severity)
    if name in GEOMETRIC:
        raise CorruptionError(f"{name} changes the ground truth too; use apply_condition")
    image = _check_image(image)
    from PIL import Image

    function = _functions()[name]
    with _global_random_state(condition_seed(image, name, severity, seed)):
        out = function(Image.fromarray(image), severity)
    # As the reference's corrupt(): uint8 of the float result (truncation, not rounding).
    return np.uint8(out)


def apply_condition(
    image: np.ndarray, boxes: np.ndarray, condition: Condition, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(image, boxes)`` under ``condition``; boxes are inclusive-pixel ``(K, 4)`` ints."""
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    if condition.name == "clean":
        return image, boxes
    if condition.name == "mirror":
        return np.ascontiguousarray(image[:, ::-1]), mirror_boxes(boxes, image.shape[1])
    if condition.name == "scale":
        small = scale_image(image, SCALE_FACTORS[condition.severity - 1])
        old = (image.shape[1], image.shape[0])
        return small, scale_boxes(boxes, old, (small.shape[1], small.shape[0]))
    return corrupt(image, condition.name, condition.severity, seed), boxes
