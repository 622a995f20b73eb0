"""Task 2 on a course archive: recognizer variants side by side, on the same detections.

    python benchmarks/recognition_study.py --data ../shared/datasets/dexter --out /tmp/task2 \
        [--test split:50] [--dev 25] [--detector oracle,pretrained] [--thresholds 0.6,0.02,0.02] \
        [--checkpoint FT] [--kinds probe-pretrained,finetune] [--epochs N] [--jitters 3]

The splits are ``compare``'s (``split:50`` held out with seed 0, 25 dev images per folder with
seed 1, the rest trains). Each recognizer kind trains on the training split's annotated faces
(``probe-finetuned`` and ``finetune`` start from ``--checkpoint``'s ONet when given, else from the
pretrained ONet, which the output says), then every kind is scored on the same detections of
each ``--detector``: ``oracle`` (the annotated boxes, score 1: recognition alone), ``pretrained``
(our cascade with the pretrained weights at ``--thresholds``) or ``checkpoint`` (``--checkpoint``'s
detector). Recognition cost is timed interleaved with detection, image by image.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facecmp.atomic import write_json
from facecmp.detection.base import DetectorSettings
from facecmp.detection.checkpoint import load_checkpoint
from facecmp.detection.detector import Detector
from facecmp.detection.models import pretrained_network
from facecmp.detection.recognizer import KINDS, Recognizer
from facecmp.evaluation.task2 import plot_confusion
from facecmp.study.splits import choose_splits
from facecmp.study.recognition import compare_recognizers, recognition_cost
from facecmp.training.recognizer import RecognizerSettings, train_recognizer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--test", default="split:50")
    p.add_argument("--dev", type=int, default=None, help="dev images per folder (default: finetune's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detector", default="oracle,pretrained")
    p.add_argument("--thresholds", default="0.6,0.02,0.02", help="for --detector pretrained (docs/task2.md: best on Dexter's dev split)")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--kinds", default="probe-pretrained,finetune")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--jitters", type=int, default=3)
    p.add_argument("--time-images", type=int, default=50)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    splits = choose_splits(args.data, args.test, seed=args.seed, dev_per_folder=args.dev)
    onet_ft = load_checkpoint(args.checkpoint).state_dicts.get("onet") if args.checkpoint else None
    recognizers = {}
    for kind in args.kinds.split(","):
        if kind not in KINDS:
            p.error(f"unknown kind {kind}; choose from {KINDS}")
        if kind == "probe-finetuned" and onet_ft is None:
            print(f"skipping {kind}: needs --checkpoint with a fine-tuned ONet", file=sys.stderr)
            continue
        trunk = onet_ft if (kind != "probe-pretrained" and onet_ft is not None) else pretrained_network("onet").state_dict()
        origin = "fine-tuned ONet" if trunk is onet_ft else "pretrained ONet"
        settings = RecognizerSettings(kind=kind, epochs=args.epochs, jitters_per_face=args.jitters, threads=1)
        result = train_recognizer(splits.train, splits.dev, trunk, args.out / kind, settings, seed=args.seed,
                                  resume=True, cache_dir=args.out / "cache")
        result.info["trunk_from"] = origin
        recognizers[f"{kind} ({origin})"] = Recognizer(result.net, result.classes, result.info)
        print(f"{kind} from {origin}: train faces {result.info['train_faces']}, dev balanced accuracy "
              f"{result.info['dev_balanced_accuracy']:.4f} (epoch {result.info['best_epoch']}), timings {result.info['timings']}")

    thresholds = tuple(float(t) for t in args.thresholds.split(","))
    detectors = {
        "oracle": lambda: None,
        "pretrained": lambda: Detector(settings=DetectorSettings(thresholds=thresholds)),
        "checkpoint": lambda: Detector.from_checkpoint(args.checkpoint),
    }
    report = {"data": str(args.data), "test": args.test, "n_test_images": len(splits.test), "n_train_images": len(splits.train),
              "recognizers": {n: {k: r.info[k] for k in ("kind", "trunk_from", "train_faces", "dev_faces", "best_epoch",
                                                             "dev_balanced_accuracy", "timings")} for n, r in recognizers.items()},
              "results": {}}
    for det_name in args.detector.split(","):
        detector = detectors[det_name]()
        results = compare_recognizers(detector, recognizers, splits.test)
        rows = []
        for r in results:
            row = r.as_json()
            rows.append(row)
            aps = " ".join(f"{c} {v:.3f}" for c, v in row["ap_cava"].items())
            print(f"[{det_name}] {r.name}: mAP {row['map_cava']:.4f} course / {row['map_voc']:.4f} VOC; {aps}; "
                  f"accuracy {row['recognition_accuracy']:.4f}")
            safe = r.name.split(" ")[0]
            plot_confusion(r.evaluation, args.out / f"confusion_{det_name}_{safe}.png", title=f"{det_name}: {r.name}")
        report["results"][det_name] = rows
        if detector is not None and recognizers and args.time_images > 0:
            cost = recognition_cost(detector, next(iter(recognizers.values())), splits.test, args.time_images)
            report.setdefault("cost", {})[det_name] = cost
            print(f"[{det_name}] cost: {json.dumps(cost)}")
    write_json(args.out / "recognition_study.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
