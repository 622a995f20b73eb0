"""Training samples for RNet and ONet, mined with the earlier stages of the cascade (MTCNN's recipe).

RNet learns on what PNet proposes and ONet on what PNet+RNet pass on, so their samples come
from running those stages over the training images (``Detector.detect_batch(upto=...)``, at
low thresholds so candidates are plentiful). Every candidate is labelled by its IoU with the
image's faces: proposals on a face become positives (IoU >= 0.65) or part faces (0.4-0.65),
false alarms (IoU < 0.3) become *hard* negatives (at most ``hard_negatives_per_image`` per
image, the highest-scoring first: the ones the earlier stage was most sure of). To these are
added the jittered positives / part faces around every annotated face and random and near
negatives (``samples.select_crops``), and the lot is balanced to neg:pos:part = 3:1:1.

Crops are cut exactly as the cascade cuts them (``cascade.crop_windows`` + ``crop_resize``:
the same 1-based truncated window, clipped at the border, the same area resampling), so a
stage trains on the pixels it will see at inference.

Box targets: a candidate box ``(x1, y1, x2, y2)`` shows the pixels ``[x1 - 1, x2)`` (the
cascade's 1-based crop), of side ``s = x2 - x1 + 1``: the scale ``cascade.regress`` multiplies
the offsets by. Targets are ``(face - crop region) / s`` with the face's inclusive annotation
as ``[x_min, x_max + 1)`` (``samples.box_offsets``, the same convention as PNet's samples, so
left-right flips stay exact). Applied by ``regress`` they land one pixel right/down of the
annotation, the 1-based convention the pretrained nets were trained in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from facecmp.detection import cascade as C
from facecmp.data.records import Dataset
from facecmp.data.fingerprint import code_fingerprint, data_fingerprint, library_versions
from facecmp.detection.base import Detections, DetectorSettings
from facecmp.detection.detector import Detector
from facecmp.detection.models import INPUT_SIZE
from facecmp.errors import FacecmpError
from facecmp.training.augment import AugmentSettings
from facecmp.training.samples.batches import mine_frames
from facecmp.training.samples.cache import cached_samples
from facecmp.training.samples.crops import MiningSettings, face_regions, label_crops, pick, select_crops
from facecmp.training.samples.mining import balanced_sample_set
from facecmp.training.samples.sample_set import NEGATIVE, PART, POSITIVE, SampleSet

# Bump when this module changes what it produces: old caches are then ignored.
# 2: the detector's faster forward passes round differently (~1e-6), which moves some mined crops.
HARD_MINING_VERSION = 2
# The stage whose candidates each stage trains on, and the stages that produce them.
PREVIOUS_STAGE = {"rnet": "pnet", "onet": "rnet"}


@dataclass(frozen=True)
class HardMiningSettings:
    """How RNet's or ONet's samples are mined. ``crops`` holds the IoU bands and the jittered-crop recipe."""

    crops: MiningSettings = field(default_factory=lambda: MiningSettings(crop_size=24))
    # Thresholds of the earlier stages while mining (low: many candidates, hard negatives included).
    thresholds: tuple[float, float, float] = (0.6, 0.3, 0.3)
    min_face_size: float = DetectorSettings.min_face_size
    # Candidates kept per image: at most this many positives / part faces / hard negatives.
    positives_per_image: int = 8
    parts_per_image: int = 8
    hard_negatives_per_image: int = 12
    # Mine only this many training images (a seeded random subset; None = all) to bound the cost.
    max_images: int | None = None
    # Images run through the earlier stages together.
    batch_images: int = 8


def default_hard_mining(stage: str) -> HardMiningSettings:
    """The recipes chosen on our Dexter split (docs/results.md has what they give; docs/price.md
    what the image caps save and cost)."""
    if stage == "rnet":
        return HardMiningSettings(crops=MiningSettings(crop_size=24), thresholds=(0.6, 0.3, 0.3), max_images=None)
    if stage == "onet":
        return HardMiningSettings(crops=MiningSettings(crop_size=48), thresholds=(0.6, 0.1, 0.1), max_images=1000)
    raise ValueError(f"hard mining is for rnet and onet, not {stage!r}")


def weights_fingerprint(nets: Mapping[str, nn.Module], stages) -> str:
    """Hash of the weights of ``stages``: the sample cache of a later stage depends on them."""
    h = hashlib.sha256()
    for stage in stages:
        for name, tensor in sorted(nets[stage].state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def hard_mining_fingerprint(
    dataset: Dataset, nets, stage: str, settings: HardMiningSettings, seed: int, augment: AugmentSettings | None = None
) -> str:
    earlier = ("pnet",) if stage == "rnet" else ("pnet", "rnet")
    spec = {"version": HARD_MINING_VERSION, "stage": stage, "settings": asdict(settings), "seed": seed,
            "code": code_fingerprint(), "libraries": library_versions()}
    if augment is not None:  # absent when off, so the keys of unaugmented caches stay what they were
        spec["augment"] = asdict(augment)
    spec = json.dumps(spec, sort_keys=True)
    return hashlib.sha256((data_fingerprint(dataset) + weights_fingerprint(nets, earlier) + spec).encode()).hexdigest()


# --- one image -----------------------------------------------------------------------------


def crop_regions(boxes: np.ndarray) -> np.ndarray:
    """Cascade boxes -> the continuous pixel region ``[x1 - 1, x2)`` the cascade crops for them."""
    regions = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    regions[:, :2] -= 1
    return regions


def region_boxes(regions: np.ndarray) -> np.ndarray:
    """Inverse of :func:`crop_regions`: the cascade box that crops exactly ``regions``."""
    boxes = np.asarray(regions, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, :2] += 1
    return boxes


def pick_candidates(labels: np.ndarray, scores: np.ndarray, settings: HardMiningSettings, rng) -> np.ndarray:
    """Indices of the candidates to keep: random positives/parts, the highest-scoring false alarms."""
    negatives = np.flatnonzero(labels == NEGATIVE)
    hardest = negatives[np.argsort(-scores[negatives], kind="stable")[: settings.hard_negatives_per_image]]
    return np.concatenate([
        pick(labels == POSITIVE, settings.positives_per_image, rng),
        pick(labels == PART, settings.parts_per_image, rng),
        hardest,
    ]).astype(np.int64)


def cut_crops(image: np.ndarray, boxes: np.ndarray, stage: str, sat: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Crops of cascade boxes as ``stage`` sees them: ``(uint8 (N, 3, S, S), kept index)``.

    Boxes whose clipped window is empty (wholly outside the image) are dropped, as the cascade drops them.
    ``sat``: the image's integral image when already at hand (the detector's, ``tables=``; copied to the CPU,
    where crops are cut, when it is elsewhere), else computed here: the same crops either way.
    """
    sat = C.integral_image(torch.from_numpy(image).permute(2, 0, 1)[None]) if sat is None else sat.cpu()
    kept, crops = C.stage_crops(sat, torch.as_tensor(boxes, dtype=torch.float32), torch.zeros(len(boxes), dtype=torch.long), stage)
    return crops.round().clamp(0, 255).to(torch.uint8).numpy(), kept.numpy()


