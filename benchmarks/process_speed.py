"""Whole-process speed: ``facecmp detect`` with our cascade vs facenet-pytorch's MTCNN.

Both run through the same CLI (same decoding, same output files); only ``--model`` differs.
Runs alternate (ours, theirs, theirs, ours, ...) so drifting machine load hits both; we
report the median wall time of each and check the detections are identical
(boxes within 1 px, scores within 1e-4).

    python benchmarks/process_speed.py --images ../shared/datasets/dexter/antrenare --n 200 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

from facecmp.predictions import load_predictions

MODELS = ("pretrained", "facenet-reference")


def link_images(source: Path, n: int, into: Path) -> int:
    """Symlink the first ``n`` images (sorted, sub-folders included) into one flat folder."""
    images = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    for p in images:
        rel = p.relative_to(source)
        (into / "_".join(rel.parts)).symlink_to(p.resolve())
    return len(images)


def run_detect(images: Path, out: Path, model: str, extra: list[str], src: Path | None = None) -> float:
    cmd = [sys.executable, "-m", "facecmp.cli", "detect", "--images", str(images), "--out", str(out), "--model", model, *extra]
    env = dict(os.environ, PYTHONPATH=str(src)) if src else None
    start = time.perf_counter()
    # Run outside the checkout so that `-m` does not put the current folder first on sys.path.
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=images.parent)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return seconds


def compare_detections(a_dir: Path, b_dir: Path, box_tol: float = 1.0, score_tol: float = 1e-4) -> list[str]:
    """Image names whose detections differ between the two prediction folders."""
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1, help="passed to our detector only")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--ours-src", type=Path, default=None, help="run our side from this source tree (e.g. a git worktree of an older commit)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        n = link_images(args.images, args.n, tmp / "images")
        times = {m: [] for m in MODELS}
        for r in range(args.rounds):
            order = MODELS if r % 2 == 0 else MODELS[::-1]
            for model in order:
                ours = model == "pretrained"
                extra = ["--batch-size", str(args.batch_size)] if ours else ["--workers", "0"]
                times[model].append(run_detect(tmp / "images", tmp / model, model, extra, args.ours_src if ours else None))
        differing = compare_detections(tmp / "pretrained", tmp / "facenet-reference")

    median = {m: statistics.median(t) for m, t in times.items()}
    ratio = median["facenet-reference"] / median["pretrained"]
    rows = [[m, n, f"{median[m]:.2f}", f"{1000 * median[m] / n:.1f}", " ".join(f"{t:.2f}" for t in times[m])] for m in MODELS]
    print(tabulate(rows, headers=["model", "images", "median s", "ms/image", "runs s"], tablefmt="github"))
    print(f"\nspeed-up of facecmp over facenet-pytorch (whole processes, medians): {ratio:.2f}x")
    print(f"images with differing detections: {len(differing)}" + (f" (e.g. {', '.join(differing[:5])})" if differing else ""))
    if args.json:
        args.json.write_text(json.dumps({"images": n, "times": times, "median": median, "ratio": ratio, "differing": differing}, indent=2))
    return 0 if not differing else 1


if __name__ == "__main__":
    sys.exit(main())
