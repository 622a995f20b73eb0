"""Whole-process speed: ``facecmp detect`` run as a user runs it, one model against another.

Each run is a fresh ``python -m facecmp.cli detect`` process (start-up, decoding, detection,
writing the ``.npy`` files: what a user waits for). Runs alternate between the models (a, b,
b, a, ...) so that drifting machine load hits both alike; each model's time is the median of
its runs. The detections of the last runs are compared box by box.

Used by ``benchmarks/process_speed.py`` and by the benchmark suite's ``[[process_speed]]`` gates.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from facecmp.data.images import IMAGE_SUFFIXES
from facecmp.detection.base import NAMED_MODELS
from facecmp.errors import FacecmpError
from facecmp.data.predictions import load_predictions



@dataclass
class ProcessTimes:
    n_images: int
    times: dict[str, list[float]]  # model -> seconds of each run, in run order
    differing: list[str]  # images whose detections differ between the first two models

    def median(self, model: str) -> float:
        return statistics.median(self.times[model])

    def note(self) -> str:
        """One report line: each model's median and runs, the ratio of the first two, differing images."""
        models = list(self.times)
        runs = "; ".join(f"{m} {self.median(m):.2f} s (runs {', '.join(f'{x:.2f}' for x in self.times[m])})" for m in models)
        ratio = f" = {self.ratio(models[1], models[0]):.2f}x" if len(models) == 2 else ""
        return (f"whole `facecmp detect` processes over {self.n_images} images, median of alternating runs: {runs}{ratio}; "
                f"images with differing detections: {len(self.differing)}")

    def ratio(self, slower: str, faster: str) -> float:
        """How many times as fast ``faster`` is (median seconds of ``slower`` / of ``faster``)."""
        return self.median(slower) / self.median(faster)


def link_images(paths: Sequence[Path], into: Path) -> int:
    """Symlink ``paths`` into one flat folder (names made unique from their sub-folders)."""
    into.mkdir(parents=True, exist_ok=True)
    for p in paths:
        name = "_".join(Path(p).parts[-2:]) if Path(p).parent.name else Path(p).name
        (into / name).symlink_to(Path(p).resolve())
    return len(paths)


def images_under(folder: Path, n: int) -> list[Path]:
    """The first ``n`` images under ``folder`` (sorted, sub-folders included)."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:n]


def run_detect(images: Path, out: Path, model: str, extra: Sequence[str] = (), src: Path | None = None) -> float:
    """Seconds one ``facecmp detect`` process takes (``src``: run facecmp from that source tree)."""
    cmd = [sys.executable, "-m", "facecmp.cli", "detect", "--images", str(images), "--out", str(out), "--model", model, *extra]
    env = dict(os.environ, PYTHONPATH=str(src)) if src else None
    start = time.perf_counter()
    # Run outside any checkout so that `-m` does not put the current folder first on sys.path.
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=images.parent)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise FacecmpError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return seconds


def differing_images(a_dir: Path, b_dir: Path, box_tol: float = 1.0, score_tol: float = 1e-4) -> list[str]:
    """Images whose detections differ (count, any box corner by more than ``box_tol`` px or any
    score by more than ``score_tol``) between two prediction folders."""
    a, b = load_predictions(a_dir), load_predictions(b_dir)
    differing = []
    for name in sorted(set(a.file_names) | set(b.file_names)):
        pa, pb = a.for_image(name), b.for_image(name)
        if len(pa) != len(pb):
            differing.append(name)
            continue
        oa, ob = np.lexsort(pa.boxes.T[::-1]), np.lexsort(pb.boxes.T[::-1])
        if np.abs(pa.boxes[oa] - pb.boxes[ob]).max(initial=0) > box_tol or np.abs(pa.scores[oa] - pb.scores[ob]).max(initial=0) > score_tol:
            differing.append(name)
    return differing


def time_processes(
    images: Sequence[Path],
    models: Sequence[str] = ("pretrained", "facenet-reference"),
    rounds: int = 3,
    extra: dict[str, list[str]] | None = None,
    src: dict[str, Path] | None = None,
) -> ProcessTimes:
    """Alternating whole-process runs of ``facecmp detect`` for each model over ``images``."""
    unknown = [m for m in models if m not in NAMED_MODELS]
    if unknown:
        raise FacecmpError(f"whole-process timing knows the models {', '.join(NAMED_MODELS)}, not {', '.join(unknown)}")
    extra, src = extra or {}, src or {}
    with tempfile.TemporaryDirectory(prefix="facecmp-speed-") as tmp:
        folder = Path(tmp) / "images"
        n = link_images(images, folder)
        times: dict[str, list[float]] = {m: [] for m in models}
        for r in range(rounds):
            for model in models if r % 2 == 0 else list(models)[::-1]:
                args = [*NAMED_MODELS[model].process_args, *extra.get(model, [])]
                times[model].append(run_detect(folder, Path(tmp) / model, model, args, src.get(model)))
        differing = differing_images(Path(tmp) / models[0], Path(tmp) / models[1]) if len(models) > 1 else []
    return ProcessTimes(n, times, differing)