def mine_candidate_image(
    image: np.ndarray, annotated: np.ndarray, candidates, stage: str, settings: HardMiningSettings, rng: np.random.Generator,
    sat: torch.Tensor | None = None,
):
    """Samples of one image, its labelled candidates plus jittered crops and random negatives:
    ``(pixels uint8 (N, 3, S, S), labels (N,), offsets (N, 4), cascade boxes (N, 4))``. ``sat``: as in :func:`cut_crops`."""
    height, width = image.shape[:2]
    faces = face_regions(annotated)
    boxes = np.asarray(candidates.boxes, dtype=np.float64).reshape(-1, 4)
    labels, offsets = label_crops(crop_regions(boxes), faces, settings.crops)
    keep = pick_candidates(labels, np.asarray(candidates.scores), settings, rng)
    # The jittered / random crops of samples.crops, as cascade boxes.
    crops, crop_labels, crop_offsets = select_crops(faces, width, height, settings.crops, rng)
    boxes = np.concatenate([boxes[keep], region_boxes(crops)])
    labels = np.concatenate([labels[keep], crop_labels]).astype(np.int8)
    offsets = np.concatenate([offsets[keep], crop_offsets]).astype(np.float32)
    pixels, valid = cut_crops(image, boxes, stage, sat)
    return pixels, labels[valid], offsets[valid], boxes[valid]


