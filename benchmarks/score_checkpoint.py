"""Score a fine-tuned checkpoint on a study's test split, as the accuracy benchmark scores it.

    python benchmarks/score_checkpoint.py CKPT [CKPT ...] --data ../shared/datasets/dexter \
        [--test split:50] [--dev-per-folder 25] [--seed 0] [--recalibrate] [--json out.json]

The test split is the one ``pytest benchmarks/test_accuracy.py --facecmp-split split:50
--facecmp-dev 25`` (and ``facecmp finetune --holdout-per-folder 50 --dev-per-folder 25``) carves,
the thresholds the checkpoint's own (its calibration), the metrics the evaluator's (course AP,
VOC AP, recall). ``--recalibrate`` also re-chooses the thresholds on the dev split with today's
calibration code and grid (``facecmp.training.calibrate``) and scores those too, so a change to
calibration alone can be judged on nets already trained; it prints the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--test", default="split:50")
    parser.add_argument("--dev-per-folder", type=int, default=None, help="the checkpoint's finetune --dev-per-folder (default: finetune's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recalibrate", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from facecmp.process import import_torch_frozen

    import_torch_frozen()

    from facecmp.detection.checkpoint import load_checkpoint
    from facecmp.detection.detector import Detector
    from facecmp.detection.inference import run_detector
    from facecmp.evaluation.evaluator import evaluate
    from facecmp.study.compare import choose_splits
    from facecmp.training.calibrate import best_thresholds

    splits = choose_splits(args.data, args.test, seed=args.seed, dev_per_folder=args.dev_per_folder)
    truth = splits.test.ground_truth()
    rows = []

    def score(detector, label, thresholds, extra):
        run = run_detector(detector, splits.test, progress=False)
        summary = evaluate(run.predictions, truth).summary()
        row = {"checkpoint": label, "thresholds": list(thresholds), **{k: summary[k] for k in ("ap_cava", "ap_voc", "recall")}, **extra}
        rows.append(row)
        print(json.dumps(row), flush=True)

    for path in args.checkpoints:
        meta = load_checkpoint(path).meta
        detector = Detector.from_checkpoint(path)
        timings = meta.get("timings", {})
        score(detector, str(path), detector.settings.thresholds, {"timings": timings, "epochs": meta.get("epochs")})
        if args.recalibrate:
            start = time.perf_counter()
            best, _table = best_thresholds(
                lambda t: detector.with_settings(thresholds=t), splits.dev, progress=False)
            seconds = time.perf_counter() - start
            score(detector.with_settings(thresholds=best), f"{path} (recalibrated)", best, {"calibration_s": seconds})
    print(f"test: {args.test} ({len(splits.test)} images, {splits.test.n_faces} faces); dev {len(splits.dev)} images")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
