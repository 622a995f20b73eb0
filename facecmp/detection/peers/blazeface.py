"""Google's BlazeFace (MediaPipe face detection, short-range and full-range models) as a peer.

``mediapipe`` 0.10.14 is the last 0.10.x wheel for Python 3.11 that ships the BlazeFace models
(``modules/face_detection/face_detection_short_range.tflite`` and
``face_detection_full_range_sparse.tflite``; 0.10.35 dropped them), and it requires protobuf<5,
jax, jaxlib and opencv-contrib-python 5 (whose ``cv2`` would replace the Haar cascade's). So it
runs in an environment of its own (``peers.environment``): ``make mediapipe-venv`` makes
``.venv-mediapipe``, and each detector talks to one ``mediapipe_worker.py`` process there. The
Python used is ``$FACECMP_MEDIAPIPE_PYTHON`` if set, else ``.venv-mediapipe/bin/python`` in the
repository or the current folder.

Scores are MediaPipe's detection scores; ``min_confidence`` is its ``min_detection_confidence``
(calibrated on the dev split; MediaPipe merges overlapping detections by weighted NMS, so it
changes boxes as well as the cut).
"""

from __future__ import annotations

from dataclasses import dataclass

from facecmp.detection.base import DetectorSettings
from facecmp.detection.peers.environment import PeerEnvironment, WorkerDetector

ENVIRONMENT = PeerEnvironment(
    name="mediapipe", venv=".venv-mediapipe", env_var="FACECMP_MEDIAPIPE_PYTHON",
    needs="mediapipe==0.10.14 (it requires protobuf<5, jax and opencv-contrib-python)", worker="mediapipe_worker.py",
)
MODELS = {"short": 0, "full": 1}


@dataclass(frozen=True)
class BlazeFaceSettings:
    model: str = "short"
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")


class BlazeFaceDetector(WorkerDetector):
    def __init__(self, settings: BlazeFaceSettings = BlazeFaceSettings()):
        self.settings = settings
        name = "blazeface" if settings.model == "short" else "blazeface-full"
        super().__init__(ENVIRONMENT, (MODELS[settings.model], repr(settings.min_confidence)), name)


def blazeface(settings: DetectorSettings = DetectorSettings()) -> BlazeFaceDetector:
    """``--model blazeface``: the short-range model (faces within about 2 m of a phone camera)."""
    return BlazeFaceDetector(BlazeFaceSettings(model="short"))


def blazeface_full(settings: DetectorSettings = DetectorSettings()) -> BlazeFaceDetector:
    """``--model blazeface-full``: the full-range model (faces within about 5 m)."""
    return BlazeFaceDetector(BlazeFaceSettings(model="full"))