# --- a dataset -------------------------------------------------------------------------------


def mining_detector(nets: Mapping[str, nn.Module], stage: str, settings: HardMiningSettings, device: str) -> Detector:
    """The cascade that proposes ``stage``'s (rnet or onet) candidates, after checking the recipe fits the stage."""
    if stage not in PREVIOUS_STAGE:
        raise ValueError(f"hard mining is for rnet and onet, not {stage!r}")
    if settings.crops.crop_size != INPUT_SIZE[stage]:
        raise ValueError(f"{stage} takes {INPUT_SIZE[stage]} px crops; the mining settings say {settings.crops.crop_size}")
    detector = Detector(nets, DetectorSettings(min_face_size=settings.min_face_size, thresholds=settings.thresholds, device=device))
    return detector


def capped_images(dataset: Dataset, max_images: int | None, seed: int) -> Dataset:
    """``dataset``, or a seeded random ``max_images`` of its images (in their order) when it has more."""
    if max_images is None or len(dataset.images) <= max_images:
        return dataset
    chosen = np.sort(np.random.default_rng([seed, 2]).choice(len(dataset.images), max_images, replace=False))
    return dataclasses.replace(dataset, images=[dataset.images[i] for i in chosen],
                               name=f"{dataset.name}[{max_images} of {len(dataset.images)} images]")


def mining_images(dataset: Dataset, settings: HardMiningSettings, seed: int) -> list:
    return capped_images(dataset, settings.max_images, seed).images


@dataclass
class PnetProposals:
    """PNet's candidates per mined frame, kept by RNet's mining so that ONet's, on frames RNet's already
    mined, starts at RNet (``Detector.refine_batch``): PNet, most of a mining run's time, runs once per
    frame. ``spec`` says which PNet made them (:func:`pnet_spec`); ONet's mining uses them only when
    its own PNet is the same. Filled by :func:`mine_hard_samples` for rnet, read by it for onet."""

    spec: str = ""
    by_frame: dict[tuple, Detections] = field(default_factory=dict)

    def known(self, spec: str, frames) -> list[Detections | None]:
        """Each frame's PNet candidates when ``spec``'s PNet found them here, else None."""
        return [self.by_frame.get(frame_id(f)) if spec == self.spec else None for f in frames]


def frame_id(frame) -> tuple:
    """A mined frame by its image and augmented copy (frame keys number the images of one mining run only)."""
    return (frame.record.key, *frame.key[1:])


def pnet_spec(detector: Detector) -> str:
    """What PNet's candidates depend on: its weights and the detector's settings up to PNet's last NMS."""
    s = detector.settings
    return json.dumps({"pnet": weights_fingerprint(detector.nets, ("pnet",)), "min_face_size": s.min_face_size,
                       "factor": s.factor, "threshold": s.thresholds[0], "nms": list(s.nms_thresholds[:2])})


