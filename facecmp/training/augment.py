"""Robustness-aware fine-tuning: augmented copies of the training frames, mined like any other.

``facecmp finetune --augment`` mines every training frame as it is *and* ``copies`` augmented
copies of it: photometric changes (brightness, contrast, saturation, grayscale, and a strong
contrast reduction for washed-out or hazy frames), Gaussian blur, Gaussian noise, JPEG
compression, a radial (zoom) blur and downscaling (the boxes scaled with the frame). PNet's jittered crops, RNet's and
ONet's detector-mined crops then come from those frames like from the clean ones.

The transforms are torchvision's (``torchvision.transforms.v2``), never the robustness
benchmark's corruption code (``facecmp.study.robustness`` / ``imagecorruptions``): training on
the very corruptions we test on would make the benchmark measure memory, not robustness
(``tests/test_augment.py`` checks that the training modules do not import them).

Every copy is seeded from the fine-tuning seed, the augmentation seed, the image's key and the
copy number, so an image gets the same pixels in every stage's mining, in any order and in any
process. The clean frames keep their mining seeds, so ``augment=None`` mines exactly what
fine-tuning mined before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from facecmp.data.images import read_image
from facecmp.data.records import ImageRecord


WASHOUT_TOWARDS = ("colour", "grey")


@dataclass(frozen=True)
class AugmentSettings:
    """Augmented copies per training frame and the probability and strength of each transform.

    Ranges are ``(low, high)`` drawn uniformly; factors are torchvision's (1 = unchanged).
    """

    copies: int = 1
    seed: int = 0
    # Photometric: ColorJitter's brightness / contrast / saturation factors.
    p_color: float = 0.8
    brightness: tuple[float, float] = (0.6, 1.4)
    contrast: tuple[float, float] = (0.6, 1.4)
    saturation: tuple[float, float] = (0.5, 1.5)
    # Washed-out / hazy frames: contrast cut to this share, each channel blended towards the frame's
    # mean colour ("colour": the frame keeps its colour cast) or towards its mean grey ("grey":
    # ColorJitter's contrast, which also desaturates; the first recipes' choice).
    p_washout: float = 0.5
    washout_contrast: tuple[float, float] = (0.05, 0.4)
    washout_towards: str = "colour"
    p_grayscale: float = 0.1
    # Gaussian blur (sigma in pixels, odd kernel side).
    p_blur: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 4.0)
    blur_kernel: int = 13
    # Radial ("zoom") blur: the frame averaged with centre crops of it zoomed by up to this factor,
    # as footage looks during a fast zoom or a dolly move (the boxes stay where they are).
    p_zoom: float = 0.2
    zoom: tuple[float, float] = (1.05, 1.3)
    zoom_steps: int = 8
    # Additive Gaussian noise, sigma in [0, 1] intensity units.
    p_noise: float = 0.3
    noise_sigma: tuple[float, float] = (0.03, 0.25)
    # JPEG re-compression at a quality in this range.
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (5, 50)
    # Downscaling by a factor in this range (faces shrink with the frame; boxes follow).
    p_scale: float = 0.3
    scale: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        if self.copies < 1:
            raise ValueError(f"AugmentSettings.copies must be at least 1 (got {self.copies}); use augment=None for none")
        for name in ("p_color", "p_washout", "p_grayscale", "p_blur", "p_zoom", "p_noise", "p_jpeg", "p_scale"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentSettings.{name} is a probability in [0, 1] (got {getattr(self, name)})")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"AugmentSettings.scale must satisfy 0 < low <= high <= 1 (got {self.scale})")
        if self.washout_towards not in WASHOUT_TOWARDS:
            raise ValueError(f"AugmentSettings.washout_towards is one of {', '.join(WASHOUT_TOWARDS)} (got {self.washout_towards!r})")
        if not 1.0 <= self.zoom[0] <= self.zoom[1] or self.zoom_steps < 1:
            raise ValueError(f"AugmentSettings.zoom must satisfy 1 <= low <= high and zoom_steps >= 1 (got {self.zoom}, {self.zoom_steps})")


def frame_seed(settings: AugmentSettings, seed: int, key: str, copy: int) -> int:
    """The torch seed of one augmented copy: a hash of both seeds, the image's key and the copy number."""
    text = f"{settings.seed}\0{seed}\0{key}\0{copy}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & (2**63 - 1)


