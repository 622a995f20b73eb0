"""``facecmp`` command line: thin wiring from arguments to library calls.

Every user-fixable problem surfaces as one ``facecmp: error: ...`` line and exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facecmp.errors import DataError, FacecmpError

# `detect --batch-size` on a GPU (H200, 100 generated 480x360 images: 22.8 ms/image one at a
# time, 5.3 in batches of 8, 1.6 in batches of 32).
CUDA_BATCH_SIZE = 32
# facecmp.training.finetune.RECIPES, the default (DEFAULT_RECIPE) first; named here so that building the
# parser imports no torch (tests/test_recipes.py holds the two together).
RECIPE_NAMES = ("short", "fast", "classic")
# facecmp.study.splits.default_dev_per_folder in words (DEFAULT_DEV_PER_FOLDER, DEV_SHARE_LIMIT).
DEV_DEFAULT_HELP = "default 100, or a quarter of the smallest training folder's images when that is fewer"
# facecmp.training.retain.DEFAULT_FEATURE_WEIGHT, named here so that building the parser imports no
# torch (tests/test_retain.py holds the two together).
RETAIN_FEATURES_DEFAULT = 30.0


def _thresholds(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected three probabilities P,R,O such as 0.6,0.7,0.7; got {text!r}")
    return values  # type: ignore[return-value]


def _int_at_least(lowest: int):
    """An argparse type: an integer >= ``lowest``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = lowest - 1
        if value < lowest:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lowest}, got {text!r}")
        return value

    return parse


_non_negative_int = _int_at_least(0)
_positive_int = _int_at_least(1)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _retain_shares(text: str) -> tuple[float | None, tuple[tuple[str, float], ...]]:
    """``--retain-share``: ``S`` for every stage, ``stage=S`` items for one (``0.25,onet=1``)."""
    default, stages = None, {}
    for item in text.split(","):
        stage, _, value = item.rpartition("=")
        stage = stage.strip()
        try:
            share = float(value)
        except ValueError:
            share = None
        if share is None or (stage and stage in stages) or (not stage and default is not None):
            raise argparse.ArgumentTypeError(f"expected a share S or stage=S items such as 0.25 or 0.25,onet=1; got {text!r}")
        if stage:
            stages[stage] = share
        else:
            default = share
    return default, tuple(stages.items())