def mine_hard_samples(
    dataset: Dataset,
    nets: Mapping[str, nn.Module],
    stage: str,
    settings: HardMiningSettings,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    augment: AugmentSettings | None = None,
    workers: int = 0,
    proposals: PnetProposals | None = None,
) -> SampleSet:
    """Mine ``stage``'s (rnet or onet) samples with the earlier stages of ``nets`` (no cache), on
    every mined image and, with ``augment``, its augmented copies (the cascade runs on those too).
    ``workers`` > 0 runs the batches in that many worker processes (the same samples).
    ``proposals``: rnet fills it with PNet's candidates; onet starts from them where they fit
    (:class:`PnetProposals`)."""
    records = mining_images(dataset, settings, seed)
    keep = [] if proposals is not None and stage == "rnet" else None
    miner = batch_miner(nets, stage, settings, seed, device, proposals=proposals if stage == "onet" else None, keep=keep is not None)
    images, labels, offsets = mine_frames(records, augment, seed, miner, batch=settings.batch_images, workers=workers,
                                          desc=f"mining {stage} samples", progress=progress, extras=keep)
    if keep is not None:
        proposals.spec = pnet_spec(mining_detector(nets, stage, settings, device))
        proposals.by_frame = dict(found for (found,) in keep)
    return balanced_sample_set(images, labels, offsets, settings.crops, np.random.default_rng([seed, len(records)]))


def batch_miner(nets: Mapping[str, nn.Module], stage: str, settings: HardMiningSettings, seed: int, device: str = "cpu",
                proposals: PnetProposals | None = None, keep: bool = False):
    """``frames -> [(crops, labels, offsets)]``: the earlier stages run on the batch together,
    then each frame's candidates are labelled and cut with its own seeded generator. ``keep`` (rnet):
    each frame's PNet candidates follow, as ``(frame_id, Detections)``; ``proposals`` (onet): PNet's
    candidates found before, used for the frames they cover (PNet runs on the others)."""
    detector = mining_detector(nets, stage, settings, device)
    spec = pnet_spec(detector) if proposals is not None else ""

    def mine(frames):
        images = [f.image for f in frames]
        known = proposals.known(spec, frames) if proposals is not None else [None] * len(frames)
        found = [None] * len(frames)
        sats = [None] * len(frames)  # the detector's integral images, cut again below
        fresh = [i for i, k in enumerate(known) if k is None]
        started = [i for i, k in enumerate(known) if k is not None]
        for group, run in ((fresh, lambda ims, t: detector.detect_batch(ims, upto=PREVIOUS_STAGE[stage], tables=t)),
                           (started, lambda ims, t: detector.refine_batch(ims, [known[i] for i in started], tables=t))):
            if group:
                tables = [None] * len(group)
                candidates = run([images[i] for i in group], tables)
                for i, c, sat in zip(group, candidates, tables):
                    found[i], sats[i] = c, sat
        mined = [mine_candidate_image(f.image, f.boxes, candidates, stage, settings, np.random.default_rng([seed, *f.key]), sat)[:3]
                 for f, candidates, sat in zip(frames, found, sats)]
        if keep:
            mined = [(*m, (frame_id(f), candidates)) for m, f, candidates in zip(mined, frames, found)]
        return mined

    return mine


def mine_stage_samples(
    dataset: Dataset,
    nets: Mapping[str, nn.Module],
    stage: str,
    settings: HardMiningSettings,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    augment: AugmentSettings | None = None,
    workers: int = 0,
    proposals: PnetProposals | None = None,
) -> SampleSet:
    """:func:`mine_hard_samples`, read from ``cache_dir`` when the data, settings, augmentation and
    earlier weights are unchanged (``proposals`` is then left as it was)."""
    if cache_dir is None:
        return mine_hard_samples(dataset, nets, stage, settings, seed, device, progress, augment, workers, proposals)
    key = hard_mining_fingerprint(dataset, nets, stage, settings, seed, augment)[:20]
    path = Path(cache_dir) / f"samples{settings.crops.crop_size}_{stage}_{key}.npz"

    def mine() -> SampleSet:
        samples = mine_hard_samples(dataset, nets, stage, settings, seed, device, progress, augment, workers, proposals)
        if len(samples) == 0:
            raise FacecmpError(f"{dataset.name}: mining {stage} samples found nothing; are there faces in the training images?")
        return samples

    return cached_samples(path, mine)
