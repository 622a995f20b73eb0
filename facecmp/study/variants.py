"""The model variants the study compares, registered in :mod:`facecmp.study.registry`.

A variant knows how to produce a ready detector for a ``VariantContext`` (training data, dev split,
cache folder, device), training it first if it needs to; what it caches, and under which key, is
:mod:`facecmp.study.caching`'s. Adding one is a function and a ``register(...)`` call; the CLI's
``compare`` and the pytest plugin both read the registry from here (importing this module is what
registers the variants).
"""

from __future__ import annotations

import importlib
import json
from typing import Callable, Sequence

from facecmp.detection.base import DetectorLike, DetectorSettings
from facecmp.detection.checkpoint import META_FILE
from facecmp.detection.detector import Detector
from facecmp.errors import FacecmpError
from facecmp.detection.reference import FacenetReference
from facecmp.detection.peers.dlib_hog import CALIBRATION_GRID as DLIB_GRID, calibration_detectors, dlib_hog_at
from facecmp.study.caching import (
    PEER_LIBRARIES,
    cache_key,
    cached_calibration,
    dataset_key,
    dlib_checkpoint,
    environment_key,
    finetuned_checkpoint,
)
# REGISTRY and get_variants are read from here: importing this module is what fills the registry.
from facecmp.study.registry import REGISTRY, Prepared, Variant, VariantContext, get_variants, register  # noqa: F401


# -- pretrained ---------------------------------------------------------------------------
def _pretrained(ctx: VariantContext) -> Prepared:
    settings = DetectorSettings(device=ctx.device)
    return Prepared(Detector(settings=settings), settings={"thresholds": list(settings.thresholds)})


def _pretrained_calibrated(ctx: VariantContext) -> Prepared:
    """The pretrained cascade at the thresholds that score best on the dev split (cached)."""
    from facecmp.training.calibrate import best_thresholds

    if ctx.dev is None:
        raise FacecmpError("pretrained-calibrated needs a dev split with ground truth to choose thresholds on")
    path = ctx.cache_dir / f"pretrained-thresholds-{cache_key(environment_key(), dataset_key(ctx.dev))}.json"
    stored = cached_calibration(
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
        "finetuned-cascade-retain", "finetuned-cascade keeping the source domain: source-domain samples replayed in every stage's, "
        "taught by the pretrained stage, RNet's and ONet's features on them distilled from it (facecmp finetune --retain ROOT; "
        "the source images not tested on)",
        _from_checkpoint("finetuned-cascade-retain", ("pnet", "rnet", "onet"), retained=True), needs_training_data=True,
        needs_source_data=True,
    )
)


# -- peers: the detectors people reach for instead (issue #14) ------------------------------
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
        path = ctx.cache_dir / f"{name}-settings-{cache_key(environment_key(*PEER_LIBRARIES), grid, dataset_key(ctx.dev))}.json"
        stored = cached_calibration(path, lambda: best_setting((calibration or (lambda: build))(), ctx.dev, grid, progress=ctx.progress, name=name))
        # What it found on the dev split: a peer that answered there is not silent where it finds nothing.
        found_on_dev = max(int(row.get("n_detections", 0)) for row in stored["table"])
        return Prepared(build(stored["thresholds"]), stored["seconds"], {"thresholds": stored["thresholds"], "dev_detections": found_on_dev})

    return prepare


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
