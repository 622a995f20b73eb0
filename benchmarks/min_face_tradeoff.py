"""AP vs speed of the pretrained cascade at the data-suggested min face size and around it.

    python benchmarks/min_face_tradeoff.py --data ../shared/datasets/dexter --per-folder 25

Uses the deterministic held-out split (``split_dataset(seed=0)``) as the images to measure on
and suggests the size from the remaining training faces.
"""

from __future__ import annotations

import argparse

import torch
from tabulate import tabulate

from facecmp.data import load_archive, split_dataset
from facecmp.data.facesizes import suggest_min_face_size
from facecmp.detection.detector import Detector
from facecmp.study.min_face import min_face_tradeoff


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--per-folder", type=int, default=25)
    ap.add_argument("--sizes", default="20,24,{suggested},40,60")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    train, held_out = split_dataset(load_archive(args.data).train, per_folder=args.per_folder, seed=0)
    suggested = suggest_min_face_size(train)
    sizes = sorted({float(s.format(suggested=int(suggested))) for s in args.sizes.split(",")})
    print(f"suggested min face size from {train.n_faces} training faces: {suggested:.0f} px")
    print(tabulate(min_face_tradeoff(Detector(), held_out, sizes), headers="keys", tablefmt="github", floatfmt=".3f"))


if __name__ == "__main__":
    main()
