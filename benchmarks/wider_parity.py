"""facecmp's WIDER FACE evaluation vs a faithful reimplementation of the public reference script, on the same files.

    python benchmarks/wider_parity.py --pred PRED --gt ../shared/datasets/wider-face/eval_tools/ground_truth

PRED is a submission folder (``PRED/wider/<event>/<name>.txt`` as ``facecmp detect`` writes, or the
event folders themselves). The reference side shares no code with facecmp: it reads the files as
the reference script does (first line the image name, boxes from the third line on, the key the
name with ``.jpg`` stripped; the ``.mat`` cells indexed as it indexes them) and runs the literal
loops of tests/reference_wider.py. The reference script fails on ground-truth images without a
prediction file, so both sides score the ground-truth images that have one (what
``--allow-missing`` does). Exits 1 when an AP differs by more than --tolerance (default 0.002).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from reference_wider import reference_evaluate  # noqa: E402

DIFFICULTIES = ("easy", "medium", "hard")


def reference_read_submission(folder: Path) -> dict[str, np.ndarray]:
    if (folder / "wider").is_dir():
        folder = folder / "wider"
    out = {}
    for event in os.listdir(folder):
        for name in os.listdir(folder / event):
            with open(folder / event / name) as f:
                lines = f.readlines()
            image = lines[0].rstrip("\n\r").split("/")[-1].rstrip(".jpg")  # the reference's (character) strip
            rows = [[float(a) for a in line.rstrip("\r\n").split(" ")] for line in lines[2:]]
            out[f"{event}/{image}"] = np.asarray(rows, dtype=float).reshape(-1, 5)
    return out


def reference_read_ground_truth(gt_dir: Path):
    from scipy.io import loadmat

    faces_mat = loadmat(str(gt_dir / "wider_face_val.mat"))
    faces, counted = {}, {d: {} for d in DIFFICULTIES}
    gt_lists = {d: loadmat(str(gt_dir / f"wider_{d}_val.mat"))["gt_list"] for d in DIFFICULTIES}
    for i in range(len(faces_mat["event_list"])):
        event = str(faces_mat["event_list"][i][0][0])
        files = faces_mat["file_list"][i][0]
        for j in range(len(files)):
            key = f"{event}/{files[j][0][0]}"
            faces[key] = faces_mat["face_bbx_list"][i][0][j][0].astype("float")
            for d in DIFFICULTIES:
                counted[d][key] = gt_lists[d][i][0][j][0].reshape(-1).astype(np.int64) - 1
    return faces, counted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--tolerance", type=float, default=0.002)
    args = parser.parse_args()

    from facecmp.data.wider_protocol import find_submission, read_submission, read_wider_ground_truth
    from facecmp.evaluation.wider import score_submission

    start = time.perf_counter()
    ours = score_submission(read_submission(find_submission(args.pred)), read_wider_ground_truth(args.gt), allow_missing=True)
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    submission = reference_read_submission(args.pred)
    faces, counted = reference_read_ground_truth(args.gt)
    present = {k: v for k, v in faces.items() if k in submission}
    theirs = reference_evaluate(submission, present, {d: {k: c[k] for k in present} for d, c in counted.items()})
    theirs_s = time.perf_counter() - start

    print(f"{len(present)} images of {len(faces)} scored ({sum(len(v) for v in submission.values())} detections)")
    print(f"{'':8} {'facecmp':>9} {'reference':>10} {'|diff|':>9}")
    worst = 0.0
    for d in DIFFICULTIES:
        a, b = ours.evaluation.curves[d].ap, theirs[d][0]
        worst = max(worst, abs(a - b))
        print(f"{d:8} {a:9.6f} {b:10.6f} {abs(a - b):9.2e}")
    print(f"time: facecmp {ours_s:.1f} s, reference loops {theirs_s:.1f} s (one run, machine as it is)")
    if worst > args.tolerance:
        print(f"FAIL: an AP differs by {worst:.4f} > {args.tolerance}")
        return 1
    print(f"OK: every AP within {args.tolerance}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
