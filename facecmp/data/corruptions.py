"""Common corruptions (Hendrycks & Dietterich 2019; Michaelis et al. 2019) plus scale and mirror.

The 19 photometric corruptions are the reference package's own code (``imagecorruptions``
1.1.2, the implementation published COCO-C / Pascal-C numbers use), loaded through a small
compatibility layer for today's stack. That package was written for numpy 1 and scikit-image
< 0.19; on ours five things break, and each is mended *outside* its code, so every formula
stays the reference's:

- ``from pkg_resources import resource_filename`` (setuptools >= 81 has no ``pkg_resources``):
  a stand-in module answers it while the package is imported, resolving the frost pictures
  inside the installed package, then goes away again;
- ``gaussian(..., multichannel=True)`` in glass_blur and gaussian_blur (removed in scikit-image
  0.19): the package's ``gaussian`` name is bound to a wrapper that passes ``channel_axis=-1``,
  which is what ``multichannel=True`` meant;
- ``np.float_`` in fog's plasma fractal (removed in numpy 2): the package's ``np`` name is bound
  to a view of numpy whose ``float_`` is ``float64``, the type it aliased;
- impulse_noise's ``sk.util.random_noise`` ignores numpy's global random state since
  scikit-image 0.19 (a fresh unseeded generator per call): its generator is seeded from that
  state instead, so impulse_noise is deterministic like the others;
- glass_blur's per-pixel Python loop (seconds per frame) is replaced by the same loop over a
  flat index map: the same random draws in the same order give the same pixels (tested
  against the reference loop), about 20x faster.

Every corruption is deterministic per (image pixels, corruption, severity, seed): the reference
draws from numpy's global random state, so each call seeds it from a stable hash of those four
and restores the caller's state afterwards.

Geometric conditions, which matter for MTCNN on cartoons (faces shrink towards the minimum
face size): ``scale`` (severities 1-4 = factors 0.75, 0.5, 0.35, 0.25) and ``mirror`` (a
horizontal flip; severity 1 only). They also transform the ground truth, in the course's
inclusive-pixel convention.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from facecmp.errors import DataError, FacecmpError

# The common-corruption benchmark: 15 corruptions (noise, blur, weather, digital) ...
BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
# ... and its 4 held-out validation corruptions.
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
PHOTOMETRIC = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
SCALE_FACTORS = (0.75, 0.5, 0.35, 0.25)
GEOMETRIC = ("scale", "mirror")
ALL_CONDITIONS = PHOTOMETRIC + GEOMETRIC
SEVERITIES = (1, 2, 3, 4, 5)
# Named groups for ``--corruptions``.
GROUPS = {
    "benchmark": BENCHMARK_CORRUPTIONS,
    "extra": EXTRA_CORRUPTIONS,
    "all": PHOTOMETRIC,
    "geometric": GEOMETRIC,
}
INSTALL_HINT = "pip install 'facecmp[robustness]' (imagecorruptions==1.1.2 --no-deps, scikit-image, scipy, opencv-python-headless)"


def missing_dependency() -> str | None:
    """One line naming what to install when the robustness extra is absent, else None."""
    missing = [m for m in ("imagecorruptions", "skimage", "scipy", "cv2") if importlib.util.find_spec(m) is None]
    if missing:
        return f"corruptions need the robustness extra ({', '.join(missing)} missing): {INSTALL_HINT}"
    return None


class CorruptionError(DataError):
    """A corruption could not be applied (bad name, severity or image)."""


def valid_severities(name: str) -> tuple[int, ...]:
    """The severities a condition has: 1-5 for corruptions, 1-4 for scale, 1 for mirror."""
    if name == "scale":
        return tuple(range(1, len(SCALE_FACTORS) + 1))
    if name == "mirror":
        return (1,)
    return SEVERITIES


def parse_corruptions(text: str) -> tuple[str, ...]:
    """``all``, ``benchmark``, ``extra``, ``geometric`` or comma-separated names (groups may be mixed in)."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        for name in GROUPS.get(part, (part,)):
            if name not in ALL_CONDITIONS:
                raise CorruptionError(
                    f"unknown corruption {name!r}; valid: {', '.join(ALL_CONDITIONS)} (or a group: {', '.join(GROUPS)})"
                )
            if name not in names:
                names.append(name)
    if not names:
        raise CorruptionError(f"no corruption named in {text!r}; valid: {', '.join(ALL_CONDITIONS)}")
    return tuple(names)


def parse_severities(text: str) -> tuple[int, ...]:
    """``1,2,3,4,5`` (or ``3``, ``1-5``) -> sorted unique severities, each in 1-5."""
    values: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                values.update(range(lo, hi + 1))
            else:
                values.add(int(part))
        except ValueError:
            raise CorruptionError(f"severities {text!r}: expected integers 1-5 such as 1,2,3,4,5 or 3") from None
    bad = sorted(v for v in values if v not in SEVERITIES)
    if bad or not values:
        raise CorruptionError(f"severity {bad[0] if bad else text!r} is outside 1-5; severities are integers 1-5")
    return tuple(sorted(values))


