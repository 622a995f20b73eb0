"""Who is it: a character classifier on the faces the detector finds (the course's task 2).

The recognizer is ONet's trunk (``conv1`` ... ``prelu5``, the 256-d feature layer, with ONet's
own parameter names) plus a linear head over the training set's characters and ``unknown``.
Three ways to get it (``KINDS``), all stored the same way:

- ``probe-pretrained``: the pretrained ONet's features, frozen (trained on human faces), and a
  linear classifier on top -- transfer learning, a linear probe;
- ``probe-finetuned``: the same on the checkpoint's (fine-tuned) ONet;
- ``finetune``: the trunk fine-tuned end to end with the character head (from the checkpoint's ONet).

A face is classified on a 48x48 crop of its box grown to a square (ONet's input), resampled by
area from the integral image, as ONet's own crops are. In a checkpoint folder it is
``recognizer.pt`` (a plain state dict: ``conv1.weight`` ... ``prelu5.weight``, ``head.weight``,
``head.bias``) and ``facecmp.json["recognizer"]`` (class names, kind, training record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from facecmp import atomic
from facecmp.detection import cascade as C
from facecmp.detection.base import Detections
from facecmp.detection.checkpoint import META_FILE
from facecmp.detection.detector import padded_batch_size
from facecmp.detection.models import INPUT_SIZE, load_state_dict
from facecmp.data.records import UNKNOWN
from facecmp.errors import ModelError

RECOGNIZER_FILE = "recognizer.pt"
KINDS = ("probe-pretrained", "probe-finetuned", "finetune")
CROP = INPUT_SIZE["onet"]
FEATURES = 256
# ONet's layers up to its 256-d features, in order.
TRUNK = ("conv1", "prelu1", "pool1", "conv2", "prelu2", "pool2", "conv3", "prelu3", "pool3", "conv4", "prelu4", "dense5", "prelu5")


class RecognizerNet(nn.Module):
    """ONet's trunk (same layer names) and a linear character head: 48x48 crops -> class logits."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        from facecmp.detection.models import ONet

        onet = ONet()
        for name in TRUNK:
            setattr(self, name, getattr(onet, name))
        self.head = nn.Linear(FEATURES, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()  # Caffe flattening order, as in ONet
        return self.prelu5(self.dense5(x.view(x.shape[0], -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def trunk_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith("head.")]

    @classmethod
    def from_onet(cls, onet_state_dict: dict[str, torch.Tensor], n_classes: int) -> "RecognizerNet":
        """A recognizer whose trunk is this ONet's (the head fresh)."""
        net = cls(n_classes)
        trunk = {k: v for k, v in onet_state_dict.items() if k.split(".")[0] in TRUNK}
        missing, _ = net.load_state_dict(trunk, strict=False)
        if any(not k.startswith("head.") for k in missing):
            raise ModelError(f"ONet weights lack {[k for k in missing if not k.startswith('head.')]}")
        return net


def face_windows(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Crop windows of ``boxes`` (float ``x1, y1, x2, y2``) grown to squares, clipped to the image."""
    squared = C.square(torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)))
    windows = C.crop_windows(squared, width, height)
    # A box that lies outside the image after squaring keeps at least one pixel.
    windows[:, 2] = np.maximum(windows[:, 2], np.minimum(windows[:, 0] + 1, width))
    windows[:, 3] = np.maximum(windows[:, 3], np.minimum(windows[:, 1] + 1, height))
    windows[:, 0] = np.minimum(windows[:, 0], windows[:, 2] - 1)
    windows[:, 1] = np.minimum(windows[:, 1], windows[:, 3] - 1)
    return windows


def face_crops(image: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
    """``(K, 3, 48, 48)`` uint8-valued float crops (not normalised) of each box's square in an ``H x W x 3`` image."""
    height, width = image.shape[:2]
    windows = face_windows(boxes, width, height)
    if len(windows) == 0:
        return torch.zeros((0, 3, CROP, CROP))
    # The integral image of the region the faces cover only (exact integer sums, so the same crops).
    x0, y0 = windows[:, 0].min(), windows[:, 1].min()
    x1, y1 = windows[:, 2].max(), windows[:, 3].max()
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    sat = C.integral_image(torch.as_tensor(region)[None].permute(0, 3, 1, 2))
    shifted = windows - np.array([x0, y0, x0, y0], dtype=windows.dtype)
    return C.crop_resize(sat, shifted, torch.zeros(len(windows), dtype=torch.long), CROP)


@dataclass
class Recognizer:
    """A trained recognizer and its class names (``unknown`` included when the data had it)."""

    net: RecognizerNet
    classes: tuple[str, ...]
    info: dict

    def __post_init__(self) -> None:
        self.net = self.net.eval().to(memory_format=torch.channels_last)

    @property
    def characters(self) -> tuple[str, ...]:
        """The named characters (task 2 is scored for these)."""
        return tuple(c for c in self.classes if c != UNKNOWN)

    @torch.inference_mode()
    def probabilities(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """``(K, n_classes)`` class probabilities of the faces ``boxes`` in ``image``."""
        if len(boxes) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float64)
        crops = C.normalize(face_crops(image, boxes))
        n, padded = len(crops), padded_batch_size(len(crops))
        if padded > n:  # few distinct batch sizes: oneDNN plans one convolution per input shape
            crops = torch.cat([crops, crops.new_zeros((padded - n, *crops.shape[1:]))])
        logits = self.net(crops.contiguous(memory_format=torch.channels_last))[:n]
        return torch.softmax(logits, dim=1).double().numpy()


@dataclass
class CharacterDetections(Detections):
    """Detections plus each face's class probabilities ``(K, n_classes)``."""

    probs: np.ndarray = None  # type: ignore[assignment]


class CharacterDetector:
    """A detector followed by a recognizer: ``detect_batch`` returns :class:`CharacterDetections`."""

    def __init__(self, detector, recognizer: Recognizer):
        self.detector = detector
        self.recognizer = recognizer
        self.settings = getattr(detector, "settings", None)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[CharacterDetections]:
        found = self.detector.detect_batch(images)
        return [
            CharacterDetections(d.boxes, d.scores, d.landmarks, probs=self.recognizer.probabilities(img, d.boxes))
            for img, d in zip(images, found)
        ]


def character_scores(detections: CharacterDetections, classes: Sequence[str], character: str) -> np.ndarray:
    """A face's task-2 score for ``character``: detection score x that class's probability."""
    return detections.scores * detections.probs[:, list(classes).index(character)]


# -- in a checkpoint folder ------------------------------------------------------------------------
def save_recognizer(folder: str | Path, net: RecognizerNet, classes: Sequence[str], info: dict) -> Path:
    """Write ``recognizer.pt``, then add ``"recognizer"`` (classes + ``info``) to ``facecmp.json``."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ModelError(f"{folder}: no {META_FILE}; a recognizer is added to a finished checkpoint folder")
    plain = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    atomic.save_torch(folder / RECOGNIZER_FILE, plain)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["recognizer"] = {**info, "classes": list(classes), "file": RECOGNIZER_FILE}
    atomic.write_json(meta_path, meta)
    return folder / RECOGNIZER_FILE


def how_to_train(folder: str | Path) -> str:
    return (f"train one with `facecmp finetune --data ROOT --out {folder} --stages recognizer --from {folder}` "
            "(or add `recognizer` to --stages when fine-tuning)")


def has_recognizer(folder: str | Path) -> bool:
    folder = Path(folder)
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("recognizer"), dict) and (folder / RECOGNIZER_FILE).is_file()


def load_recognizer(folder: str | Path) -> Recognizer:
    """The recognizer of a checkpoint folder; a clear error when it has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: not a checkpoint folder, so it has no recognizer; {how_to_train('CKPT')}")
    if not has_recognizer(folder):
        raise ModelError(f"{folder}: this checkpoint has no character recognizer ({RECOGNIZER_FILE}); {how_to_train(folder)}")
    info = json.loads((folder / META_FILE).read_text(encoding="utf-8"))["recognizer"]
    classes = info.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ModelError(f"{folder / META_FILE}: \"recognizer\" must list its \"classes\"; got {classes!r}. {how_to_train(folder)}")
    state = load_state_dict(folder / RECOGNIZER_FILE)
    net = RecognizerNet(len(classes))
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{folder / RECOGNIZER_FILE}: does not fit a recognizer over {len(classes)} classes ({exc}); "
                         f"{how_to_train(folder)}") from None
    return Recognizer(net, tuple(classes), info)


def task2_predictions(per_image: dict, classes: Sequence[str], characters: Sequence[str] | None = None) -> dict:
    """``character -> Predictions`` (the course's task-2 files) from ``key -> CharacterDetections``:
    every detected face is listed for every named character, scored by :func:`character_scores`."""
    from facecmp.data.predictions import Predictions

    characters = tuple(characters or (c for c in classes if c != UNKNOWN))
    out = {}
    for char in characters:
        parts = [Predictions(d.boxes.reshape(-1, 4), character_scores(d, classes, char), np.full(len(d), key, dtype=object))
                 for key, d in per_image.items()]
        out[char] = Predictions.concatenate(parts)
    return out
