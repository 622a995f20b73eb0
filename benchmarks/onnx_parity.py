"""The exported ONNX cascade (numpy + onnxruntime) against the torch cascade on the same images.

    python benchmarks/onnx_parity.py --images ../shared/datasets/dexter/antrenare --n 200

Exports ``--model`` to a temporary folder, runs ``OnnxCascade`` and ``Detector`` image by image
(alternating, one thread each) and reports: on how many images the faces differ in number, the
largest box / score / landmark difference over the rest, and process CPU ms per image of each
(a ratio within one run; absolute numbers move with the machine).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facecmp.data.images import read_image
from facecmp.detection.detector import load_detector
from facecmp.detection.export import export_onnx
from facecmp.detection.onnx_cascade import OnnxCascade


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True, help="folder searched recursively for .jpg")
    ap.add_argument("--n", type=int, default=200, help="images, spread evenly over the sorted list")
    ap.add_argument("--model", default="pretrained")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    paths = sorted(args.images.rglob("*.jpg"))
    paths = paths[:: max(1, len(paths) // args.n)][: args.n]
    images = [read_image(p) for p in paths]
    detector = load_detector(args.model)
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(args.model, folder)
        cascade = OnnxCascade(folder, threads=1)
    for image in images[:3]:  # warm-up
        detector.detect(image)
        cascade.detect(image)
    cpu = {"torch": 0.0, "onnx": 0.0}
    differ, faces, worst = 0, 0, np.zeros(3)
    for image in images:
        start = time.process_time()
        ours = detector.detect(image)
        cpu["torch"] += time.process_time() - start
        start = time.process_time()
        theirs = cascade.detect(image)
        cpu["onnx"] += time.process_time() - start
        faces += len(ours)
        if len(ours) != len(theirs):
            differ += 1
        elif len(ours):
            worst = np.maximum(worst, [np.abs(ours.boxes - theirs.boxes).max(), np.abs(ours.scores - theirs.scores).max(),
                                       np.abs(ours.landmarks - theirs.landmarks).max()])
    print(f"{len(images)} images, {faces} faces (torch cascade); number of faces differs on {differ} images")
    print(f"largest difference: boxes {worst[0]:.2g} px, scores {worst[1]:.2g}, landmarks {worst[2]:.2g} px")
    ms = {k: 1000 * v / len(images) for k, v in cpu.items()}
    print(f"CPU ms/image: torch {ms['torch']:.1f}, onnx {ms['onnx']:.1f} (onnx/torch {ms['onnx'] / ms['torch']:.2f})")


if __name__ == "__main__":
    main()
