"""nagadomi's anime face detector (``animeface==2.0.3``, Apache-2.0; weights in its ``.so``) as a
peer, in an environment of its own (``peers.environment``): it needs ``Pillow<=11.3`` (on Pillow
12 or 13 it silently returns no faces), so ``make animeface-venv`` makes ``.venv-animeface``. The
Python used is ``$FACECMP_ANIMEFACE_PYTHON`` if set, else ``.venv-animeface/bin/python``.

Scores are its likelihoods; ``min_likelihood`` (a cut above the library's own) is calibrated on
the dev split. Five points per face from its eye boxes, nose and mouth box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from facecmp.detection.base import DetectorSettings
from facecmp.detection.peers.environment import PeerEnvironment, WorkerDetector

NAME = "animeface"
ENVIRONMENT = PeerEnvironment(
    name="animeface", venv=".venv-animeface", env_var="FACECMP_ANIMEFACE_PYTHON",
    needs="animeface==2.0.3 with Pillow<=11.3 (on Pillow 12 or 13 it finds nothing)", worker="animeface_worker.py",
)


@dataclass(frozen=True)
class AnimeFaceSettings:
    min_likelihood: float = 0.0


class AnimeFaceDetector(WorkerDetector):
    quiet_cause = "animeface answers nothing on Pillow >= 12"

    def __init__(self, settings: AnimeFaceSettings = AnimeFaceSettings()):
        self.settings = settings
        super().__init__(ENVIRONMENT, (repr(settings.min_likelihood),), NAME)


def animeface_at(point: Sequence[float]) -> AnimeFaceDetector:
    return AnimeFaceDetector(AnimeFaceSettings(min_likelihood=float(point[0])))


def animeface(settings: DetectorSettings = DetectorSettings()) -> AnimeFaceDetector:
    """``--model animeface``: every face the library reports."""
    return AnimeFaceDetector()
