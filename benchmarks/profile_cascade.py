"""Where one image's detection time goes: CPU ms per image for each step of the cascade.

    python benchmarks/profile_cascade.py --images ../shared/datasets/dexter/antrenare/mom --n 40 --threads 1

Wraps the cascade's step functions and the three networks with timers (process CPU time, so
other processes on the machine disturb it less than wall time) after a short warm-up.
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import torch
from tabulate import tabulate

import facecmp.detection.cascade as C
from facecmp.data.images import read_image
from facecmp.detection.detector import Detector
from facecmp.process import retain_freed_memory

STEPS = {
    "integral_image": "integral image",
    "proposals_from_maps": "candidate gathering",
    "batched_nms": "NMS",
    "batched_nms_min": "NMS (min overlap)",
    "crop_resize": "crop + resample",
}


def timed(fn, label, totals):
    def wrapper(*args, **kwargs):
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[label] += time.process_time() - start

    return wrapper


class TimedNet:
    """A stage's forward with its calls timed; other attributes (PNet's ``offsets``) pass through."""

    def __init__(self, forward, timed_call):
        self.forward, self.timed_call = forward, timed_call

    def __call__(self, *args):
        return self.timed_call(*args)

    def __getattr__(self, name):
        return getattr(self.forward, name)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as `facecmp detect` does
    paths = sorted(p for p in args.images.rglob("*.jpg"))[: args.n]
    totals: collections.Counter = collections.Counter()
    start = time.process_time()
    images = [read_image(p) for p in paths]
    totals["JPEG decode"] = time.process_time() - start

    detector = Detector()
    for image in images[:3]:
        detector.detect(image)
    for name, label in STEPS.items():
        setattr(C, name, timed(getattr(C, name), label, totals))
    C.AreaResize.__call__ = timed(C.AreaResize.__call__, "pyramid resize", totals)
    for stage, forward in detector.forward.items():
        detector.forward[stage] = TimedNet(forward, timed(forward, stage.upper(), totals))
    start = time.process_time()
    for image in images:
        detector.detect(image)
    total = time.process_time() - start

    rows = [[label, 1000 * t / len(images)] for label, t in totals.most_common()]
    rows.append(["total detection (decode excluded)", 1000 * total / len(images)])
    print(tabulate(rows, headers=["step", "ms/image"], floatfmt=".2f", tablefmt="github"))


if __name__ == "__main__":
    main()