def check_condition(name: str, severity: int) -> None:
    if name not in ALL_CONDITIONS:
        raise CorruptionError(f"unknown corruption {name!r}; valid: {', '.join(ALL_CONDITIONS)}")
    if severity not in valid_severities(name):
        raise CorruptionError(
            f"{name}: severity {severity!r} is outside {valid_severities(name)[0]}-{valid_severities(name)[-1]}"
        )


# -- the reference package, loaded with the compatibility layer ------------------------------
def _gaussian_channel_axis(gaussian):
    """scikit-image's ``gaussian`` accepting the removed ``multichannel=True`` (= ``channel_axis=-1``)."""

    def compat(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs.setdefault("channel_axis", -1)
        return gaussian(image, *args, **kwargs)

    return compat


def _module_view(module: types.ModuleType, **overrides) -> types.ModuleType:
    """A stand-in for ``module`` that answers ``overrides`` and delegates every other name."""
    view = types.ModuleType(module.__name__)
    view.__getattr__ = lambda attr: getattr(module, attr)  # type: ignore[attr-defined]
    for name, value in overrides.items():
        setattr(view, name, value)
    return view


def _random_noise_from_global_state(random_noise):
    """scikit-image's ``random_noise`` drawing its generator's seed from numpy's global state.

    Since scikit-image 0.19, ``random_noise`` without ``rng`` uses a fresh, unseeded generator
    (impulse_noise would differ on every call); older versions drew from the global state.
    """

    def compat(image, *args, rng=None, **kwargs):
        if rng is None:
            rng = int(np.random.randint(0, 2**31 - 1))
        return random_noise(image, *args, rng=rng, **kwargs)

    return compat


@contextlib.contextmanager
def _pkg_resources_stand_in():
    """Provide ``pkg_resources.resource_filename`` while the reference package is imported."""
    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        yield
        return
    stand_in = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        spec = importlib.util.find_spec(package)
        return str(Path(spec.origin).parent / resource)

    stand_in.resource_filename = resource_filename  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = stand_in
    try:
        yield
    finally:
        sys.modules.pop("pkg_resources", None)


@lru_cache(maxsize=None)
def reference_module() -> types.ModuleType:
    """``imagecorruptions.corruptions`` as shipped, importable on this stack (nothing patched yet)."""
    import warnings

    try:
        with _pkg_resources_stand_in(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module("imagecorruptions.corruptions")
    except ImportError as exc:
        raise FacecmpError(missing_dependency() or f"cannot import imagecorruptions ({exc}): {INSTALL_HINT}") from None
    return module


@lru_cache(maxsize=None)
def _functions() -> dict[str, object]:
    """Name -> corruption function, with the compatibility fixes applied to the package's names."""
    module = reference_module()
    if not getattr(module, "_facecmp_compat", False):
        module.gaussian = _gaussian_channel_axis(module.gaussian)
        module.np = _module_view(np, float_=np.float64)
        sk = module.sk
        util = _module_view(sk.util, random_noise=_random_noise_from_global_state(sk.util.random_noise))
        module.sk = _module_view(sk, util=util)
        module._facecmp_compat = True
    functions = {name: getattr(module, name) for name in PHOTOMETRIC}
    functions["glass_blur"] = _glass_blur
    functions["zoom_blur"] = _zoom_blur
    return functions


# The reference zoom_blur's zoom factors per severity, as it lists them.
ZOOM_FACTORS = (
    (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03),
)


def _zoom_blur(x, severity=1):
    """The reference zoom_blur (the frame averaged with centre crops of it zoomed back up), each
    zoom done one channel at a time: the same floats in half the time.

    The reference zooms the ``H x W x 3`` crop with factors ``(z, z, 1)``, so scipy's linear
    interpolation visits 8 neighbours of which the 4 on another channel weigh exactly 0; a 2-D zoom
    per channel sums the same 4 products (``tests/test_corruptions.py`` compares with the package).
    """
    from scipy.ndimage import zoom

    x = (np.array(x) / 255.0).astype(np.float32)
    height, width = x.shape[:2]
    out = np.zeros_like(x)
    factors = np.arange(*ZOOM_FACTORS[severity - 1])
    for factor in factors:
        crop_h, crop_w = int(np.ceil(height / float(factor))), int(np.ceil(width / float(factor)))
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        crop = x[top : top + crop_h, left : left + crop_w]
        layer = np.stack([zoom(crop[..., k], (factor, factor), order=1) for k in range(x.shape[2])], axis=-1)
        layer = layer[:height, :width]
        out[: layer.shape[0], : layer.shape[1]] += layer  # the reference's fallback when the zoom comes out short
    x = (x + out) / (len(factors) + 1)
    return np.clip(x, 0, 1) * 255


def _glass_blur(x, severity=1):
    """The reference glass_blur, its pixel loop run on a flat index map (same draws, same pixels).

    The reference "swap" ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` works on numpy views, so it
    copies ``x[h', w']`` into ``x[h, w]`` and leaves ``x[h', w']`` as it was; :func:`_glass_sources`
    works out where every pixel's value comes from, then the pixels are gathered once.
    """
    module = reference_module()
    gaussian = module.gaussian
    sigma, delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    x = np.uint8(gaussian(np.array(x) / 255.0, sigma=sigma, channel_axis=-1) * 255)
    height, width = x.shape[:2]
    flat = x.reshape(height * width, -1)
    rows = range(height - delta, delta, -1)
    columns = range(width - delta, delta, -1)
    for _ in range(iterations):
        # One draw of all offsets gives the same numbers, in the same order, as the reference's
        # draw of two per pixel (numpy's legacy generator; tested).
        offsets = np.random.randint(-delta, delta, size=(len(rows) * len(columns), 2))
        source = _glass_sources(height, width, rows, columns, offsets[:, 1] * width + offsets[:, 0])
        flat = flat[source]
    x = flat.reshape(x.shape)
    return np.clip(gaussian(x / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


def _glass_sources(height: int, width: int, rows: range, columns: range, shifts: np.ndarray) -> np.ndarray:
    """For the reference's pixel loop (``x[p] = x[p + shift]``, pixels ``p`` visited in ``rows`` x
    ``columns`` order, i.e. decreasing flat index): the flat index each pixel's value comes from.

    A visited pixel copies its source's value *at that moment*: the source's own new value when
    the source was visited before (a larger flat index, as the loop runs downwards), else its
    original value. Following those links to their end is pointer jumping: every round doubles
    the length of chain followed, so ~log2(pixels) vectorised rounds replace the per-pixel loop.
    """
    r = np.fromiter(rows, dtype=np.int64)
    c = np.fromiter(columns, dtype=np.int64)
    visited = (r[:, None] * width + c[None, :]).ravel()  # in the loop's order
    source = np.arange(height * width, dtype=np.int64)
    was_visited = np.zeros(height * width, dtype=bool)
    was_visited[visited] = True
    target = visited + np.asarray(shifts, dtype=np.int64)
    source[visited] = target
    # Links still to follow: visited pixels whose source was visited earlier (has a larger index).
    pending = visited[was_visited[target] & (target > visited)]
    linked = np.zeros(height * width, dtype=bool)
    linked[pending] = True
    while len(pending):
        nxt = source[pending]
        source[pending] = source[nxt]
        linked[pending] = linked[nxt]
        pending = pending[linked[pending]]
    return source


# -- applying a condition ---------------------------------------------------------------------
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


def scale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Downscale by ``factor`` (antialiased bilinear, as a video scaler does), at least 1x1 px."""
    from PIL import Image

    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def scale_boxes(boxes: np.ndarray, old_size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """Inclusive-pixel boxes ``(K, 4)`` of a ``old_size`` (W, H) image mapped onto ``new_size``.

    Box ``x_min..x_max`` covers the continuous span ``[x_min, x_max + 1)``; that span is scaled
    and rounded back to whole pixels, so a box keeps covering what it covered.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sx, sy = new_size[0] / old_size[0], new_size[1] / old_size[1]
    x0 = np.floor(boxes[:, 0] * sx + 0.5)
    y0 = np.floor(boxes[:, 1] * sy + 0.5)
    x1 = np.floor((boxes[:, 2] + 1) * sx + 0.5) - 1
    y1 = np.floor((boxes[:, 3] + 1) * sy + 0.5) - 1
    out = np.stack([x0, y0, np.maximum(x1, x0), np.maximum(y1, y0)], axis=1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, new_size[0] - 1)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, new_size[1] - 1)
    return out.astype(np.int64)


def mirror_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Inclusive-pixel boxes of a ``width``-pixel-wide image after a horizontal flip."""
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return np.stack([width - 1 - boxes[:, 2], boxes[:, 1], width - 1 - boxes[:, 0], boxes[:, 3]], axis=1)


@dataclass(frozen=True)
class Condition:
    """One cell of the robustness grid: a corruption (or ``clean``) at a severity."""

    name: str
    severity: int = 0

    def __post_init__(self):
        if self.name == "clean":
            if self.severity != 0:
                raise CorruptionError("clean takes no severity")
        else:
            check_condition(self.name, self.severity)

    @property
    def label(self) -> str:
        return "clean" if self.name == "clean" else f"{self.name}-{self.severity}"


CLEAN = Condition("clean")


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
