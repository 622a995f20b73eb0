"""Task 2 in the study: train recognizers on top of a detector checkpoint and measure who-is-it mAP.

- :func:`add_recognizer` trains one recognizer kind on a training split and stores it in a
  checkpoint folder (a copy of the detector checkpoint when the folder differs);
- :func:`recognizer_from_archive` is ``facecmp finetune --stages recognizer`` (the same
  train/dev split as detection fine-tuning);
- :func:`compare_recognizers` runs the detector once on the test images, then every recognizer
  on the same detections, and scores task 2 for each (plus the time recognition adds per image,
  beside the detection time, in the same run).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from facecmp.data.images import read_image
from facecmp.data.records import Dataset
from facecmp.data.task2 import Task2GroundTruth, task2_from_dataset
from facecmp.detection.base import Detections
from facecmp.detection.checkpoint import META_FILE, checkpoint_digest, load_checkpoint
from facecmp.detection.inference import run_detector
from facecmp.detection.models import pretrained_network
from facecmp.detection.recognizer import (
    KINDS, RECOGNIZER_FILE, CharacterDetections, Recognizer, load_recognizer, save_recognizer, task2_predictions,
)
from facecmp.errors import ModelError
from facecmp.evaluation.task2 import Task2Evaluation, evaluate_task2
from facecmp.training.recognizer import STATE_FILE, RecognizerSettings, train_recognizer


def copy_checkpoint(source: Path, target: Path) -> None:
    """The detector part of checkpoint ``source`` (stage weights + facecmp.json) into ``target``."""
    ckpt = load_checkpoint(source)
    target.mkdir(parents=True, exist_ok=True)
    for stage in ckpt.stages:
        shutil.copyfile(source / f"{stage}.pt", target / f"{stage}.pt")
    shutil.copyfile(source / META_FILE, target / META_FILE)  # last: the copy is complete only now


def trunk_weights(folder: Path, kind: str) -> tuple[dict, str]:
    """The ONet weights a recognizer of ``kind`` starts from, and where they came from."""
    ckpt = load_checkpoint(folder)
    if kind != "probe-pretrained" and "onet" in ckpt.state_dicts:
        return ckpt.state_dicts["onet"], f"{folder}/onet.pt (fine-tuned)"
    if kind == "probe-finetuned":
        raise ModelError(f"{folder}: probe-finetuned needs a checkpoint with a fine-tuned ONet (--stages ...,onet)")
    return pretrained_network("onet").state_dict(), "pretrained ONet (facenet-pytorch)"


def add_recognizer(
    folder: str | Path, train: Dataset, dev: Dataset | None, settings: RecognizerSettings = RecognizerSettings(), *,
    source: str | Path | None = None, seed: int = 0, resume: bool = False, cache_dir: str | Path | None = None,
    progress: bool = True, device: str = "cpu",
) -> Recognizer:
    """Train a recognizer into checkpoint ``folder`` (first a copy of ``source``'s detector when given)."""
    folder = Path(folder)
    if source is not None and Path(source).resolve() != folder.resolve():
        copy_checkpoint(Path(source), folder)
    elif not (folder / META_FILE).is_file():
        raise ModelError(
            f"{folder}: not a finished checkpoint, so there is no detector to add a recognizer to; pass --from CKPT "
            "(a folder `facecmp finetune` wrote) or fine-tune the detector in the same run (--stages pnet,rnet,onet,recognizer)"
        )
    onet, origin = trunk_weights(folder, settings.kind)
    result = train_recognizer(train, dev, onet, folder, settings, seed=seed, resume=resume,
                              cache_dir=cache_dir if cache_dir is not None else folder / "cache", progress=progress, device=device)
    save_recognizer(folder, result.net, result.classes, {**result.info, "trunk_from": origin, "train_dataset": train.name})
    return load_recognizer(folder)


def recognizer_from_archive(
    root: str | Path, out: str | Path, *, source: str | Path | None = None, kind: str = "finetune", epochs: int | None = None,
    seed: int = 0, resume: bool = False, dev_per_folder: int | None = None, holdout_per_folder: int = 0, fmt: str | None = None,
    device: str = "cpu",
) -> Recognizer:
    """``facecmp finetune --stages recognizer``: the same train/dev split as the detector's fine-tuning
    (the archive read as ``fmt``, None: found from its files), trained on ``device``."""
    from facecmp.study.finetune import training_split

    out = Path(out)
    if resume and not (out / STATE_FILE).is_file() and source is None:
        source = out
    train, dev = training_split(root, seed=seed, dev_per_folder=dev_per_folder, holdout_per_folder=holdout_per_folder, fmt=fmt)
    settings = RecognizerSettings(kind=kind, epochs=epochs)
    return add_recognizer(out, train, dev, settings, source=source, seed=seed, resume=resume, device=device)


@dataclass
class RecognitionResult:
    """Task 2 for one recognizer variant on the test images (detections shared by all variants)."""

    name: str
    evaluation: Task2Evaluation
    predictions: dict
    recognition_ms_per_image: float
    detection_ms_per_image: float
    info: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        s = self.evaluation.summary()
        return {"name": self.name, "map_cava": s["map_cava"], "map_voc": s["map_voc"],
                "ap_cava": {c: v["ap_cava"] for c, v in s["characters"].items()},
                "ap_voc": {c: v["ap_voc"] for c, v in s["characters"].items()},
                "recognition_accuracy": s["recognition_accuracy"], "confusion": s["confusion"],
                "recognition_ms_per_image": self.recognition_ms_per_image,
                "detection_ms_per_image": self.detection_ms_per_image,
                "train_faces": self.info.get("train_faces"), "kind": self.info.get("kind")}


def recognize_all(recognizer: Recognizer, test: Dataset, per_image: dict, progress: bool = True) -> tuple[dict, float]:
    """``key -> CharacterDetections`` for detections already made, and the recognition ms per image
    (crops + network; image decoding excluded, as the detector has the image already)."""
    out, seconds = {}, 0.0
    for record in tqdm(test.images, desc="recognize", unit="img", disable=not progress, leave=False):
        det = per_image[record.key]
        image = read_image(record.path)
        start = time.perf_counter()
        probs = recognizer.probabilities(image, det.boxes)
        seconds += time.perf_counter() - start
        out[record.key] = CharacterDetections(det.boxes, det.scores, det.landmarks, probs=probs)
    return out, 1000.0 * seconds / max(len(test.images), 1)


def oracle_detections(test: Dataset) -> dict[str, Detections]:
    """The annotated faces as detections with score 1: scores recognition alone, as if detection were perfect."""
    return {r.key: Detections(r.boxes.astype(np.float64).reshape(-1, 4), np.ones(len(r.boxes))) for r in test.images}


def compare_recognizers(
    detector, recognizers: dict[str, Recognizer], test: Dataset, *, ground_truth: Task2GroundTruth | None = None,
    progress: bool = True,
) -> list[RecognitionResult]:
    """Detect once on ``test`` (``detector=None``: the annotated faces, see :func:`oracle_detections`), then
    score task 2 for every recognizer on those same detections."""
    ground_truth = ground_truth or task2_from_dataset(test)
    if detector is None:
        per_image, detection_ms = oracle_detections(test), float("nan")
    else:
        run = run_detector(detector, test, workers=0, progress=progress, desc="detect (task 2)")
        per_image, detection_ms = run.per_image, run.ms_per_image
    results = []
    for name, recognizer in recognizers.items():
        recognized, ms = recognize_all(recognizer, test, per_image, progress)
        preds = task2_predictions(recognized, recognizer.classes, ground_truth.names)
        evaluation = evaluate_task2(preds, ground_truth)
        results.append(RecognitionResult(name, evaluation, preds, ms, detection_ms, recognizer.info))
    return results


def recognizer_key(detector_checkpoint: str | Path, train: Dataset, dev: Dataset | None, seed: int,
                   settings: RecognizerSettings) -> str:
    """The cache key of a recognizer trained on ``detector_checkpoint``: the checkpoint's content (its
    weights and facecmp.json, wherever the folder is), the data, seed and settings, the code,
    library versions and pretrained weights."""
    from facecmp.study.caching import cache_key, dataset_key, environment_key

    recipe = {k: v for k, v in asdict(settings).items() if k != "threads"}
    return cache_key(checkpoint_digest(detector_checkpoint), environment_key(), dataset_key(train),
                     dataset_key(dev), seed, recipe)


def recognizer_variants(
    detector_checkpoint: str | Path, train: Dataset, dev: Dataset | None, cache_dir: str | Path, *,
    kinds: Sequence[str] = KINDS, seed: int = 0, epochs: int | None = None, progress: bool = True, device: str = "cpu",
) -> dict[str, Path]:
    """One checkpoint folder per recognizer kind, each the detector checkpoint plus that recognizer (cached)."""
    detector_checkpoint = Path(detector_checkpoint)
    folders = {}
    for kind in kinds:
        settings = RecognizerSettings(kind=kind, epochs=epochs)
        folder = Path(cache_dir) / f"recognizer-{kind}-{recognizer_key(detector_checkpoint, train, dev, seed, settings)}"
        if not (folder / RECOGNIZER_FILE).is_file() or not load_checkpoint(folder).meta.get("recognizer"):
            add_recognizer(folder, train, dev, settings, source=detector_checkpoint, seed=seed,
                           resume=(folder / STATE_FILE).is_file(), cache_dir=Path(cache_dir) / "samples", progress=progress,
                           device=device)
        folders[kind] = folder
    return folders


def recognition_cost(detector, recognizer: Recognizer, test: Dataset, n_images: int = 50, progress: bool = True) -> dict:
    """ms per image of detection and of recognition on its detections, interleaved image by image in
    this process (so load from other processes hits both alike); images decoded outside the timing."""
    detect_ms, recognize_ms, faces = [], [], 0
    for record in tqdm(test.images[:n_images], desc="timing recognition", unit="img", disable=not progress, leave=False):
        image = read_image(record.path)
        start = time.perf_counter()
        found = detector.detect_batch([image])[0]
        middle = time.perf_counter()
        recognizer.probabilities(image, found.boxes)
        end = time.perf_counter()
        detect_ms.append(1000 * (middle - start))
        recognize_ms.append(1000 * (end - middle))
        faces += len(found)
    return {"n_images": len(detect_ms), "faces": faces,
            "detection_ms_mean": float(np.mean(detect_ms)), "recognition_ms_mean": float(np.mean(recognize_ms)),
            "detection_ms_median": float(np.median(detect_ms)), "recognition_ms_median": float(np.median(recognize_ms)),
            "recognition_share_of_detection": float(np.sum(recognize_ms) / np.sum(detect_ms))}


def task2_table(results: Sequence[RecognitionResult], detector_name: str) -> str:
    """Markdown table: mAP (both conventions), AP per character, recognition accuracy, ms per image."""
    from tabulate import tabulate

    chars = list(results[0].evaluation.per_character) if results else []
    rows = []
    for r in results:
        e = r.evaluation
        rows.append([r.name, e.map_cava, e.map_voc, *(e.per_character[c].ap_cava for c in chars), e.accuracy(),
                     r.recognition_ms_per_image])
    headers = ["recognizer", "mAP (course)", "mAP (VOC)", *(f"AP {c}" for c in chars), "accuracy", "recognition ms/image"]
    return (f"Task 2 (who is it) on the detections of `{detector_name}`; AP per character in the course convention.\n\n"
            + tabulate(rows, headers=headers, tablefmt="github", floatfmt=".3f"))


def study_task2(
    out: str | Path, detector_checkpoint: str | Path, train: Dataset, dev: Dataset | None, test: Dataset, *,
    cache_dir: str | Path, kinds: Sequence[str] = KINDS, seed: int = 0, progress: bool = True, detector_name: str = "",
    epochs: int | None = None, device: str = "cpu",
) -> list[RecognitionResult]:
    """``compare``'s task-2 part: every recognizer kind on ``detector_checkpoint``'s detections of ``test``;
    appends the table to ``out/report.md``, writes ``out/task2.json`` and a confusion matrix per kind."""
    from facecmp.atomic import write_json, write_text
    from facecmp.detection.detector import Detector
    from facecmp.evaluation.plots import plot_pr_curves
    from facecmp.evaluation.task2 import plot_confusion

    out = Path(out)
    ckpt = load_checkpoint(detector_checkpoint)
    kinds = [k for k in kinds if k != "probe-finetuned" or "onet" in ckpt.stages]
    folders = recognizer_variants(detector_checkpoint, train, dev, cache_dir, kinds=kinds, seed=seed, epochs=epochs,
                                  progress=progress, device=device)
    recognizers = {kind: load_recognizer(folder) for kind, folder in folders.items()}
    detector = Detector.from_checkpoint(detector_checkpoint, device=device)
    results = compare_recognizers(detector, recognizers, test, progress=progress)
    for r in results:
        plot_confusion(r.evaluation, out / f"task2_confusion_{r.name}.png", title=r.name)
        plot_pr_curves(r.evaluation.per_character, out / f"task2_pr_{r.name}.png", title=f"task 2, {r.name}")
    name = detector_name or str(detector_checkpoint)
    write_json(out / "task2.json", {"detector": name, "variants": [r.as_json() for r in results]})
    report = out / "report.md"
    text = report.read_text(encoding="utf-8") if report.is_file() else ""
    section = ["", "## Task 2: who is it", "", task2_table(results, name), "",
               "Recognizers: " + "; ".join(f"{r.name} trained on {r.info.get('train_faces')} faces" for r in results), "",
               *(f"![{r.name}](task2_confusion_{r.name}.png)" for r in results), ""]
    write_text(report, text + "\n".join(section))
    return results
