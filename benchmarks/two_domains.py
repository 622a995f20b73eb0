"""One cascade scored on both domains: the target test split (course evaluator) and the source-domain
test set (WIDER FACE's official protocol), as ``compare --source-test`` and benchmarks/test_source.py
score a variant, for a checkpoint that already exists (``facecmp finetune --out CKPT``).

    python benchmarks/two_domains.py --model CKPT [--thresholds 0.6,0.7,0.7] \\
        --data ../shared/datasets/dexter --test split:50 \\
        --source-data ../shared/datasets/wider-face --source-split split:1 [--json out.json] [--pred PRED] \\
        [--pretrained-stages onet]

``--model pretrained`` scores facenet-pytorch's weights. ``--thresholds`` overrides the checkpoint's
calibrated ones (``0.6,0.7,0.7``: facenet's defaults). ``--pretrained-stages onet`` puts facenet's
ONet (or any stages, comma-separated) in place of the checkpoint's: which stage forgets. ``--data`` is optional (the source domain
alone). ``--source-split`` takes N images per event chosen with ``--seed``: split:1 with seed 0 is
the test part of ``finetune --retain`` (its default ``--retain-holdout 1``), CI's source step and the
``[wider-face]`` gates. ``--pred`` writes the source detections as a WIDER submission folder
(``PRED/wider/<event>/<name>.txt``) that ``facecmp evaluate --protocol wider`` and the public tools read.
Prints one JSON object: the thresholds, the target AP, the source APs, ms/image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from facecmp.detection.detector import Detector
from facecmp.detection.base import DetectorSettings
from facecmp.study.compare import choose_splits, evaluate_prepared
from facecmp.study.source import load_source_domain, score_source
from facecmp.study.variants import Prepared


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="'pretrained' or a checkpoint folder")
    p.add_argument("--thresholds", default=None, help="a,b,c: override the checkpoint's thresholds")
    p.add_argument("--data", type=Path, default=None, help="the target-domain archive (optional)")
    p.add_argument("--test", default="split:50")
    p.add_argument("--dev", type=int, default=None, help="dev images per folder (they only shift which images train; default: finetune's)")
    p.add_argument("--source-data", type=Path, required=True)
    p.add_argument("--source-split", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--pretrained-stages", default="", help="stages (e.g. onet or rnet,onet) to swap back to facenet's")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--pred", type=Path, default=None, help="write the source detections here (WIDER submission format)")
    args = p.parse_args(argv)

    thresholds = tuple(float(t) for t in args.thresholds.split(",")) if args.thresholds else None
    if args.model == "pretrained":
        detector = Detector(settings=DetectorSettings(**({"thresholds": thresholds} if thresholds else {})))
    else:
        detector = Detector.from_checkpoint(args.model, thresholds=thresholds)
    swapped = [s for s in args.pretrained_stages.split(",") if s]
    if swapped:
        from facecmp.detection.models import pretrained_network

        detector = Detector({**detector.nets, **{s: pretrained_network(s) for s in swapped}}, detector.settings)
    prepared = Prepared(detector, settings={"thresholds": list(detector.settings.thresholds)})
    out = {"model": args.model, "pretrained_stages": swapped, "thresholds": list(detector.settings.thresholds), "seed": args.seed}
    start = time.perf_counter()
    if args.data is not None:
        splits = choose_splits(args.data, args.test, seed=args.seed, dev_per_folder=args.dev)
        result = evaluate_prepared("model", prepared, splits.test, workers=args.workers, progress=False)
        summary = result.evaluation.summary()
        out["target"] = {"test": args.test, "n_images": len(splits.test), "ap_cava": float(summary["ap_cava"]),
                         "ms_per_image": result.ms_per_image}
    source = load_source_domain(args.source_data, split=args.source_split, seed=args.seed)
    scored = score_source("model", prepared, source, out=args.pred, workers=args.workers, progress=False)
    out["source"] = {"selection": source.selection, "n_images": len(source.test), "n_faces": source.test.n_faces,
                     **scored.metrics, "ms_per_image": scored.ms_per_image}
    out["seconds"] = time.perf_counter() - start
    text = json.dumps(out, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