def _min_face(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value >= 12:  # PNet's window; also rejects nan
        raise argparse.ArgumentTypeError(f"expected a face size in pixels of at least 12 (PNet's window), got {text!r}")
    return value


def _device(text: str) -> str:
    """A torch device that exists here, checked before any work starts."""
    from facecmp.process import import_torch_frozen

    torch = import_torch_frozen()

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown torch device {text!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"device {text!r} requested but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"device {text!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return text


def _add_detector_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-face", type=_min_face, default=None, help="smallest face searched, px, >= 12 (default 20, or the checkpoint's)")
    p.add_argument("--thresholds", type=_thresholds, default=None, help="stage thresholds P,R,O (default 0.6,0.7,0.7, or the checkpoint's)")
    p.add_argument("--device", type=_device, default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")


# The labelling formats `--data` reads (facecmp.data.archive.FORMATS; listed here so the parser stays import-light).
FORMATS = ("course", "coco", "voc", "yolo", "wider")


def _add_format_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="the format of --data (default: found from the files present)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facecmp", description="Pretrained vs fine-tuned MTCNN on your faces, measured.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--threads", type=_positive_int, default=2, help="CPU threads for torch (default 2)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("detect", help="detect faces in a folder of images; write the course's .npy files")
    p.add_argument("--images", required=True, type=Path, help="folder of images, or a labelled dataset (course test folder or archive, COCO, VOC, YOLO, WIDER FACE): its test images")
    p.add_argument("--out", required=True, type=Path, help="folder for detections/scores/file_names_all_faces.npy")
    p.add_argument("--model", default="pretrained", help="'pretrained', a checkpoint folder from `facecmp finetune`, 'facenet-reference' (facenet-pytorch's own MTCNN), "
        "or a peer: 'opencv-haar', 'dlib-hog', 'yunet', 'dlib-cnn' (facecmp[peers]), 'blazeface', 'blazeface-full' (make mediapipe-venv), "
        "'retinaface' (make retinaface-venv), 'animeface' (make animeface-venv)")
    p.add_argument(
        "--batch-size", type=_positive_int, default=None,
        help="images per network call (default 1 on CPU, where worker processes give the parallelism; "
        f"{CUDA_BATCH_SIZE} on CUDA, where batching is what makes a GPU pay)",
    )
    p.add_argument(
        "--workers", type=_non_negative_int, default=None,
        help="processes that decode and detect in parallel, one thread each "
        "(default: --threads on CPU for 16+ images, else 0 = in this process)",
    )
    _add_detector_options(p)
    p.add_argument("--characters", action="store_true", help="also write task 2 (who is it): task2/detections_<character>.npy ... "
                   "for every character the checkpoint's recognizer knows")

    p = sub.add_parser("evaluate", help="score course-format predictions against ground truth")
    p.add_argument("--pred", required=True, type=Path, help="folder with the three .npy files (--protocol wider: with wider/<event>/<name>.txt, "
                   "or the submission folder itself)")
    p.add_argument("--gt", type=Path, help="ground-truth file (task1_gt_validare.txt layout); task 1. --protocol wider: the folder "
                   "with wider_face_val.mat and wider_{easy,medium,hard}_val.mat")
    p.add_argument("--protocol", choices=("course", "wider"), default="course", help="course: the course's task-1 evaluator "
                   "(default); wider: WIDER FACE's official easy / medium / hard AP (needs facecmp[wider])")
    p.add_argument("--iou", type=_probability, default=0.3, help="IoU threshold for a true positive (default 0.3)")
    p.add_argument("--name", default="all_faces", help="prediction file suffix (default all_faces; task 2: a character)")
    p.add_argument("--json", type=Path, help="write the metrics as JSON here")
    p.add_argument("--plot", type=Path, help="write the precision-recall curve (PNG) here")
    p.add_argument("--task2", action="store_true", help="score task 2 (who is it): every character of --gt-dir against --pred's files")
    p.add_argument("--gt-dir", type=Path, help="task 2: folder with task2_<character>_gt_validare.txt (e.g. validare/)")
    p.add_argument("--allow-missing", action="store_true", help="task 2: score only the images present in --gt-dir's image folder; "
                   "--protocol wider: score only the ground-truth images that have a prediction file")
    p.add_argument("--min-score", type=_probability, default=0.5, help="task 2 confusion matrix: a face counts as recognised "
                   "when its best character score is at least this (default 0.5)")
    p.add_argument("--confusion", type=Path, help="task 2: write the confusion matrix (PNG) here")

    p = sub.add_parser("check", help="summarise a dataset and list every problem with file:line")
    p.add_argument("--data", required=True, type=Path, help="course archive root, training folder or test folder")
    _add_format_option(p)

    p = sub.add_parser("finetune", help="fine-tune MTCNN stages on a course archive's training part")
    p.add_argument("--data", required=True, type=Path, help="archive root containing antrenare/ (or a training folder)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint folder")
    p.add_argument("--stages", default="pnet", help="comma-separated stages to fine-tune, in any order: pnet, pnet,rnet or pnet,rnet,onet (default pnet); "
        "or dlib-hog: train dlib's HOG detector instead (needs facecmp[dlib])")
    p.add_argument("--epochs", type=_positive_int, default=None)
    p.add_argument("--recipe", choices=RECIPE_NAMES, default=None, help="the stages' training recipe: short (the default: PNet 8, "
                   "RNet 3 and ONet 3 epochs on one-cycle schedules, RNet's and ONet's first convolution kept, at least 300 steps per "
                   "stage), fast (PNet 15 epochs on a decaying rate, RNet 4: about 1.15x the minutes) or classic (every layer, RNet 8 "
                   "and ONet 6 epochs on a decaying rate: the default before 2026-12-07, about 2.7x). docs/price.md compares them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=_device, default="cpu")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--from-scratch", action="store_true", help="random initialisation instead of the pretrained weights")
    p.add_argument("--augment", action="store_true", help="also mine an augmented copy of every training frame (photometric, blur, "
                   "noise, JPEG, downscaling; torchvision, not the robustness benchmark's corruptions)")
    p.add_argument("--dev-per-folder", type=int, default=None, help="images per training folder kept out of training to calibrate thresholds "
                   f"({DEV_DEFAULT_HELP})")
    p.add_argument("--holdout-per-folder", type=int, default=0, help="images per folder held out entirely, e.g. as your own test split (default 0)")
    p.add_argument("--from", dest="from_checkpoint", type=Path, default=None, help="--stages recognizer: the detector checkpoint "
                   "to add a recognizer to (copied into --out)")
    p.add_argument("--recognizer", default="finetune", help="recognizer kind: finetune (ONet + character head, end to end), "
                   "probe-finetuned or probe-pretrained (linear probe on frozen ONet features) (default finetune)")
    _add_format_option(p)
    p.add_argument("--retain", type=Path, default=None, metavar="ROOT", help="keep what the pretrained cascade does on the "
                   "source-domain images in ROOT (any format facecmp reads, e.g. ../shared/datasets/wider-face) while fine-tuning; "
                   "see docs/wider.md")
    p.add_argument("--retain-method", default="replay", help="with --retain: replay (source crops mixed into every stage's samples), "
                   "l2sp (a penalty on the distance from the pretrained weights), replay+l2sp, wise (WiSE-FT: the fine-tuned "
                   "weights averaged with the pretrained ones, no extra training) or replay+wise (default replay)")
    p.add_argument("--retain-alpha", type=float, default=0.7, metavar="A", help="with --retain-method wise or replay+wise: the fine-tuned "
                   "weights' share of the average (1: the plain fine-tune; default 0.7)")
    p.add_argument("--retain-share", type=_retain_shares, default=(None, ()), metavar="S", help="with a --retain-method that replays (replay, "
                   "replay+l2sp, replay+wise): source samples mixed in per target sample of each stage (default 0.25); stage=S sets one stage's, "
                   "e.g. 0.25,onet=1")
    p.add_argument("--retain-mining", default=None, metavar="HOW", help="with a replaying --retain-method: RNet's and ONet's "
                   "source samples are the candidates the earlier stages find on the source frames (cascade, the default) or "
                   "jittered crops around the source faces (crops: no cascade run, cheaper, keeps less)")
    p.add_argument("--retain-replay", default=None, metavar="HOW", help="with a replaying --retain-method: the source samples "
                   "replace that share of the target's (replace, the default: as many training steps as without --retain; "
                   "--retain-share below 1) or come on top of them (add)")
    p.add_argument("--retain-min-face", type=float, default=None, metavar="PX", help="with --retain-mining cascade: the smallest "
                   "face the earlier stages look for on the source frames (default 40; 20 is the target mining's; larger runs fewer "
                   "pyramid levels on large frames)")
    p.add_argument("--retain-targets", default=None, metavar="WHAT", help="with a replaying --retain-method: what the source samples teach the "
                   "classifier: the pretrained stage's face probability on each crop (teacher, the default: distillation, "
                   "learning without forgetting) or their labels (labels)")
    p.add_argument("--retain-teacher-weight", type=float, default=None, metavar="W", help="with --retain-targets teacher: "
                   "a taught source sample's classification loss weighs W labelled ones (default 1)")
    p.add_argument("--retain-features", type=float, default=None, metavar="W", help="with --retain-targets teacher: RNet's and "
                   "ONet's last hidden features on the taught source samples are pulled towards the pretrained stage's, with weight W "
                   f"(feature distillation; default {RETAIN_FEATURES_DEFAULT:g}; 0: off; docs/wider.md, sessions 25-26)")
    p.add_argument("--retain-holdout", type=int, default=1, metavar="N", help="with --retain: N images per folder of ROOT (WIDER: "
                   "per event) set aside with --seed and never trained on: the images `--source-split split:N` tests on "
                   "(default 1: split:1, what CI and the gates score; 0: train on all of ROOT)")
    p.add_argument("--nproc", type=_positive_int, default=None, help="train with N processes here (torchrun + "
                   "DistributedDataParallel; one CPU core or GPU each, --threads shared among them); same as "
                   "`torchrun --nproc_per_node N -m facecmp finetune ...` (default 1: this process)")

    p = sub.add_parser("compare", help="the whole study: fine-tune, detect with both variants, evaluate, report")
    p.add_argument("--data", required=True, type=Path, help="course archive root")
    p.add_argument("--test", default=None, help="test folder (course layout or any labelling format), or 'split' / 'split:N' to hold out N images per training folder (default: the archive's validare/, else split:50)")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.add_argument("--checkpoint", type=Path, default=None, help="reuse this fine-tuned checkpoint instead of training: "
                   "it is the fine-tuned variant its stages name (pnet: finetuned-pnet, pnet,rnet,onet: finetuned-cascade), "
                   "in place of the fine-tuned variants, so nothing trains but dlib-hog-trained (--peers)")
    p.add_argument("--epochs", type=_positive_int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=_device, default="cpu")
    p.add_argument("--allow-missing", action="store_true", help="evaluate only the test images present on disk")
    p.add_argument("--cascade", action="store_true", help="also fine-tune RNet and ONet (finetuned-pnet-rnet, finetuned-cascade)")
    p.add_argument("--peers", action="store_true", help="also run the peer detectors (each must run, or the comparison fails with its reason): opencv-haar, dlib-hog, "
                   "dlib-hog-trained, yunet, dlib-cnn (pip install 'facecmp[peers]'), blazeface, blazeface-full (make mediapipe-venv), "
                   "retinaface (make retinaface-venv), animeface (make animeface-venv)")
    p.add_argument("--recognizers", default="", help="task 2: comma-separated recognizer kinds to train and score on the last "
                   "fine-tuned variant's detections (probe-pretrained, probe-finetuned, finetune)")
    p.add_argument("--source-test", type=Path, default=None, help="also score every variant on this source-domain test set "
                   "(any format; WIDER FACE with eval_tools/ground_truth/*.mat: its official protocol) and report both domains")
    p.add_argument("--source-split", default=None, help="with --source-test: score split:N images per folder (WIDER: per event), "
                   "chosen with --seed (default: all)")
    _add_format_option(p)

    p = sub.add_parser("curve", help="the label budget: fine-tune on nested subsets of the training frames, AP against frames")
    p.add_argument("--data", required=True, type=Path, help="archive root containing antrenare/ (or any labelling format with a training part)")
    p.add_argument("--out", required=True, type=Path, help="curve folder: curve.json, learning_curve.png, curve.md, points/")
    p.add_argument("--frames", default=None, help="comma-separated subset sizes in labelled frames, and 'all' "
                   "(default 25,50,100,200,400,800 where below the training set's size, then all)")
    p.add_argument("--stages", default="pnet,rnet,onet", help="stages fine-tuned at every point (default pnet,rnet,onet); "
                   "or dlib-hog: the trained dlib HOG detector's curve (facecmp[peers]), drawn on the same axes")
    p.add_argument("--test", default=None, help="test folder, or 'split:N' to hold out N images per training folder "
                   "(default: the archive's validare/, else split:50); must share no frame with the training frames")
    p.add_argument("--seed", type=int, default=0, help="splits, subsets and training (default 0)")
    p.add_argument("--repeats", type=_positive_int, default=1, help="subsets and trainings per size, seeds SEED..SEED+R-1 (default 1)")
    p.add_argument("--epochs", type=_positive_int, default=None, help="epochs of every stage (default: each stage's recipe)")
    p.add_argument("--dev-per-folder", type=_non_negative_int, default=None, help="images per training folder for threshold calibration, "
                   f"the same for every point ({DEV_DEFAULT_HELP})")
    p.add_argument("--recipe", choices=RECIPE_NAMES, default=None, help="the stages' training recipe at every point, as finetune's "
                   "(default short)")
    p.add_argument("--resume", action="store_true", help="continue (or extend) the curve in --out; finished points are not retrained")
    p.add_argument("--device", type=_device, default="cpu")
    _add_format_option(p)

    p = sub.add_parser("convert", help="write a dataset (any format) as COCO, Pascal VOC, YOLO, WIDER FACE or the course layout")
    p.add_argument("--data", required=True, type=Path, help="the dataset to read (course archive, COCO, VOC, YOLO or WIDER FACE)")
    p.add_argument("--to", required=True, choices=FORMATS, help="the format to write")
    p.add_argument("--out", required=True, type=Path, help="a new (or empty) folder for the converted dataset")
    p.add_argument("--copy", action="store_true", help="copy the images instead of hard-linking them")
    _add_format_option(p)

    p = sub.add_parser("export", help="write the cascade's networks as ONNX files plus its thresholds and settings")
    p.add_argument("--model", default="pretrained", help="'pretrained' or a checkpoint folder from `facecmp finetune`")
    p.add_argument("--onnx", required=True, type=Path, help="folder for pnet.onnx, rnet.onnx, onet.onnx and cascade.json")
    p.add_argument("--min-face", type=_min_face, default=None, help="smallest face searched, px, >= 12, stored in cascade.json (default 20, or the checkpoint's)")
    p.add_argument("--thresholds", type=_thresholds, default=None, help="stage thresholds P,R,O stored in cascade.json (default 0.6,0.7,0.7, or the checkpoint's)")

    p = sub.add_parser("robustness", help="every variant on clean and corrupted test frames: P_clean, mPC, rPC")
    p.add_argument("--data", required=True, type=Path, help="course archive root")
    p.add_argument("--test", default=None, help="test folder, or 'split' / 'split:N' (as compare; default: validare/, else split:50)")
    p.add_argument("--out", required=True, type=Path, help="report folder (robustness.md, robustness.json, heatmap.png, ...)")
    p.add_argument("--variants", default="pretrained-calibrated,finetuned-cascade", help="comma-separated variants (default pretrained-calibrated,finetuned-cascade)")
    p.add_argument(
        "--checkpoint", action="append", default=[],
        help="reuse a fine-tuned checkpoint instead of training: NAME=DIR for variant NAME, or DIR when one fine-tuned variant is asked for (repeatable)",
    )
    p.add_argument("--corruptions", default="benchmark", help="all (19), benchmark (the 15), extra (4), geometric (scale, mirror) or comma-separated names (default benchmark)")
    p.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities 1-5 (default 1,2,3,4,5)")
    p.add_argument("--workers", type=int, default=2, help="processes that corrupt and detect, one thread each (default 2; 0 = this process)")
    p.add_argument("--seed", type=int, default=0, help="split seed and corruption seed (default 0)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--cache", type=Path, default=None, help="cache folder for checkpoints and grid cells (default OUT/cache); a rerun resumes from it")
    p.add_argument("--dev-per-folder", type=int, default=None, help="dev images per training folder for threshold calibration "
                   f"({DEV_DEFAULT_HELP}, as compare and finetune)")
    p.add_argument("--allow-missing", action="store_true", help="evaluate only the test images present on disk")
    p.add_argument("--device", type=_device, default="cpu")
    _add_format_option(p)

    p = sub.add_parser("demo", help="run the comparison on the built-in generated dataset")
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--seed", type=int, default=0)
    return parser


def _require_output_folder(path: Path, option: str) -> None:
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: {option} must be a folder, but a file of that name exists; choose another path")


def _require_model(model: str) -> None:
    from facecmp.detection.base import require_model

    require_model(model)


def cmd_detect(args) -> int:
    import torch

    from facecmp.detection.detector import load_detector
    from facecmp.detection.inference import default_workers, images_to_detect, is_wider_dataset, run_detector, wider_submission
    from facecmp.data.predictions import save_predictions

    _require_output_folder(args.out, "--out")
    _require_model(args.model)
    dataset = images_to_detect(args.images)
    detector = load_detector(args.model, min_face_size=args.min_face, thresholds=args.thresholds, device=args.device)
    if args.characters:
        from facecmp.detection.recognizer import CharacterDetector, load_recognizer

        detector = CharacterDetector(detector, load_recognizer(args.model))
    on_cpu = torch.device(args.device).type == "cpu"
    workers = args.workers
    if workers is None:
        workers = default_workers(len(dataset), args.device, args.threads)
    batch_size = args.batch_size or (1 if on_cpu else CUDA_BATCH_SIZE)
    run = run_detector(detector, dataset, batch_size=batch_size, workers=workers, progress=sys.stderr.isatty())
    save_predictions(args.out, run.predictions)
    print(f"{len(dataset)} images, {len(run.predictions)} faces, {run.images_per_second:.1f} images/s ({run.ms_per_image:.1f} ms/image)")
    print(f"wrote {args.out}/detections_all_faces.npy, scores_all_faces.npy, file_names_all_faces.npy")
    if is_wider_dataset(args.images):
        from facecmp.data.wider_protocol import SUBMISSION_FOLDER, write_submission

        flat = [k for k in run.per_image if "/" not in k]
        if flat:
            print(f"warning: no WIDER FACE submission written: {len(flat)} images are not in an event folder "
                  f"(e.g. {flat[0]}); the format needs WIDER_val/images/<event>/<name>.jpg", file=sys.stderr)
        else:
            written = write_submission(args.out / SUBMISSION_FOLDER, wider_submission(run.per_image))
            print(f"wrote {args.out}/{SUBMISSION_FOLDER}/<event>/<name>.txt for {len(written)} images (WIDER FACE submission format)")
    if args.characters:
        from facecmp.detection.recognizer import task2_predictions

        for char, preds in task2_predictions(run.per_image, detector.recognizer.classes).items():
            save_predictions(args.out / "task2", preds, name=char)
        print(f"wrote {args.out}/task2/detections_<c>.npy, scores_<c>.npy, file_names_<c>.npy for "
              f"{', '.join(detector.recognizer.characters)}")
    return 0


def _require_plot_format(path: Path) -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    fmt = path.suffix.lstrip(".").lower() or "png"
    if fmt not in formats:
        raise DataError(f"{path}: cannot write a plot as .{fmt}; use one of .{', .'.join(sorted(formats))}")


def cmd_evaluate(args) -> int:
    from facecmp.atomic import write_json
    from facecmp.data import read_ground_truth
    from facecmp.evaluation.evaluator import evaluate, unknown_keys
    from facecmp.evaluation.plots import plot_pr_curves
    from facecmp.data.predictions import load_predictions

    if args.plot is not None:
        _require_plot_format(args.plot)
    if args.task2:
        return _evaluate_task2(args)
    if args.protocol == "wider":
        return _evaluate_wider(args)
    if args.gt is None:
        raise DataError("evaluate: --gt FILE is required for task 1 (or use --task2 --gt-dir FOLDER for task 2)")
    preds = load_predictions(args.pred, name=args.name)
    gt, problems = read_ground_truth(args.gt)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    strangers = unknown_keys(preds, gt)
    if strangers:
        print(
            f"warning: {len(strangers)} predicted image names are not in {args.gt} (counted as false positives), "
            f"e.g. {', '.join(strangers[:3])}",
            file=sys.stderr,
        )
    result = evaluate(preds, gt, iou_threshold=args.iou)
    s = result.summary()
    print(f"ap_cava   {s['ap_cava']:.6f}   (course evaluator)")
    print(f"ap_voc    {s['ap_voc']:.6f}   (VOC all-point, monotone envelope)")
    print(f"recall    {s['recall']:.4f}   precision {s['precision']:.4f}")
    print(f"detections {s['n_detections']}   ground truth {s['n_ground_truth']}   true positives {s['n_true_positives']}")
    coco = _coco_metrics(preds, gt)
    if coco is not None:
        s["coco"] = coco
    if args.json:
        write_json(args.json, s)
    if args.plot:
        plot_pr_curves({args.pred.name or "predictions": result}, args.plot)
    return 0


def _evaluate_wider(args) -> int:
    from facecmp.atomic import write_json
    from facecmp.data.wider_protocol import find_submission, read_submission, read_wider_ground_truth
    from facecmp.evaluation.plots import plot_wider_curves
    from facecmp.evaluation.wider import score_submission

    if args.gt is None:
        raise DataError("evaluate --protocol wider: --gt GT_DIR is required (the folder with wider_face_val.mat and "
                        "wider_{easy,medium,hard}_val.mat)")
    folder = find_submission(args.pred)
    if folder is None:
        raise DataError(f"{args.pred}: no WIDER FACE submission found; --protocol wider reads {args.pred}/wider/<event>/<name>.txt "
                        "or <event>/<name>.txt folders (image name, box count, `x y w h score` lines), which `facecmp detect` "
                        "writes on a WIDER FACE dataset (the course's .npy files do not list the images without detections)")
    submission = read_submission(folder)
    gt = read_wider_ground_truth(args.gt)
    score = score_submission(submission, gt, allow_missing=args.allow_missing, pred=str(folder))
    for line in score.warnings(str(folder), str(args.gt)):
        print(f"warning: {line}", file=sys.stderr)
    ev = score.evaluation
    for difficulty, curve in ev.curves.items():
        print(f"{difficulty:<7} AP {curve.ap:.4f}   ({curve.n_faces} faces)")
    print(f"{ev.n_images} images, {ev.n_detections} detections (WIDER FACE protocol: IoU 0.5, 1,000 thresholds)")
    if args.json:
        write_json(args.json, {"wider": {**ev.summary(), "missing_images": len(score.missing),
                                         "unknown_prediction_files": len(score.strangers)}})
    if args.plot:
        plot_wider_curves(ev, args.plot)
    return 0


def _coco_metrics(preds, gt) -> dict | None:
    """COCO's metrics printed (and returned), or one line saying what to install."""
    from facecmp.evaluation.coco import INSTALL_NOTE, coco_metrics_or_none

    coco = coco_metrics_or_none(preds, gt)
    if coco is None:
        print(INSTALL_NOTE, file=sys.stderr)
        return None
    print("coco      " + "  ".join(f"{k} {'-' if v is None else f'{v:.4f}'}" for k, v in coco.items()))
    return coco


def cmd_convert(args) -> int:
    from facecmp.data.convert import convert

    result = convert(args.data, args.to, args.out, fmt=args.format, link=not args.copy)
    for problem in result.warnings:
        print(f"warning: {problem}", file=sys.stderr)
    parts = ", ".join(f"{role}: {n} images, {faces} faces" for role, (n, faces) in result.counts.items())
    print(f"{result.fmt} -> {result.to}: {parts}")
    print(f"wrote {result.out} ({', '.join(str(p.relative_to(result.out)) for p in result.annotation_files[:4])}"
          + (", ..." if len(result.annotation_files) > 4 else "") + ")")
    return 0


def _evaluate_task2(args) -> int:
    from facecmp.atomic import write_json
    from facecmp.data.predictions import load_predictions
    from facecmp.data.task2 import predicted_characters, read_task2_ground_truth, task2_prediction_dir
    from facecmp.evaluation.plots import plot_pr_curves
    from facecmp.evaluation.task2 import check_characters, evaluate_task2, plot_confusion

    if args.gt_dir is None:
        raise DataError("evaluate --task2: --gt-dir FOLDER is required (the folder with task2_<character>_gt_validare.txt)")
    if args.confusion is not None:
        _require_plot_format(args.confusion)
    gt = read_task2_ground_truth(args.gt_dir)
    for problem in gt.problems or []:
        print(f"warning: {problem}", file=sys.stderr)
    if gt.missing:
        shown = ", ".join(gt.missing[:5]) + (", ..." if len(gt.missing) > 5 else "")
        if not args.allow_missing:
            raise DataError(f"{args.gt_dir}: {len(gt.missing)} images of the task-2 ground truth are missing from its image "
                            f"folder ({shown}); restore them, or score the present images only with --allow-missing")
        listed = set(gt.all_faces or {}).union(*(set(g) for g in gt.characters.values()))
        print(f"warning: {len(gt.missing)} ground-truth images missing ({shown}); scoring the "
              f"{len(listed) - len(gt.missing)} present ones only", file=sys.stderr)
        gt = gt.restricted_to(listed - set(gt.missing))
    pred_dir = task2_prediction_dir(args.pred)
    check_characters(predicted_characters(pred_dir), gt, str(pred_dir))
    preds = {c: load_predictions(pred_dir, name=c) for c in gt.names}
    result = evaluate_task2(preds, gt, iou_threshold=args.iou, min_score=args.min_score)
    print(f"{'character':<12} {'ap_cava':>8} {'ap_voc':>8} {'recall':>7} {'gt':>5}")
    for char, ev in result.per_character.items():
        s = ev.summary()
        print(f"{char:<12} {s['ap_cava']:8.4f} {s['ap_voc']:8.4f} {s['recall']:7.4f} {s['n_ground_truth']:5d}")
    print(f"{'mAP':<12} {result.map_cava:8.4f} {result.map_voc:8.4f}   (course / VOC)")
    print(f"recognition accuracy on matched named faces {result.accuracy():.4f} (min score {args.min_score:g})")
    print("confusion (rows true, columns recognised as): " + ", ".join(result.columns))
    for row, counts in zip(result.rows, result.confusion.tolist()):
        print(f"  {row:<12} {counts}")
    if args.json:
        write_json(args.json, result.summary())
    if args.plot:
        plot_pr_curves(result.per_character, args.plot, title="Task 2 precision–recall per character")
    if args.confusion:
        plot_confusion(result, args.confusion)
    return 0


def cmd_check(args) -> int:
    from facecmp.data import check_dataset
    from facecmp.data.check import MAX_LISTED

    report = check_dataset(args.data, args.format)
    print(report.summary_text())  # lists the first problems already
    if len(report.problems) > MAX_LISTED:
        print(f"\nall {len(report.problems)} problems:")
        for problem in report.problems:
            print(f"  {problem}")
    return 1 if report.problems else 0


def cmd_finetune(args) -> int:
    from facecmp.study.finetune import finetune_from_archive
    from facecmp.training import distributed

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    under_torchrun = distributed.launched_by_torchrun()
    if (args.nproc or 1) > 1 or under_torchrun:
        if "recognizer" in stages or "dlib-hog" in stages:
            raise FacecmpError(f"--stages {args.stages}: several processes (--nproc, torchrun) train the MTCNN stages "
                               "pnet, rnet, onet only; run recognizer and dlib-hog training in one process")
        if args.augment:
            raise FacecmpError("--augment trains in one process for now: drop --nproc / torchrun, or drop --augment")
        if args.retain is not None:
            raise FacecmpError("--retain trains in one process for now: drop --nproc / torchrun, or drop --retain")
    if (args.nproc or 1) > 1 and not under_torchrun:
        if args.resume:
            distributed.require_world_size(args.out, args.nproc)
        return distributed.launch_local(args.nproc, _without_nproc(args.argv), args.threads, args.device)
    if "recognizer" in stages:
        return _finetune_with_recognizer(args, tuple(s for s in stages if s != "recognizer"))
    dist = distributed.init_from_env(args.device) if under_torchrun else None
    try:
        if dist is not None:
            import torch

            torch.set_num_threads(distributed.threads_per_process(args.threads, dist))
        ckpt = finetune_from_archive(
            args.data, args.out, stages=stages, epochs=args.epochs, seed=args.seed,
            device=distributed.device_for(dist, args.device) if dist is not None else args.device,
            resume=args.resume, from_scratch=args.from_scratch,
            dev_per_folder=args.dev_per_folder, holdout_per_folder=args.holdout_per_folder, fmt=args.format, dist=dist,
            augment=args.augment, retain=_retain_request(args), recipe=args.recipe,
        )
    finally:
        if dist is not None:
            distributed.close(dist)
    if dist is not None and not dist.is_main:
        return 0
    print(f"checkpoint: {ckpt.path}")
    shown = ("stages", "epochs", "thresholds", "timings") if "stages" in ckpt.meta else ("kind", "groups", "settings", "timings")
    print(json.dumps({k: ckpt.meta.get(k) for k in shown}, indent=2))
    return 0


def _retain_request(args):
    """``finetune --retain ROOT [--retain-method M] [--retain-holdout N]`` as a RetainRequest (None without --retain)."""
    if args.retain is None:
        return None
    from facecmp.training.retain import RetainRequest, RetainSettings

    share, stage_shares = args.retain_share
    given = {"replay_share": share, "stage_shares": stage_shares or None, "source_mining": args.retain_mining, "source_targets": args.retain_targets,
             "teacher_weight": args.retain_teacher_weight, "source_min_face": args.retain_min_face,
             "replay_mode": args.retain_replay, "feature_weight": args.retain_features}
    settings = RetainSettings(method=args.retain_method, wise_alpha=args.retain_alpha, **{k: v for k, v in given.items() if v is not None})
    return RetainRequest(args.retain, settings=settings, holdout=args.retain_holdout)


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line minus ``--nproc N`` / ``--nproc=N``: what each of the N processes runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _finetune_with_recognizer(args, stages: tuple[str, ...]) -> int:
    from facecmp.study.finetune import finetune_from_archive
    from facecmp.study.recognition import recognizer_from_archive
    from facecmp.training.recognizer import RecognizerSettings

    RecognizerSettings(kind=args.recognizer)  # an unknown kind fails before any training
    source = args.from_checkpoint
    if stages:
        finetune_from_archive(
            args.data, args.out, stages=stages, epochs=args.epochs, seed=args.seed, device=args.device,
            resume=args.resume, from_scratch=args.from_scratch,
            dev_per_folder=args.dev_per_folder, holdout_per_folder=args.holdout_per_folder, fmt=args.format, augment=args.augment,
            retain=_retain_request(args), recipe=args.recipe,
        )
        source = args.out
    elif source is None and not args.resume:
        raise DataError("--stages recognizer trains on top of a detector checkpoint: pass --from CKPT, or --resume to "
                        "continue in --out, or fine-tune the detector in the same run (--stages pnet,rnet,onet,recognizer)")
    recognizer = recognizer_from_archive(
        args.data, args.out, source=source, kind=args.recognizer, epochs=args.epochs, seed=args.seed, resume=args.resume,
        dev_per_folder=args.dev_per_folder, holdout_per_folder=args.holdout_per_folder, fmt=args.format, device=args.device,
    )
    info = recognizer.info
    print(f"checkpoint: {args.out} (recognizer: {info['kind']}, classes {', '.join(recognizer.classes)})")
    print(f"training faces per class: {info['train_faces']}  dev balanced accuracy {info['dev_balanced_accuracy']:.4f} "
          f"(epoch {info['best_epoch']})")
    return 0


def cmd_compare(args) -> int:
    from facecmp.study.compare import CASCADE_VARIANTS, COMPARE_VARIANTS, PEER_VARIANTS, run_comparison
    from facecmp.training.recognizer import RecognizerSettings

    recognizers = tuple(k for k in args.recognizers.split(",") if k)
    for kind in recognizers:
        RecognizerSettings(kind=kind)  # an unknown kind fails before any work
    report_dir = run_comparison(
        args.data, args.out, test=args.test, checkpoint=args.checkpoint, epochs=args.epochs,
        seed=args.seed, device=args.device, allow_missing=args.allow_missing,
        variants=COMPARE_VARIANTS + (CASCADE_VARIANTS if args.cascade else ()) + (PEER_VARIANTS if args.peers else ()), fmt=args.format,
        recognizers=recognizers, source_test=args.source_test, source_split=args.source_split,
    )
    print(f"report: {report_dir / 'report.md'}")
    return 0


def cmd_curve(args) -> int:
    from facecmp.study.curve import CURVE_FILE, PLOT_FILE, REPORT_FILE, CurveSettings, run_curve

    _require_output_folder(args.out, "--out")
    settings = CurveSettings(
        frames=args.frames, stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()), seed=args.seed,
        repeats=args.repeats, epochs=args.epochs, dev_per_folder=args.dev_per_folder, recipe=args.recipe,
    )
    curve = run_curve(args.data, args.out, settings, test=args.test, resume=args.resume, device=args.device, fmt=args.format,
                      progress=sys.stderr.isatty())
    print(f"{len(curve['points'])} points; wrote {args.out / CURVE_FILE}, {args.out / PLOT_FILE}, {args.out / REPORT_FILE}")
    return 0


def cmd_export(args) -> int:
    from facecmp.detection.export import SETTINGS_FILE, export_onnx

    out = export_onnx(args.model, args.onnx, min_face_size=args.min_face, thresholds=args.thresholds)
    print(f"wrote {out}/pnet.onnx, rnet.onnx, onet.onnx and {SETTINGS_FILE}")
    return 0


def cmd_robustness(args) -> int:
    from facecmp.study.robustness.compat import missing_dependency
    from facecmp.study.robustness.conditions import parse_corruptions, parse_severities
    from facecmp.study.robustness.grid import RobustnessSettings
    from facecmp.study.robustness.report import summary_table
    from facecmp.study.robustness.run import checkpoints_by_variant, run_robustness
    from facecmp.study.variants import get_variants

    if args.workers < 0 or (args.dev_per_folder or 0) < 0:
        raise FacecmpError(f"--workers {args.workers} / --dev-per-folder {args.dev_per_folder}: expected 0 or more")
    corruptions = parse_corruptions(args.corruptions)
    severities = parse_severities(args.severities)
    variants = tuple(n.strip() for n in args.variants.split(",") if n.strip())
    get_variants(variants)  # unknown names: one line listing the valid ones
    checkpoints = checkpoints_by_variant(args.checkpoint, variants)
    problem = missing_dependency()
    if problem:
        raise FacecmpError(problem)
    if args.out.exists() and not args.out.is_dir():
        raise FacecmpError(f"{args.out}: --out must be a folder, but a file of that name exists; choose another path")
    settings = RobustnessSettings(corruptions=corruptions, severities=severities, seed=args.seed, workers=args.workers)
    summaries = run_robustness(
        args.data, args.out, test=args.test, variants=variants, checkpoints=checkpoints, settings=settings,
        epochs=args.epochs, device=args.device, cache_dir=args.cache, allow_missing=args.allow_missing,
        dev_per_folder=args.dev_per_folder, fmt=args.format,
    )
    print(summary_table(summaries))
    print(f"report: {args.out / 'robustness.md'}")
    return 0


def cmd_demo(args) -> int:
    from facecmp.study.demo import run_demo

    report_dir = run_demo(args.out, seed=args.seed)
    print(f"report: {report_dir / 'report.md'}")
    return 0


COMMANDS = {
    "detect": cmd_detect,
    "evaluate": cmd_evaluate,
    "check": cmd_check,
    "finetune": cmd_finetune,
    "compare": cmd_compare,
    "demo": cmd_demo,
    "curve": cmd_curve,
    "export": cmd_export,
    "convert": cmd_convert,
    "robustness": cmd_robustness,
}


# Commands that read files and write files only: they never import torch (tests/test_cli_light.py),
# so --threads has nothing to apply to there.
TORCH_FREE_COMMANDS = frozenset({"check", "convert", "evaluate"})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command not in TORCH_FREE_COMMANDS:
        from facecmp.process import exact_float32_on_cuda, import_torch_frozen, retain_freed_memory

        torch = import_torch_frozen(args.threads)
        retain_freed_memory()
        exact_float32_on_cuda()
        torch.set_num_threads(args.threads)
    try:
        return COMMANDS[args.command](args)
    except FacecmpError as exc:
        if args.debug:
            raise
        print(f"facecmp: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment, not the input: permissions, a full disk, a path that is a file
        if args.debug:
            raise
        print(f"facecmp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facecmp: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``facecmp`` command (and ``python -m facecmp.cli``): ``main``, then a quick exit.

    Once torch is loaded, the interpreter's normal teardown takes ~0.15 s: torch's C++
    destructors unregister its ~2,000 operators and unload the CUDA runtime. Nothing of ours is
    left to finish by then (outputs are written atomically and closed before ``main`` returns),
    so after Python's exit handlers have run and the standard streams are flushed the process
    ends with ``os._exit``. ``main`` itself, as tests and scripts call it, exits normally.
    """
    import atexit
    import os

    code = main()
    atexit._run_exitfuncs()  # what the interpreter would run first at exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
