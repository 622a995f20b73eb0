"""Whole-process speed: ``facecmp detect`` with our cascade vs facenet-pytorch's MTCNN.

Both run through the same CLI (same decoding, same output files); only ``--model`` differs.
Runs alternate (ours, theirs, theirs, ours, ...) so drifting machine load hits both; we
report the median wall time of each and check the detections are identical
(boxes within 1 px, scores within 1e-4). The logic lives in ``facecmp.bench.wholeprocess``.

    python benchmarks/process_speed.py --images ../shared/datasets/dexter/antrenare --n 200 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tabulate import tabulate

from facecmp.bench.wholeprocess import images_under, time_processes

MODELS = ("pretrained", "facenet-reference")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None, help="passed to our detector only")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--ours-src", type=Path, default=None, help="run our side from this source tree (e.g. a git worktree of an older commit)")
    args = ap.parse_args(argv)

    extra = {"pretrained": ["--batch-size", str(args.batch_size)]} if args.batch_size else {}
    src = {"pretrained": args.ours_src} if args.ours_src else {}
    result = time_processes(images_under(args.images, args.n), MODELS, args.rounds, extra, src)

    n = result.n_images
    rows = [[m, n, f"{result.median(m):.2f}", f"{1000 * result.median(m) / n:.1f}", " ".join(f"{t:.2f}" for t in result.times[m])] for m in MODELS]
    print(tabulate(rows, headers=["model", "images", "median s", "ms/image", "runs s"], tablefmt="github"))
    print(f"\nspeed-up of facecmp over facenet-pytorch (whole processes, medians): {result.ratio(*MODELS[::-1]):.2f}x")
    differing = result.differing
    print(f"images with differing detections: {len(differing)}" + (f" (e.g. {', '.join(differing[:5])})" if differing else ""))
    if args.json:
        args.json.write_text(json.dumps({"images": n, "times": result.times, "ratio": result.ratio(*MODELS[::-1]), "differing": differing}, indent=2))
    return 0 if not differing else 1


if __name__ == "__main__":
    sys.exit(main())
