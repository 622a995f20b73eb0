"""Wall time and AP of the full-cascade fine-tune with N = 1 and N = 2 processes (docs/distributed.md),
measured in one run, alternating (default order 1, 2, 2, 1) so that a change in the machine's load
hits both.

    python benchmarks/distributed_speed.py --data ROOT --out DIR [--test split:50] [--dev-per-folder 25]
        [--order 1,2,2,1] [--threads 2] [--stages pnet,rnet,onet]

Each run is a fresh ``facecmp finetune`` (its own --out, so mining is not cached) started as a
process, as a user starts it; N > 1 is ``--nproc N``. The test images (``--test split:N`` or the
archive's validare/) are never trained or calibrated on; AP is the course's ``ap_cava`` on them.
Prints a table and writes DIR/distributed_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def finetune_command(args, n: int, out: Path, holdout: int) -> list[str]:
    command = [sys.executable, "-m", "facecmp", "--threads", str(args.threads), "finetune", "--data", str(args.data),
               "--out", str(out), "--stages", args.stages, *(["--dev-per-folder", str(args.dev_per_folder)] if args.dev_per_folder is not None else []),
               "--holdout-per-folder", str(holdout), "--seed", str(args.seed)]
    return command + (["--nproc", str(n)] if n > 1 else [])


def test_ap(checkpoint: Path, test) -> float:
    from facecmp.data.images import read_image
    from facecmp.detection.detector import Detector
    from facecmp.detection.inference import detections_to_predictions
    from facecmp.evaluation.evaluator import evaluate

    detector = Detector.from_checkpoint(checkpoint)
    found = {r.key: detector.detect(read_image(r.path)) for r in test.images}
    return evaluate(detections_to_predictions(found), test.ground_truth()).ap_cava


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--test", default=None, help="split:N (held out of training) or a test folder (default: validare/, else split:50)")
    p.add_argument("--dev-per-folder", type=int, default=None, help="as finetune's (default: finetune's)")
    p.add_argument("--order", default="1,2,2,1")
    p.add_argument("--threads", type=int, default=2, help="the machine's threads, shared among the N processes")
    p.add_argument("--stages", default="pnet,rnet,onet")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from facecmp.study.splits import choose_splits, parse_split

    torch.set_num_threads(args.threads)
    holdout = parse_split(args.test) if args.test else 0
    test = choose_splits(args.data, args.test, seed=args.seed, dev_per_folder=args.dev_per_folder).test
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p))
    runs = []
    for i, n in enumerate(int(v) for v in args.order.split(",")):
        out = args.out / f"run{i}-n{n}"
        command = finetune_command(args, n, out, holdout or 0)
        load = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        meta = json.loads((out / "facecmp.json").read_text())
        runs.append({"n": n, "wall_s": wall, "load_before": load, "timings": meta["timings"], "thresholds": meta["thresholds"],
                     "ap_cava": test_ap(out, test), "command": " ".join(command)})
        print(f"run {i}: N={n} {wall:7.1f} s  mining {meta['timings']['mining_s']:.1f}  training {meta['timings']['training_s']:.1f}  "
              f"calibration {meta['timings']['calibration_s']:.1f}  AP {runs[-1]['ap_cava']:.3f}  (load {load:.1f})", flush=True)
    summary = {}
    for n in sorted({r["n"] for r in runs}):
        mine = [r for r in runs if r["n"] == n]
        summary[n] = {"wall_s": sum(r["wall_s"] for r in mine) / len(mine), "ap_cava": [r["ap_cava"] for r in mine],
                      **{k: sum(r["timings"][k] for r in mine) / len(mine) for k in ("mining_s", "training_s", "calibration_s")}}
    base = summary.get(1)
    print("| N | wall s (mean) | mining s | training s | calibration s | AP (course) | wall / N=1 |")
    print("|---|---|---|---|---|---|---|")
    for n, s in summary.items():
        ratio = s["wall_s"] / base["wall_s"] if base else float("nan")
        print(f"| {n} | {s['wall_s']:.1f} | {s['mining_s']:.1f} | {s['training_s']:.1f} | {s['calibration_s']:.1f} | "
              f"{', '.join(f'{a:.3f}' for a in s['ap_cava'])} | {ratio:.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distributed_speed.json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
