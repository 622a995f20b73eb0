"""Peers that run in an environment of their own (their packages clash with facecmp's): one
worker process per detector, started with that environment's Python, images in and boxes out
(``worker_protocol``). The Python is ``$<ENV_VAR>`` if set, else ``<venv>/bin/python`` in the
repository or the current folder, made by ``make <name>-venv``.

Three ways it can fail, three messages: no such Python (missing: run the make target), a Python
whose package is not installed (missing too), a worker that does not start or says its package
is broken (broken: rebuild the environment).
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

from facecmp.detection.base import Detections
from facecmp.detection.peers import detections
from facecmp.errors import BrokenPeerError, MissingPeerError, ModelError

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parents[2]


@dataclass(frozen=True)
class PeerEnvironment:
    """``make <name>-venv`` builds ``venv`` with ``needs`` installed; ``worker`` runs there."""

    name: str
    venv: str
    env_var: str
    needs: str
    worker: str

    def missing_line(self, model: str) -> str:
        return (f"{model} needs {self.needs} in an environment of its own: run `make {self.name}-venv`, "
                f"or set {self.env_var} to a Python that has it")

    def broken_line(self, model: str, python: Path, problem: str) -> str:
        return f"{model}: its environment ({python}) is broken: {problem}; rebuild it: rm -rf {self.venv} && make {self.name}-venv"

    def python(self, model: str) -> Path:
        """The Python that runs the worker, or a MissingPeerError saying how to make one."""
        given = os.environ.get(self.env_var)
        if given:
            if not Path(given).is_file():
                raise MissingPeerError(f"{self.env_var}={given}: no such file; {self.missing_line(model)}")
            return Path(given)
        for base in (REPOSITORY, Path.cwd()):
            candidate = base / self.venv / "bin" / "python"
            if candidate.is_file():
                return candidate
        raise MissingPeerError(self.missing_line(model))


class WorkerDetector:
    """A detector whose model runs in ``environment``'s worker, started with ``args`` on first use."""

    def __init__(self, environment: PeerEnvironment, args: Sequence[str], name: str):
        self.environment, self.args, self.name = environment, tuple(str(a) for a in args), name
        self.python = environment.python(name)
        self._worker: subprocess.Popen | None = None
        self.version: str | None = None

    quiet_cause = ""  # a known reason this environment may answer nothing at all

    @property
    def silent_hint(self) -> str:
        """What to do when it found nothing on a whole set with faces."""
        cause = f"{self.quiet_cause}; " if self.quiet_cause else ""
        return f"{cause}rebuild its environment: rm -rf {self.environment.venv} && make {self.environment.name}-venv"

    def __getstate__(self):  # a worker process starts its own model process
        return {**self.__dict__, "_worker": None}

    def _start(self) -> subprocess.Popen:
        worker = subprocess.Popen(
            [str(self.python), str(HERE / self.environment.worker), *self.args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1",
                 "PYTHONPATH": ""},
        )
        line = worker.stdout.readline()
        try:
            hello = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError:
            hello = {}
        if "ready" in hello:
            self.version = hello["ready"]
            return worker
        _out, err = worker.communicate(timeout=60)
        if "missing" in hello:
            raise MissingPeerError(f"{self.python} has no {hello['missing']!r}; {self.environment.missing_line(self.name)}")
        tail = hello.get("broken") or " ".join(err.decode(errors="replace").strip().splitlines()[-1:]) or f"exit status {worker.returncode}, no output"
        raise BrokenPeerError(self.environment.broken_line(self.name, self.python, tail))

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
            raise ModelError(f"the {self.name} worker ({self.python}) stopped: {' '.join(err) or 'no message'}") from None
        return detections(answer["boxes"], answer["scores"], answer.get("landmarks"))

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

