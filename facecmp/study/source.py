"""The source domain: every variant scored on a second test set, the kind of images the pretrained
cascade was trained on (human faces; WIDER FACE), next to its score on the target domain.

What fine-tuning buys on the target is half of the trade-off; what it costs on the source is
the other half. A WIDER FACE dataset with the official ``.mat`` files (``eval_tools/ground_truth/``
beside ``WIDER_val/``) is scored with WIDER's protocol (``wider_easy``, ``wider_medium``,
``wider_hard``: :mod:`facecmp.evaluation.wider`); any other dataset the data layer reads with the
course evaluator (``source_ap_cava``, ``source_ap_voc``, ``source_recall``, ``source_precision``).
``split:N`` scores N images per folder (WIDER: per event), chosen with the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facecmp.data.archive import load_test_set
from facecmp.data.records import Dataset
from facecmp.data.split import split_dataset
from facecmp.data.wider_protocol import FACES_FILE, SUBMISSION_FOLDER, WiderGroundTruth, read_wider_ground_truth, write_submission
from facecmp.detection.inference import is_wider_dataset, run_detector, wider_submission
from facecmp.evaluation.evaluator import evaluate
from facecmp.evaluation.wider import DIFFICULTIES, score_submission

WIDER_METRICS = tuple(f"wider_{d}" for d in DIFFICULTIES)
COURSE_METRICS = ("source_ap_cava", "source_ap_voc", "source_recall", "source_precision")
SOURCE_METRICS = WIDER_METRICS + COURSE_METRICS
_MAT_FOLDERS = ("eval_tools/ground_truth", "ground_truth", ".")


@dataclass(frozen=True)
class SourceDomain:
    root: Path
    test: Dataset
    wider: WiderGroundTruth | None  # the official ground truth, when the source is WIDER FACE with its .mat files
    selection: str  # "all" or the split spec
    # The images of ``root`` the split does not score (None without a split): what
    # ``finetuned-cascade-retain`` may train on (:mod:`facecmp.training.retain`).
    retain: Dataset | None = None

    @property
    def protocol(self) -> str:
        return "wider" if self.wider is not None else "course"

    @property
    def key(self) -> str:
        """The name its gates are kept under: the dataset folder's name."""
        return self.root.resolve().name

    def describe(self) -> str:
        how = ("WIDER FACE protocol (official .mat ground truth, IoU 0.5; the images scored only)" if self.wider is not None
               else "course evaluator (IoU 0.3)")
        return f"source domain: {len(self.test)} images ({self.test.n_faces} faces) of `{self.root}` ({self.selection}), {how}"


@dataclass(frozen=True)
class SourceResult:
    name: str
    metrics: dict[str, float]
    protocol: str
    ms_per_image: float

    @property
    def headline(self) -> float:
        """The one number of a point in the trade-off plot: WIDER's easy AP, else the course AP."""
        return self.metrics["wider_easy" if self.protocol == "wider" else "source_ap_cava"]


def find_wider_mats(root: Path) -> Path | None:
    for folder in _MAT_FOLDERS:
        if (root / folder / FACES_FILE).is_file():
            return root / folder
    return None


def load_source_domain(root: str | Path, *, split: str | None = None, seed: int = 0) -> SourceDomain:
    """The source-domain test images at ``root`` (any format; its test part, else its only part),
    ``split`` (``split:N``) of them per folder when given, with WIDER's ground truth when it is there."""
    from facecmp.study.splits import parse_split

    root = Path(root)
    test = load_test_set(root)
    rest = None
    if split is not None:
        per_folder = parse_split(split)
        if per_folder is None:
            from facecmp.errors import DataError

            raise DataError(f"source split {split!r}: expected split:N (N images per folder, chosen with the seed)")
        rest, test = split_dataset(test, per_folder=per_folder, seed=seed)
    mats = find_wider_mats(root) if is_wider_dataset(root) else None
    return SourceDomain(root, test, read_wider_ground_truth(mats) if mats else None, split or "all", rest)


def score_source(name: str, prepared, source: SourceDomain, *, out: Path | None = None, workers: int = 0,
                 progress: bool = True) -> SourceResult:
    """Detect with a ready variant on the source images and score them; ``out``: also write the
    detections there (WIDER: ``out/wider/<event>/<name>.txt``, the official submission format)."""
    run = run_detector(prepared.detector, source.test, workers=workers, progress=progress, desc=f"{name} (source)")
    if source.wider is not None:
        submission = wider_submission(run.per_image)
        if out is not None:
            write_submission(Path(out) / SUBMISSION_FOLDER, submission)
        score = score_submission(submission, source.wider, allow_missing=True, pred=name)
        metrics = {f"wider_{d}": float(c.ap) for d, c in score.evaluation.curves.items()}
        return SourceResult(name, metrics, "wider", run.ms_per_image)
    if out is not None:
        from facecmp.data.predictions import save_predictions

        save_predictions(out, run.predictions)
    s = evaluate(run.predictions, source.test.ground_truth()).summary()
    metrics = {f"source_{k}": float(s[k]) for k in ("ap_cava", "ap_voc", "recall", "precision")}
    return SourceResult(name, metrics, "course", run.ms_per_image)


def retain_context(source: SourceDomain, target_test: Dataset | None) -> dict:
    """The VariantContext fields a ``-retain`` variant reads: the source images the split leaves out,
    and the two test sets they must not share an image with."""
    return {"retain": source.retain,
            "retain_excluded": (("the source-domain test set", source.test), ("the target test set", target_test))}
