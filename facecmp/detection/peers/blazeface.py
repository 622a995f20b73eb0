"""Google's BlazeFace (MediaPipe face detection, short-range and full-range models) as a peer.

``mediapipe`` 0.10.14 is the last 0.10.x wheel for Python 3.11 that ships the BlazeFace models
(``modules/face_detection/face_detection_short_range.tflite`` and
``face_detection_full_range_sparse.tflite``; 0.10.35 dropped them), and it requires protobuf<5,
jax, jaxlib and opencv-contrib-python 5 (whose ``cv2`` would replace the Haar cascade's). So it
runs in an environment of its own: ``make mediapipe-venv`` makes ``.venv-mediapipe``, and each
detector talks to one ``mediapipe_worker.py`` process there (images in, boxes out). The Python
used is ``$FACECMP_MEDIAPIPE_PYTHON`` if set, else ``.venv-mediapipe/bin/python`` in the
repository or the current folder.

Scores are MediaPipe's detection scores; ``min_confidence`` is its ``min_detection_confidence``
(calibrated on the dev split; MediaPipe merges overlapping detections by weighted NMS, so it
changes boxes as well as the cut).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from facecmp.detection.base import Detections, DetectorSettings
from facecmp.detection.peers import detections
from facecmp.errors import MissingPeerError, ModelError

WORKER = Path(__file__).with_name("mediapipe_worker.py")
MEDIAPIPE_VENV = ".venv-mediapipe"
ENV_VAR = "FACECMP_MEDIAPIPE_PYTHON"
MODELS = {"short": 0, "full": 1}
INSTALL = (
    f"blazeface needs mediapipe==0.10.14 in an environment of its own (it requires protobuf<5, jax and "
    f"opencv-contrib-python): run `make mediapipe-venv`, or set {ENV_VAR} to a Python that has it"
)


@dataclass(frozen=True)
class BlazeFaceSettings:
    model: str = "short"
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")


def mediapipe_python() -> Path:
    """The Python that runs the worker, or a MissingPeerError saying how to make one."""
    given = os.environ.get(ENV_VAR)
    if given:
        if not Path(given).is_file():
            raise MissingPeerError(f"{ENV_VAR}={given}: no such file; {INSTALL}")
        return Path(given)
    for base in (Path(__file__).resolve().parents[3], Path.cwd()):
        candidate = base / MEDIAPIPE_VENV / "bin" / "python"
        if candidate.is_file():
            return candidate
    raise MissingPeerError(INSTALL)


class BlazeFaceDetector:
    def __init__(self, settings: BlazeFaceSettings = BlazeFaceSettings()):
        self.settings = settings
        self.python = mediapipe_python()
        self._worker: subprocess.Popen | None = None

    def __getstate__(self):  # a worker process starts its own BlazeFace process
        return {**self.__dict__, "_worker": None}

    def _start(self) -> subprocess.Popen:
        s = self.settings
        worker = subprocess.Popen(
            [str(self.python), str(WORKER), str(MODELS[s.model]), repr(s.min_confidence)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        line = worker.stdout.readline()
        if not line.startswith(b'{"ready"'):
            _out, err = worker.communicate(timeout=30)
            tail = " ".join(err.decode(errors="replace").strip().splitlines()[-1:])
            raise MissingPeerError(f"{self.python} could not run BlazeFace ({tail or 'no output'}); {INSTALL}")
        return worker

    def detect(self, image: np.ndarray) -> Detections:
        if self._worker is None or self._worker.poll() is not None:
            self._worker = self._start()
        image = np.ascontiguousarray(image, dtype=np.uint8)
        height, width = image.shape[:2]
        try:
            self._worker.stdin.write(struct.pack("<II", height, width) + image.tobytes())
            self._worker.stdin.flush()
            answer = json.loads(self._worker.stdout.readline())
        except (BrokenPipeError, json.JSONDecodeError):
            err = self._worker.stderr.read().decode(errors="replace").strip().splitlines()[-1:] if self._worker.stderr else []
            raise ModelError(f"the BlazeFace worker ({self.python}) stopped: {' '.join(err) or 'no message'}") from None
        return detections(answer["boxes"], answer["scores"])

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self.detect(image) for image in images]

    def close(self) -> None:
        if self._worker is not None and self._worker.poll() is None:
            self._worker.stdin.write(struct.pack("<II", 0, 0))
            self._worker.stdin.close()
            self._worker.wait(timeout=30)
        self._worker = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter teardown: the pipe may already be gone
            pass


def blazeface(settings: DetectorSettings = DetectorSettings()) -> BlazeFaceDetector:
    """``--model blazeface``: the short-range model (faces within about 2 m of a phone camera)."""
    return BlazeFaceDetector(BlazeFaceSettings(model="short"))


def blazeface_full(settings: DetectorSettings = DetectorSettings()) -> BlazeFaceDetector:
    """``--model blazeface-full``: the full-range model (faces within about 5 m)."""
    return BlazeFaceDetector(BlazeFaceSettings(model="full"))