class RandomSigmaGaussianNoise(v2.Transform):
    """v2.GaussianNoise at a sigma drawn per call from ``sigma`` (torchvision's takes one fixed sigma)."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, sigma: tuple[float, float]) -> None:
        super().__init__()
        self.sigma = sigma

    def make_params(self, flat_inputs):
        return {"sigma": float(torch.empty(1).uniform_(*self.sigma))}

    def transform(self, inpt, params):
        return v2.functional.gaussian_noise(inpt, sigma=params["sigma"], clip=True)


class RandomWashout(v2.Transform):
    """Contrast cut per channel: each channel blended towards its own mean over the frame, keeping a
    share drawn per call from ``keep`` (0: a flat frame of the mean colour; 1: unchanged).

    ColorJitter's contrast blends towards the frame's mean grey instead, which also drains the
    colour; a hazy or washed-out frame keeps its colour cast, and PNet trained on grey washouts
    misses faces in tinted ones (docs/robustness.md, "Robustness-aware fine-tuning").
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, keep: tuple[float, float]) -> None:
        super().__init__()
        self.keep = keep

    def make_params(self, flat_inputs):
        return {"keep": float(torch.empty(1).uniform_(*self.keep))}

    def transform(self, inpt, params):
        mean = inpt.mean(dim=(-2, -1), keepdim=True)
        return tv_tensors.wrap((mean + (inpt - mean) * params["keep"]).clamp(0.0, 1.0), like=inpt)


class RandomDownscale(v2.Transform):
    """Resize the frame (and its boxes) by one factor drawn per call from ``scale``, both sides alike.

    (v2.ScaleJitter reads its target size as width-first against the height, so it is not used.)
    """

    def __init__(self, scale: tuple[float, float]) -> None:
        super().__init__()
        self.scale = scale

    def make_params(self, flat_inputs):
        height, width = next(v2.functional.get_size(x) for x in flat_inputs if isinstance(x, tv_tensors.Image))
        factor = float(torch.empty(1).uniform_(*self.scale))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt, params):
        return v2.functional.resize(inpt, size=params["size"], antialias=True)


