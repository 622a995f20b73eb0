"""RetinaFace (MobileNetV2 backbone; the ``retinaface==1.1.1`` wheel's TensorFlow frozen graph) as a
peer, in an environment of its own (``peers.environment``): ``make retinaface-venv`` makes
``.venv-retinaface`` with ``tensorflow-cpu`` and ``retinaface`` installed ``--no-deps`` (its
metadata pins tf 2.5, streamlit and opencv 4.6). The Python used is
``$FACECMP_RETINAFACE_PYTHON`` if set, else ``.venv-retinaface/bin/python``.

Scores are the graph's face scores (it suppresses overlaps and drops low scores itself);
``min_score`` cuts above that and ``side`` is the longer side the image is resized to (0: as it
is; the wheel's default quality resizes to 800 px): both are calibrated on the dev split. Five
landmarks per face.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from facecmp.detection.base import DetectorSettings
from facecmp.detection.peers.environment import PeerEnvironment, WorkerDetector

NAME = "retinaface"
ENVIRONMENT = PeerEnvironment(
    name="retinaface", venv=".venv-retinaface", env_var="FACECMP_RETINAFACE_PYTHON",
    needs="tensorflow-cpu and retinaface==1.1.1 (installed --no-deps: it pins tf 2.5, streamlit and opencv 4.6)",
    worker="retinaface_worker.py",
)


@dataclass(frozen=True)
class RetinaFaceSettings:
    side: int = 800
    min_score: float = 0.0

    def __post_init__(self) -> None:
        if self.side != 0 and self.side < 32:
            raise ValueError(f"side must be 0 (as it is) or >= 32 px, got {self.side}")


class RetinaFaceDetector(WorkerDetector):
    def __init__(self, settings: RetinaFaceSettings = RetinaFaceSettings()):
        self.settings = settings
        super().__init__(ENVIRONMENT, (settings.side, repr(settings.min_score)), NAME)


def retinaface_at(point: Sequence[float]) -> RetinaFaceDetector:
    """The detector at a calibration grid point ``(side, min_score)``."""
    return RetinaFaceDetector(RetinaFaceSettings(side=int(point[0]), min_score=float(point[1])))


def retinaface(settings: DetectorSettings = DetectorSettings()) -> RetinaFaceDetector:
    """``--model retinaface``: the wheel's default quality (longer side 800 px), every face the graph keeps."""
    return RetinaFaceDetector()
