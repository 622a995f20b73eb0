"""``Detector``: the three-stage MTCNN cascade with its settings.

image pyramid -> PNet -> NMS -> RNet -> NMS -> ONet -> NMS (min-overlap). Default settings
equal facenet-pytorch's ``MTCNN`` (min face 20, factor 0.709, thresholds 0.6/0.7/0.7).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from facecmp.detection import cascade as C
from facecmp.detection.base import NAMED_MODELS, Detections, DetectorSettings
from facecmp.errors import ModelError
from facecmp.detection.fastforward import FAST_FORWARD
from facecmp.detection.geometry import landmark_points
from facecmp.detection.models import STAGES, build_network, pretrained_network

# Batches handed to RNet/ONet at once; bounds memory on images with thousands of proposals.
REFINE_BATCH = 2048
# Image sizes whose pyramid plans are kept (see Detector._pyramids).
PYRAMID_PLANS_KEPT = 8


def padded_batch_size(n: int) -> int:
    """``n`` rounded up to a multiple of 4 (up to 32) or of 16.

    oneDNN builds a convolution plan per input shape: on CPU, a batch size never seen before
    costs ~5 ms for RNet and ~20 ms for ONet, more than the crops themselves. Rounding keeps
    the number of distinct shapes small, so after the first images every plan is reused.
    """
    step = 4 if n <= 32 else 16
    return -(-n // step) * step


def run_padded(net, crops: torch.Tensor):
    """``net(crops)`` with the batch zero-padded to ``padded_batch_size``; padding rows dropped."""
    n = len(crops)
    padded = padded_batch_size(n)
    if padded > n:
        crops = torch.cat([crops, crops.new_zeros((padded - n, *crops.shape[1:]))])
    outputs = net(crops.contiguous(memory_format=torch.channels_last))
    return tuple(out[:n] for out in outputs)


class Detector:
    """Runs the cascade. Stages not given in ``nets`` use the pretrained weights."""

    def __init__(self, nets: Mapping[str, nn.Module] | None = None, settings: DetectorSettings | None = None):
        self.settings = settings or DetectorSettings()
        nets = dict(nets or {})
        self.device = torch.device(self.settings.device)
        # The detector owns copies of the nets, in channels-last layout: 1.6x (PNet) to 4x (ONet)
        # faster convolutions on CPU than the default layout, with the same results to ~1e-6.
        self.nets = {
            s: copy.deepcopy(nets[s] if s in nets else pretrained_network(s))
            .eval()
            .to(self.device, memory_format=torch.channels_last)
            for s in STAGES
        }
        # What detection runs: the same layers with exact, faster equivalents (fastforward.py).
        self.forward = {s: FAST_FORWARD[s](net) for s, net in self.nets.items()}
        # Pyramid levels per image size, planned on first sight of that size (a few MB each for
        # 480x360: the most recent sizes only, for folders of photos of every size).
        self._pyramids: dict[tuple[int, int], list] = {}

    @classmethod
    def from_checkpoint(cls, path: str | Path, **setting_overrides) -> "Detector":
        """Fine-tuned stages from a checkpoint folder, the rest pretrained; stored thresholds unless overridden."""
        from facecmp.detection.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        nets = {stage: build_network(stage, sd) for stage, sd in ckpt.state_dicts.items()}
        stored = {}
        if ckpt.thresholds is not None:
            stored["thresholds"] = tuple(ckpt.thresholds)
        if ckpt.meta.get("min_face_size"):
            stored["min_face_size"] = float(ckpt.meta["min_face_size"])
        try:
            settings = DetectorSettings(**{**stored, **{k: v for k, v in setting_overrides.items() if v is not None}})
        except ValueError as exc:
            raise ModelError(f"{path}: stored detector settings are invalid ({exc})") from None
        return cls(nets, settings)

    def with_settings(self, **changes) -> "Detector":
        return Detector(self.nets, dataclasses.replace(self.settings, **changes))

    # -- public API -------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> Detections:
        """Faces in one ``H x W x 3`` uint8 RGB image."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray], upto: str = "onet", tables: list | None = None) -> list[Detections]:
        """Faces in each image; images of equal size run through the networks together.

        ``upto="pnet"`` or ``"rnet"`` stops after that stage and returns its (squared,
        regressed) candidate boxes: what the next stage would see, e.g. to mine its
        training samples or to measure recall per stage.

        ``tables``: a list of ``len(images)`` whose slot i receives image i's integral image
        (``cascade.integral_image``, ``(1, C, H + 1, W + 1)``, a view of its batch's), for a caller
        that cuts more crops from the same images (hard mining) without summing them again.
        """
        if upto not in STAGES:
            raise ValueError(f"upto must be one of {STAGES}, got {upto!r}")
        results: list[Detections | None] = [None] * len(images)
        for members in _same_size(images).values():
            batch = np.stack([images[i] for i in members])
            sats = [None] * len(members) if tables is not None else None
            for i, det in zip(members, self._detect_same_size(batch, upto, tables=sats)):
                results[i] = det
            if tables is not None:
                for i, sat in zip(members, sats):
                    tables[i] = sat
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def refine_batch(self, images: Sequence[np.ndarray], proposals: Sequence[Detections],
                     tables: list | None = None) -> list[Detections]:
        """``detect_batch(images, upto="rnet")`` from PNet's candidates already found for these images
        (``detect_batch(upto="pnet")``'s output at this detector's PNet settings and weights): RNet's part
        alone. Equal to running PNet again up to float rounding in NMS (its IoUs are computed on boxes
        shifted by the largest coordinate of the batch they ran in). ``tables``: as in :meth:`detect_batch`."""
        results: list[Detections | None] = [None] * len(images)
        for members in _same_size(images).values():
            imgs = torch.as_tensor(np.stack([images[i] for i in members]), device=self.device).permute(0, 3, 1, 2)
            found = [torch.as_tensor(proposals[i].boxes, dtype=torch.float32, device=self.device).reshape(-1, 4) for i in members]
            inds = torch.cat([torch.full((len(b),), k, dtype=torch.long, device=self.device) for k, b in enumerate(found)])
            sat = C.integral_image(imgs)
            if tables is not None:
                for k, i in enumerate(members):
                    tables[i] = sat[k:k + 1]
            boxes, scores, inds = self._refine(sat, torch.cat(found), inds)
            for i, det in zip(members, _per_image(len(members), boxes, scores, inds)):
                results[i] = det
        return results  # type: ignore[return-value]

    # -- the cascade ------------------------------------------------------------------
    @torch.inference_mode()
    def _detect_same_size(self, batch: np.ndarray, upto: str = "onet", tables: list | None = None) -> list[Detections]:
        imgs = torch.as_tensor(batch, device=self.device).permute(0, 3, 1, 2)
        # One integral image serves the whole pyramid and both crop stages.
        sat = C.integral_image(imgs)
        if tables is not None:
            tables[:] = [sat[k:k + 1] for k in range(len(batch))]
        boxes, scores, inds = self._propose(sat)
        if upto != "pnet":
            boxes, scores, inds = self._refine(sat, boxes, inds)
        points = None
        if upto == "onet":
            boxes, scores, inds, points = self._output(sat, boxes, inds)
        return _per_image(len(batch), boxes, scores, inds, points)

    def _propose(self, sat: torch.Tensor):
        """Stage 1: PNet over the pyramid; squared candidate boxes per image."""
        s = self.settings
        h, w = sat.shape[2] - 1, sat.shape[3] - 1
        levels = self._pyramids.pop((h, w), None) or C.pyramid(h, w, s.min_face_size, s.factor, sat.device)
        self._pyramids[(h, w)] = levels  # re-inserted: the dict's order is least to most recent
        while len(self._pyramids) > PYRAMID_PLANS_KEPT:
            del self._pyramids[next(iter(self._pyramids))]
        all_boxes, all_scores, all_offsets, all_inds = [], [], [], []
        pnet = self.forward["pnet"]
        for scale, resize in levels:
            features, probs = pnet(C.normalize_(resize(sat)))
            boxes, scores, cells = C.proposals_from_maps(probs, scale, s.thresholds[0])
            keep = C.batched_nms(boxes, scores, cells[:, 0], s.nms_thresholds[0])
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_offsets.append(pnet.offsets(features, cells[keep]))
            all_inds.append(cells[keep, 0])
        if not all_boxes:
            return torch.zeros((0, 4), device=sat.device), torch.zeros(0, device=sat.device), torch.zeros(0, dtype=torch.long, device=sat.device)
        boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
        offsets, inds = torch.cat(all_offsets), torch.cat(all_inds)
        keep = C.batched_nms(boxes, scores, inds, s.nms_thresholds[1])
        boxes = C.square(C.regress_pnet(boxes[keep], offsets[keep]))
        return boxes, scores[keep], inds[keep]

    def classify(self, stage: str, sat: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor):
        """Run ``stage`` (rnet or onet) on the crops of candidate boxes of the images in ``sat``.

        Returns ``(boxes, inds, outputs)`` for the boxes with a non-empty crop (``outputs`` is
        the net's tuple, or None when no box is left), in batches that bound memory.
        """
        kept_boxes, kept_inds, outs = [], [], []
        for start in range(0, len(boxes), REFINE_BATCH):
            sl = slice(start, start + REFINE_BATCH)
            kept, crops = C.stage_crops(sat, boxes[sl], inds[sl], stage)
            kept_boxes.append(boxes[sl][kept])
            kept_inds.append(inds[sl][kept])
            if len(kept):
                outs.append(run_padded(self.forward[stage], C.normalize(crops)))
        if not outs:
            return boxes[:0], inds[:0], None
        return torch.cat(kept_boxes), torch.cat(kept_inds), tuple(torch.cat(parts) for parts in zip(*outs))

    def _refine(self, sat: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor):
        """Stage 2: RNet rescoring, NMS, regression, squaring."""
        s = self.settings
        boxes, inds, out = self.classify("rnet", sat, boxes, inds)
        if out is None:
            return boxes, boxes.new_zeros(0), inds
        offsets, scores = out
        passed = scores > s.thresholds[1]
        boxes, scores, offsets, inds = boxes[passed], scores[passed], offsets[passed], inds[passed]
        keep = C.batched_nms(boxes, scores, inds, s.nms_thresholds[2])
        boxes = C.square(C.regress(boxes[keep], offsets[keep]))
        return boxes, scores[keep], inds[keep]

    def _output(self, sat: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor):
        """Stage 3: ONet rescoring, regression, min-overlap NMS; the kept faces' landmarks (numpy, (K, 5, 2))."""
        s = self.settings
        boxes, inds, out = self.classify("onet", sat, boxes, inds)
        if out is None:
            return boxes, boxes.new_zeros(0), inds, np.zeros((0, 5, 2), np.float32)
        offsets, landmarks, scores = out
        passed = scores > s.thresholds[2]
        seen, landmarks = boxes[passed], landmarks[passed]
        boxes = C.regress(seen, offsets[passed])
        scores, inds = scores[passed], inds[passed]
        keep = C.batched_nms_min(boxes, scores, inds, s.nms_thresholds[3])
        points = landmark_points(seen[keep].cpu().numpy(), landmarks[keep].cpu().numpy())
        return boxes[keep], scores[keep], inds[keep], points