class RandomZoomBlur(v2.Transform):
    """Radial blur: the mean of the frame and ``steps`` centre crops of it zoomed back to full size,
    by factors spread evenly up to one drawn per call from ``zoom``. Boxes are left as they are.

    Written with torchvision's ``resized_crop`` (bilinear), not the benchmark's zoom_blur.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, zoom: tuple[float, float], steps: int) -> None:
        super().__init__()
        self.zoom = zoom
        self.steps = steps

    def make_params(self, flat_inputs):
        return {"zoom": float(torch.empty(1).uniform_(*self.zoom))}

    def transform(self, inpt, params):
        height, width = inpt.shape[-2:]
        total = inpt.clone()
        for factor in torch.linspace(1.0, params["zoom"], self.steps + 1)[1:].tolist():
            crop_h, crop_w = max(1, round(height / factor)), max(1, round(width / factor))
            top, left = (height - crop_h) // 2, (width - crop_w) // 2
            total += v2.functional.resized_crop(inpt, top, left, crop_h, crop_w, [height, width], antialias=False)
        return tv_tensors.wrap(total / (self.steps + 1), like=inpt)


def augmentation(settings: AugmentSettings) -> v2.Transform:
    """The pipeline: scale, photometric, blur, zoom blur, noise, JPEG.

    Takes and returns a uint8 ``tv_tensors.Image`` with its ``tv_tensors.BoundingBoxes``.
    """
    s = settings
    washout = RandomWashout(s.washout_contrast) if s.washout_towards == "colour" else v2.ColorJitter(contrast=s.washout_contrast)
    return v2.Compose([
        v2.RandomApply([RandomDownscale(s.scale)], p=s.p_scale),
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomApply([v2.ColorJitter(brightness=s.brightness, contrast=s.contrast, saturation=s.saturation)], p=s.p_color),
        v2.RandomApply([washout], p=s.p_washout),
        v2.RandomGrayscale(p=s.p_grayscale),
        v2.RandomApply([v2.GaussianBlur(s.blur_kernel, sigma=s.blur_sigma)], p=s.p_blur),
        v2.RandomApply([RandomZoomBlur(s.zoom, s.zoom_steps)], p=s.p_zoom),
        v2.RandomApply([RandomSigmaGaussianNoise(s.noise_sigma)], p=s.p_noise),
        v2.ToDtype(torch.uint8, scale=True),
        # JPEG through Pillow's encoder: torchvision's own (torchvision.io) is deprecated since 0.29.
        v2.RandomApply([v2.ToPILImage(), v2.JPEG(quality=s.jpeg_quality), v2.ToImage()], p=s.p_jpeg),
    ])


def augment_frame(image: np.ndarray, boxes: np.ndarray, settings: AugmentSettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One augmented copy of an ``H x W x 3`` uint8 frame and its inclusive boxes ``x_min..x_max``.

    Returns the new frame and its boxes, float64 and still inclusive: a box covers the continuous
    pixels ``[x_min, x_max + 1)``, and that region is what scales with the frame. The draws come
    from a generator seeded with ``seed`` alone (torch's global state is restored afterwards).
    """
    height, width = image.shape[:2]
    regions = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    regions[:, 2:] += 1
    pixels = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    boxed = tv_tensors.BoundingBoxes(torch.from_numpy(regions), format="XYXY", canvas_size=(height, width))
    # v2 draws from torch's global generator; fork_rng keeps the caller's state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out, out_boxes = augmentation(settings)(pixels, boxed)
    new_boxes = out_boxes.as_subclass(torch.Tensor).to(torch.float64).numpy().copy()
    new_boxes[:, 2:] -= 1
    return out.permute(1, 2, 0).contiguous().numpy(), new_boxes


@dataclass(frozen=True)
class Frame:
    """One frame mined: ``key`` follows the mining seed (``(i,)`` for image i as it is, ``(i, copy)``
    for its augmented copies), so the clean frames keep the seeds they always had."""

    key: tuple[int, ...]
    record: ImageRecord
    image: np.ndarray
    boxes: np.ndarray


def training_frames(records: Sequence[ImageRecord], augment: AugmentSettings | None, seed: int) -> Iterator[Frame]:
    """Each record's frame as it is, then (with ``augment``) its augmented copies; each image is read once."""
    per = frames_per_record(augment)
    for i in range(len(records)):
        yield from frames_at(records, augment, seed, range(i * per, (i + 1) * per))


def frames_at(records: Sequence[ImageRecord], augment: AugmentSettings | None, seed: int, indices: range) -> list[Frame]:
    """Frames ``indices`` of :func:`training_frames`' sequence (frame ``f`` is copy ``f % per`` of
    record ``f // per``, copy 0 the frame as it is); each record's image is read once."""
    per = frames_per_record(augment)
    frames: list[Frame] = []
    read = None
    for f in indices:
        i, copy = divmod(f, per)
        record = records[i]
        if read is None or read[0] != i:
            read = (i, read_image(record.path))
        image = read[1]
        if copy == 0:
            frames.append(Frame((i,), record, image, record.boxes))
        else:
            pixels, boxes = augment_frame(image, record.boxes, augment, frame_seed(augment, seed, record.key, copy))
            frames.append(Frame((i, copy), record, pixels, boxes))
    return frames


def frames_per_record(augment: AugmentSettings | None) -> int:
    return 1 + (augment.copies if augment is not None else 0)
