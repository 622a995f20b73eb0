"""The model variants the study compares, as a small registry.

A variant knows how to produce a ready detector for a ``VariantContext`` (training data, dev split,
cache folder, device), training it first if it needs to. Adding one is a function and a
``register(...)`` call; the CLI's ``compare`` and the pytest plugin both read this registry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from facecmp.atomic import write_json
from facecmp.data.fingerprint import CODE_PACKAGES, code_fingerprint, data_fingerprint, library_versions  # noqa: F401 (CODE_PACKAGES: re-exported)
from facecmp.data.records import Dataset
from facecmp.detection.base import DetectorLike, DetectorSettings
from facecmp.detection.checkpoint import META_FILE
from facecmp.detection.detector import Detector
from facecmp.errors import FacecmpError
from facecmp.detection.reference import FacenetReference
from facecmp.detection.peers.dlib_hog import CALIBRATION_GRID as DLIB_GRID, calibration_detectors, dlib_hog_at

@dataclass
class VariantContext:
    """Everything a variant may need to get ready."""

    train: Dataset | None
    dev: Dataset | None
    cache_dir: Path
    device: str = "cpu"
    seed: int = 0
    epochs: int | None = None
    progress: bool = True
    # variant name -> an existing checkpoint folder to use instead of training
    checkpoints: dict[str, Path] = field(default_factory=dict)
    # Source-domain images a ``-retain`` variant keeps (facecmp.training.retain), and the test sets
    # (what, images) they must not share an image with.
    retain: Dataset | None = None
    retain_excluded: tuple[tuple[str, Dataset | None], ...] = ()


@dataclass
class Prepared:
    detector: DetectorLike
    training_seconds: float | None = None
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    prepare: Callable[[VariantContext], Prepared]
    needs_training_data: bool = False
    # Trains on source-domain images (a ``-retain`` variant): a benchmark run without
    # --facecmp-source-data leaves it out unless it is asked for by name.
    needs_source_data: bool = False


REGISTRY: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    REGISTRY[variant.name] = variant
    return variant


def get_variants(names: Sequence[str] | None = None) -> list[Variant]:
    if names is None:
        return list(REGISTRY.values())
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise FacecmpError(f"unknown variant(s) {', '.join(unknown)}; available: {', '.join(REGISTRY)}")
    return [REGISTRY[n] for n in names]


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _dataset_fingerprint(ds: Dataset | None) -> str | None:
    return None if ds is None else data_fingerprint(ds)


def environment_key(*libraries: str) -> dict:
    """What every cached checkpoint and calibration of the study depends on besides its data and
    settings: facecmp's code, the library versions (the core ones and ``libraries``) and the
    pretrained weights (which fine-tuning starts from and the pretrained variants run)."""
    from facecmp.detection.models import pretrained_weights_digest

    return {"code": code_fingerprint(), "libraries": library_versions(*libraries), "pretrained_weights": pretrained_weights_digest()}


def _cached_calibration(path: Path, calibrate: Callable[[], tuple[Sequence[float], list[dict]]]) -> dict:
    """``{"thresholds", "table", "seconds"}`` read from ``path``, or calibrated now and written there."""
    if path.is_file():
        return json.loads(path.read_text())
    start = time.perf_counter()
    best, table = calibrate()
    stored = {"thresholds": list(best), "table": table, "seconds": time.perf_counter() - start}
    write_json(path, stored)
    return stored


# -- pretrained ---------------------------------------------------------------------------
def _pretrained(ctx: VariantContext) -> Prepared:
    settings = DetectorSettings(device=ctx.device)
    return Prepared(Detector(settings=settings), settings={"thresholds": list(settings.thresholds)})


def _pretrained_calibrated(ctx: VariantContext) -> Prepared:
    """The pretrained cascade at the thresholds that score best on the dev split (cached)."""
    from facecmp.training.calibrate import best_thresholds

    if ctx.dev is None:
        raise FacecmpError("pretrained-calibrated needs a dev split with ground truth to choose thresholds on")
    path = ctx.cache_dir / f"pretrained-thresholds-{_fingerprint(environment_key(), _dataset_fingerprint(ctx.dev))}.json"
    stored = _cached_calibration(
        path,
        lambda: best_thresholds(
            lambda t: Detector(settings=DetectorSettings(thresholds=t, device=ctx.device)), ctx.dev, progress=ctx.progress
        ),
    )
    settings = DetectorSettings(thresholds=tuple(stored["thresholds"]), device=ctx.device)
    return Prepared(Detector(settings=settings), stored["seconds"], {"thresholds": stored["thresholds"]})


# -- facenet-pytorch's own MTCNN, the peer we measure against -------------------------------
def _facenet_reference(ctx: VariantContext) -> Prepared:
    settings = DetectorSettings(device=ctx.device)
    return Prepared(FacenetReference(settings), settings={"thresholds": list(settings.thresholds)})


# -- fine-tuned -----------------------------------------------------------------------------
def _checkpoint_folder(ctx: VariantContext, stages: tuple[str, ...], augment=None, retain=None) -> Path:
    parts = (environment_key(), stages, _dataset_fingerprint(ctx.train), _dataset_fingerprint(ctx.dev), ctx.seed, ctx.epochs)
    if retain is not None:  # the retain recipe and the source images it keeps
        key = _fingerprint(*parts, dataclasses.asdict(retain), _dataset_fingerprint(ctx.retain))
        return ctx.cache_dir / f"finetuned-{'-'.join(stages)}-retain-{key}"
    if augment is not None:  # only then, so the folders of the unaugmented variants keep their keys
        key = _fingerprint(*parts, dataclasses.asdict(augment))
        return ctx.cache_dir / f"finetuned-{'-'.join(stages)}-augmented-{key}"
    return ctx.cache_dir / f"finetuned-{'-'.join(stages)}-{_fingerprint(*parts)}"


def _reuse_finished_stages(ctx: VariantContext, stages: tuple[str, ...], folder: Path, augment=None) -> None:
    """Start ``folder`` from the training states of a cached run over a prefix of ``stages``.

    Stage-wise training makes the PNet of the ``pnet`` checkpoint the same as the PNet of the
    ``pnet,rnet,onet`` one (same data, settings and seed), so the longer run resumes from it
    instead of training it again.
    """
    from facecmp.training.loop import state_file

    for k in range(len(stages) - 1, 0, -1):
        prefix = _checkpoint_folder(ctx, stages[:k], augment)
        states = [prefix / state_file(stage) for stage in stages[:k]]
        if all(p.is_file() for p in states):
            folder.mkdir(parents=True, exist_ok=True)
            for p in states:
                if not (folder / p.name).exists():
                    shutil.copyfile(p, folder / p.name)
            return


def finetuned_checkpoint(ctx: VariantContext, name: str, stages: tuple[str, ...], augment=None, retain=None) -> Path:
    """The checkpoint for ``stages`` on this context's data: reused when cached, else trained (resumably).
    ``augment`` (an AugmentSettings): mined with augmented copies of the training frames too; ``retain``
    (a RetainSettings): keeping the source images ``ctx.retain``."""
    from facecmp.training.finetune import FinetuneSettings, finetune
    from facecmp.training.loop import state_file

    if name in ctx.checkpoints:
        return ctx.checkpoints[name]
    if ctx.train is None:
        raise FacecmpError(f"{name} needs training images (an archive with antrenare/) or an existing checkpoint")
    if retain is not None:
        _require_retain(ctx, name)
    folder = _checkpoint_folder(ctx, stages, augment, retain)
    if not (folder / META_FILE).is_file():
        if retain is None:  # a retain run's PNet differs from the plain one's
            _reuse_finished_stages(ctx, stages, folder, augment)
        finetune(
            ctx.train, folder, FinetuneSettings(stages=stages, epochs=ctx.epochs or None, seed=ctx.seed, augment=augment, retain=retain),
            dev=ctx.dev, device=ctx.device, resume=any((folder / state_file(s)).is_file() for s in stages),
            cache_dir=ctx.cache_dir / f"samples-{code_fingerprint()}", progress=ctx.progress,
            retain=ctx.retain if retain is not None else None,
        )
    return folder


def _require_retain(ctx: VariantContext, name: str) -> None:
    """A ``-retain`` variant needs source images apart from every test set."""
    from facecmp.training.retain import refuse_overlap, require_faces

    if ctx.retain is None or len(ctx.retain) == 0:
        raise FacecmpError(
            f"{name} keeps the source domain and trains on its images that are not tested on: pass a source-domain set "
            "with a split (compare --source-test ROOT --source-split split:1, or --facecmp-source-data ROOT "
            "--facecmp-source-split split:1), or train it with `facecmp finetune --retain ROOT`"
        )
    require_faces(ctx.retain)
    for what, test in ctx.retain_excluded:
        refuse_overlap(ctx.retain, test, what)


def _from_checkpoint(name: str, stages: tuple[str, ...], augmented: bool = False, retained: bool = False) -> Callable[[VariantContext], Prepared]:
    def prepare(ctx: VariantContext) -> Prepared:
        from facecmp.detection.checkpoint import load_checkpoint
        from facecmp.training.augment import AugmentSettings
        from facecmp.training.retain import RetainSettings

        folder = finetuned_checkpoint(ctx, name, stages, AugmentSettings() if augmented else None, RetainSettings() if retained else None)
        meta = load_checkpoint(folder).meta
        timings = meta.get("timings") or {}
        detector = Detector.from_checkpoint(folder, device=ctx.device)
        return Prepared(
            detector,
            training_seconds=sum(float(v) for v in timings.values()) if timings else None,
            settings={"thresholds": list(detector.settings.thresholds), "checkpoint": str(folder)},
        )

    return prepare


register(Variant("pretrained", "facenet-pytorch's pretrained weights in our cascade, default thresholds", _pretrained))
register(Variant("facenet-reference", "facenet-pytorch's own MTCNN (the peer we measure against)", _facenet_reference))
register(
    Variant(
        "pretrained-calibrated", "pretrained cascade at the thresholds best on the dev split", _pretrained_calibrated,
        needs_training_data=True,
    )
)
register(
    Variant(
        "finetuned-pnet", "PNet fine-tuned on the target domain, RNet/ONet pretrained and frozen",
        _from_checkpoint("finetuned-pnet", ("pnet",)), needs_training_data=True,
    )
)
register(
    Variant(
        "finetuned-pnet-rnet", "PNet then RNet fine-tuned on the target domain (RNet on PNet's proposals), ONet pretrained",
        _from_checkpoint("finetuned-pnet-rnet", ("pnet", "rnet")), needs_training_data=True,
    )
)
register(
    Variant(
        "finetuned-cascade", "the whole cascade fine-tuned stage by stage (RNet/ONet on the earlier stages' candidates)",
        _from_checkpoint("finetuned-cascade", ("pnet", "rnet", "onet")), needs_training_data=True,
    )
)
register(
    Variant(
        "finetuned-cascade-augmented", "finetuned-cascade mined on augmented copies of the training frames too (photometric, "
        "blur, noise, JPEG, downscaling: facecmp finetune --augment)",
        _from_checkpoint("finetuned-cascade-augmented", ("pnet", "rnet", "onet"), augmented=True), needs_training_data=True,
    )
)

register(
    Variant(
        "finetuned-cascade-retain", "finetuned-cascade keeping the source domain: source-domain crops replayed in every stage's "
        "samples (facecmp finetune --retain ROOT; the source images not tested on)",
        _from_checkpoint("finetuned-cascade-retain", ("pnet", "rnet", "onet"), retained=True), needs_training_data=True,
        needs_source_data=True,
    )
)

# -- peers: the detectors people reach for instead (issue #14) ------------------------------
# Their packages, in the keys of their cached calibrations and trained detectors (BlazeFace runs
# in its own environment: its mediapipe version is not covered).
PEER_LIBRARIES = ("opencv-python-headless", "dlib-bin", "yuface", "face_recognition_models")
# opencv-haar's dev grid: (min_neighbors, score) with score 0 = level weight, 1 = neighbour count.
HAAR_GRID = tuple((float(n), float(k)) for k in (0, 1) for n in (1, 3, 5))


def _haar_at(point: Sequence[float]):
    from facecmp.detection.peers.haar import SCORES, HaarDetector, HaarSettings

    return HaarDetector(HaarSettings(min_neighbors=int(point[0]), score=SCORES[int(point[1])]))


# blazeface's dev grid: MediaPipe's min_detection_confidence.
BLAZEFACE_GRID = ((0.05,), (0.2,), (0.5,))


def _blazeface_at(model: str) -> Callable[[Sequence[float]], DetectorLike]:
    def build(point: Sequence[float]):
        from facecmp.detection.peers.blazeface import BlazeFaceDetector, BlazeFaceSettings

        return BlazeFaceDetector(BlazeFaceSettings(model=model, min_confidence=float(point[0])))

    return build


def _calibrated_peer(
    name: str, build: Callable[[Sequence[float]], DetectorLike], grid: Sequence[Sequence[float]],
    calibration: Callable[[], Callable[[Sequence[float]], DetectorLike]] | None = None,
) -> Callable[[VariantContext], Prepared]:
    """A peer at the grid point best on the dev split (cached), like ``pretrained-calibrated``.

    ``calibration()``, if given, makes the detectors scored on the grid (sharing work between
    points); they must find what ``build(point)`` finds.
    """

    def prepare(ctx: VariantContext) -> Prepared:
        from facecmp.training.calibrate import best_setting

        build(grid[0])  # a missing package says what to install before any work
        if ctx.dev is None:
            raise FacecmpError(f"{name} needs a dev split with ground truth to calibrate on")
        path = ctx.cache_dir / f"{name}-settings-{_fingerprint(environment_key(*PEER_LIBRARIES), grid, _dataset_fingerprint(ctx.dev))}.json"
        stored = _cached_calibration(path, lambda: best_setting((calibration or (lambda: build))(), ctx.dev, grid, progress=ctx.progress, name=name))
        # What it found on the dev split: a peer that answered there is not silent where it finds nothing.
        found_on_dev = max(int(row.get("n_detections", 0)) for row in stored["table"])
        return Prepared(build(stored["thresholds"]), stored["seconds"], {"thresholds": stored["thresholds"], "dev_detections": found_on_dev})

    return prepare


def dlib_checkpoint(ctx: VariantContext) -> Path:
    """``dlib-hog-trained``'s checkpoint on this context's data: reused when cached, else trained."""
    from facecmp.training.dlib_train import DlibTrainSettings, train_dlib_hog

    name = "dlib-hog-trained"
    if name in ctx.checkpoints:
        return ctx.checkpoints[name]
    if ctx.train is None:
        raise FacecmpError(f"{name} needs training images (an archive with antrenare/) or an existing checkpoint")
    settings = DlibTrainSettings(seed=ctx.seed)
    key = _fingerprint(environment_key(*PEER_LIBRARIES), settings, _dataset_fingerprint(ctx.train), _dataset_fingerprint(ctx.dev))
    folder = ctx.cache_dir / f"{name}-{key}"
    if not (folder / META_FILE).is_file():
        train_dlib_hog(ctx.train, folder, dev=ctx.dev, settings=settings, progress=ctx.progress, resume=True)
    return folder


def _dlib_hog_trained(ctx: VariantContext) -> Prepared:
    from facecmp.detection.peers import import_peer
    from facecmp.detection.peers.dlib_hog import load_dlib_checkpoint

    import_peer("dlib", "dlib-hog-trained")
    folder = dlib_checkpoint(ctx)
    detector = load_dlib_checkpoint(folder)
    meta = json.loads((folder / META_FILE).read_text())
    timings = meta.get("timings") or {}
    settings = detector.settings
    return Prepared(
        detector, training_seconds=sum(float(v) for v in timings.values()) if timings else None,
        settings={"thresholds": [settings.upsample, settings.adjust_threshold], "checkpoint": str(folder)},
    )


register(
    Variant(
        "opencv-haar", "OpenCV's Haar cascade; min_neighbors and score (level weight or neighbour count) calibrated on the dev split",
        _calibrated_peer("opencv-haar", _haar_at, HAAR_GRID), needs_training_data=True,
    )
)
register(
    Variant(
        "dlib-hog", "dlib's pretrained HOG frontal face detector; upsample and score threshold calibrated on the dev split",
        _calibrated_peer("dlib-hog", dlib_hog_at, DLIB_GRID, calibration_detectors),
        needs_training_data=True,
    )
)
register(
    Variant(
        "dlib-hog-trained", "dlib's HOG + linear SVM trained on the training split (one window per aspect group), calibrated on the dev split",
        _dlib_hog_trained, needs_training_data=True,
    )
)
for _model, _name in (("short", "blazeface"), ("full", "blazeface-full")):
    register(
        Variant(
            _name, f"Google's BlazeFace {_model}-range model (MediaPipe, own environment); min confidence calibrated on the dev split",
            _calibrated_peer(_name, _blazeface_at(_model), BLAZEFACE_GRID), needs_training_data=True,
        )
    )


# -- modern CNN peers and an anime face detector (issue #23). Each grid's last coordinate is a
# score cut applied after the model's own suppression, so one scan per other setting serves all.
def _score_cut_peer(name: str, description: str, build_path: str, grid: Sequence[Sequence[float]]) -> Variant:
    def build(point: Sequence[float]):
        module, _, attr = build_path.partition(":")
        return getattr(importlib.import_module(module), attr)(point)

    def calibration():
        from facecmp.detection.peers import score_cut_calibration

        return score_cut_calibration(build, grid)

    return Variant(name, description, _calibrated_peer(name, build, grid, calibration), needs_training_data=True)


YUNET_GRID = ((0.0,), (0.3,), (0.5,), (0.7,))
DLIB_CNN_GRID = ((0.0,), (0.5,), (1.0,))
RETINAFACE_GRID = tuple((float(side), cut) for side in (0, 800) for cut in (0.0, 0.8, 0.95))
ANIMEFACE_GRID = ((0.0,), (0.5,), (0.8,))
for _variant in (
    _score_cut_peer("yunet", "YuNet (libfacedetection's CNN, yuface wheel); confidence cut calibrated on the dev split",
                    "facecmp.detection.peers.yunet:yunet_at", YUNET_GRID),
    _score_cut_peer("dlib-cnn", "dlib's MMOD CNN face detector (face_recognition_models' weights); score cut calibrated on the dev split",
                    "facecmp.detection.peers.dlib_cnn:dlib_cnn_at", DLIB_CNN_GRID),
    _score_cut_peer("retinaface", "RetinaFace MobileNetV2 (TensorFlow frozen graph, own environment); input side and score cut "
                    "calibrated on the dev split", "facecmp.detection.peers.retinaface_tf:retinaface_at", RETINAFACE_GRID),
    _score_cut_peer("animeface", "nagadomi's anime face detector (own environment, Pillow<=11.3); likelihood cut calibrated on the "
                    "dev split", "facecmp.detection.peers.animeface_nvxs:animeface_at", ANIMEFACE_GRID),
):
    register(_variant)