def _same_size(images: Sequence[np.ndarray]) -> dict[tuple, list[int]]:
    """Indices of ``images`` grouped by shape (a batch runs the networks on images of one size)."""
    by_size: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        by_size.setdefault(img.shape, []).append(i)
    return by_size


def _per_image(n: int, boxes: torch.Tensor, scores: torch.Tensor, inds: torch.Tensor, points=None) -> list[Detections]:
    """A batch's candidates (``inds``: the image of each) as one ``Detections`` per image of the ``n``."""
    boxes_np, scores_np, inds_np = boxes.cpu().numpy(), scores.cpu().numpy(), inds.cpu().numpy()
    return [
        Detections(boxes_np[inds_np == b], scores_np[inds_np == b], None if points is None else points[inds_np == b])
        for b in range(n)
    ]


def pretrained(settings: DetectorSettings | None = None) -> Detector:
    """The cascade with facenet-pytorch's pretrained weights (the named model ``pretrained``)."""
    return Detector(settings=settings)


def load_detector(model: str | Path = "pretrained", **setting_overrides):
    """A model from ``base.NAMED_MODELS`` by name, or a checkpoint folder (fine-tuned stages).
    ``None`` overrides keep the defaults / the checkpoint's stored values."""
    overrides = {k: v for k, v in setting_overrides.items() if v is not None}
    if str(model) in NAMED_MODELS:
        return NAMED_MODELS[str(model)].build(DetectorSettings(**overrides))
    from facecmp.detection.peers.dlib_hog import is_dlib_checkpoint, load_dlib_checkpoint

    if is_dlib_checkpoint(model):
        return load_dlib_checkpoint(model)
    return Detector.from_checkpoint(model, **overrides)
