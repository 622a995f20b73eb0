"""Paired ms/image of detectors at their calibrated settings on the same decoded test images:
each image is timed with every detector in turn (a, b, c, a, b, c, ...), the fastest of a few
rounds kept, the median over images reported (``facecmp.bench.timing.paired_ms_per_image``),
so a busy machine slows every detector alike and the ratios hold.

    python benchmarks/peer_speed.py --data ../shared/datasets/dexter --variants pretrained,yunet,retinaface,animeface,dlib-cnn --n 10

Calibration is read from (or written to) the benchmark cache, as `pytest benchmarks/` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tabulate import tabulate

from facecmp.bench.session import BenchOptions, BenchSession


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="course archive (default: the generated data)")
    ap.add_argument("--split", default="split:50")
    ap.add_argument("--dev", type=int, default=None, help="dev images per folder (calibration; default: finetune's)")
    ap.add_argument("--variants", required=True, help="comma-separated; the first is the reference of the ratios")
    ap.add_argument("--n", type=int, default=10, help="test images timed")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path(".facecmp_cache"))
    args = ap.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    session = BenchSession(BenchOptions(data=args.data, split=args.split, variants=tuple(names), cache_dir=args.cache,
                                        dev_per_folder=args.dev))
    ms = session.timings.paired_ms_per_image(names, args.n, rounds=args.rounds)
    rows = [(n, f"{ms[n]:.1f}", f"{ms[n] / ms[names[0]]:.2f}") for n in names]
    print(tabulate(rows, headers=("variant", "ms/image", f"x {names[0]}"), tablefmt="github"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
