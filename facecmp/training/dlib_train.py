"""Training dlib's HOG + linear SVM detector on your boxes: the classic alternative to fine-tuning.

``dlib.train_simple_object_detector`` learns one sliding window of one shape. Faces of very
different aspect ratios cannot share a window (dlib refuses such a set, "impossible set of
object boxes"), so the boxes are split into up to ``aspect_groups`` groups of similar aspect
ratio (equal-count groups of ``log(width / height)``) and one detector is trained per group, with
the other groups' boxes marked *ignore* (neither positives nor negatives). Boxes too small for
the window at the smallest scale dlib searches are ignored too, and counted. At detection time
the group detectors run together (``run_multiple``: one non-maximum suppression over all).

The training set goes to dlib as an imglab XML file naming the images where they are (nothing is
copied). The checkpoint folder holds one ``.svm`` per group and ``facecmp.json`` (written last,
atomically) with ``"kind": "dlib-hog"``, the groups, the settings calibrated on the dev split and
the timings; ``facecmp detect --model DIR`` runs it.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
from tqdm.auto import tqdm

from facecmp import atomic
from facecmp.data.fingerprint import data_fingerprint
from facecmp.data.records import Dataset
from facecmp.detection.peers import import_peer
from facecmp.detection.peers.dlib_hog import CALIBRATION_GRID, KIND, META_FILE, DlibHogSettings, calibration_detectors
from facecmp.errors import DataError, FacecmpError
from facecmp.training.loop import training_threads

FORMAT = 1


@dataclass(frozen=True)
class DlibTrainSettings:
    # Sliding-window area in pixels (dlib's default is 80 * 80); each group's window has this
    # area and the group's median aspect ratio.
    window_area: int = 48 * 48
    aspect_groups: int = 4
    C: float = 25.0  # Dexter, 400 images: C 5 -> test AP 0.375, C 25 -> 0.612 (docs/results.md, Peers)
    epsilon: float = 0.01
    flips: bool = True
    # Training images drawn (seeded) from the training split; None: all of them.
    max_images: int | None = 400
    seed: int = 0
    threads: int | None = None  # None: the process's torch setting (what `facecmp --threads` set)

    def __post_init__(self) -> None:
        if self.window_area < 400:
            raise ValueError(f"window_area must be >= 400 px (dlib's smallest useful window), got {self.window_area}")
        if self.aspect_groups < 1:
            raise ValueError(f"aspect_groups must be >= 1, got {self.aspect_groups}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {self.max_images}")


@dataclass(frozen=True)
class AspectGroup:
    aspect: float  # median width / height of its boxes
    window: tuple[int, int]  # (width, height)
    n_boxes: int  # boxes trained on
    n_ignored: int  # boxes of this group ignored: smaller than its window or too different in shape


def _sizes(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Widths and heights of inclusive-pixel boxes."""
    return (boxes[:, 2] - boxes[:, 0] + 1).astype(float), (boxes[:, 3] - boxes[:, 1] + 1).astype(float)


def aspect_groups(boxes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, labels)``: boxes split into up to ``n_groups`` equal-count groups of ``log(w / h)``.

    ``edges`` are the inner boundaries (``n_groups - 1`` of them, fewer when boxes tie);
    ``labels[i]`` is box i's group.
    """
    if len(boxes) == 0:
        raise DataError("no annotated faces to train a dlib detector on")
    w, h = _sizes(boxes)
    log_aspect = np.log(w / h)
    edges = np.unique(np.quantile(log_aspect, np.linspace(0, 1, n_groups + 1)[1:-1])) if n_groups > 1 else np.zeros(0)
    return edges, np.searchsorted(edges, log_aspect, side="right")


# dlib's HOG cell: a window whose sides are not multiples of it is rounded to whole cells, which
# changes its aspect ratio (a 44x52 request became a 0.67 template, too narrow for 0.93 boxes).
CELL = 8
# Boxes whose aspect ratio is further than this factor from their group's median may not be
# matched at dlib's IoU 0.5 by its cell-rounded window (dlib refuses them): they are ignored, and counted.
MAX_ASPECT_MISMATCH = 1.25


def _window(area: int, aspect: float) -> tuple[int, int]:
    side = lambda v: max(2 * CELL, CELL * round(v / CELL))  # noqa: E731
    return side(math.sqrt(area * aspect)), side(math.sqrt(area / aspect))


def _unusable(boxes: np.ndarray, window: tuple[int, int], aspect: float) -> np.ndarray:
    """Boxes a group's window (of its median ``aspect``) cannot learn: smaller than the window
    (training does not upsample: that would quadruple its cost) or of a too different shape."""
    w, h = _sizes(boxes)
    mismatch = np.abs(np.log((w / h) / aspect))
    return ((w * h) < 0.7 * window[0] * window[1]) | (mismatch > math.log(MAX_ASPECT_MISMATCH))


def _write_xml(path: Path, dataset: Dataset, labels_per_image: list[np.ndarray], group: int, small: list[np.ndarray]) -> None:
    lines = ["<?xml version='1.0' encoding='UTF-8'?>", "<dataset><images>"]
    for record, labels, tiny in zip(dataset.images, labels_per_image, small):
        lines.append(f"<image file={quoteattr(str(Path(record.path).resolve()))}>")
        for box, label, too_small in zip(record.boxes, labels, tiny):
            x1, y1, x2, y2 = (int(v) for v in box)
            ignore = " ignore='1'" if label != group or too_small else ""
            lines.append(f"  <box top='{y1}' left='{x1}' width='{x2 - x1 + 1}' height='{y2 - y1 + 1}'{ignore}/>")
        lines.append("</image>")
    lines.append("</images></dataset>")
    atomic.write_text(path, "\n".join(lines) + "\n")


# How often a group's training is retried without the images dlib names as holding boxes it
# cannot match with its window (it lists them in its error; the rest of the set trains).
REFUSAL_RETRIES = 10
STATE_FILE = "train_state.json"
REFUSAL_MARK = "The following images contain invalid boxes:"


def _train_group(dlib, options, data: Dataset, labels_per_image, small, group: int, xml: Path, svm: Path) -> list[str]:
    """Train aspect group ``group`` into ``svm``; the keys of images dlib refused (left out), if any."""
    by_path = {str(Path(r.path).resolve()): i for i, r in enumerate(data.images)}
    keep = np.ones(len(data.images), bool)
    for _attempt in range(REFUSAL_RETRIES + 1):
        subset = Dataset(data.name, [r for r, k in zip(data.images, keep) if k])
        _write_xml(xml, subset, [x for x, k in zip(labels_per_image, keep) if k], group, [x for x, k in zip(small, keep) if k])
        try:
            with atomic.atomic_path(svm) as tmp:
                dlib.train_simple_object_detector(str(xml), str(tmp), options)
        except RuntimeError as exc:
            message = " ".join(str(exc).split())
        else:
            xml.unlink()
            return [r.key for r, k in zip(data.images, keep) if not k]
        named = [by_path[t] for t in message.partition(REFUSAL_MARK)[2].split() if t in by_path]
        index = re.search(r"image index (\d+)", message)
        if index:  # indices past the subset are its left-right flipped copies
            named.append(int(np.flatnonzero(keep)[int(index.group(1)) % int(keep.sum())]))
        if not named:
            break
        keep[named] = False
    raise FacecmpError(f"dlib refused aspect group {group} of {xml} ({options.detection_window_size} px window): {message}")


@dataclass(frozen=True)
class DlibCheckpoint:
    path: Path
    meta: dict


def read_dlib_checkpoint(folder: str | Path) -> DlibCheckpoint:
    folder = Path(folder)
    return DlibCheckpoint(folder, json.loads((folder / META_FILE).read_text(encoding="utf-8")))


def subsample(dataset: Dataset, max_images: int | None, seed: int) -> Dataset:
    """At most ``max_images`` images of ``dataset``, drawn with ``seed`` (order kept)."""
    if max_images is None or len(dataset) <= max_images:
        return dataset
    keep = np.sort(np.random.default_rng(seed).choice(len(dataset), size=max_images, replace=False))
    return Dataset(dataset.name, [dataset.images[i] for i in keep], characters=dataset.characters)


def train_dlib_hog(
    train: Dataset, out: str | Path, *, dev: Dataset | None = None, settings: DlibTrainSettings = DlibTrainSettings(),
    progress: bool = True, resume: bool = False,
) -> Path:
    """Train one HOG detector per aspect group on ``train``, calibrate on ``dev``, write the folder ``out``.

    ``resume`` keeps the groups an interrupted run over the same data and settings finished."""
    from facecmp.training.calibrate import best_setting

    dlib = import_peer("dlib", "dlib-hog-trained")
    out = Path(out)
    data = subsample(train, settings.max_images, settings.seed)
    all_boxes = np.concatenate([r.boxes.reshape(-1, 4) for r in data.images]) if data.images else np.zeros((0, 4))
    edges, labels = aspect_groups(all_boxes, settings.aspect_groups)
    counts = np.cumsum([0] + [len(r.boxes) for r in data.images])
    labels_per_image = [labels[counts[i] : counts[i + 1]] for i in range(len(data.images))]
    groups: list[AspectGroup] = []
    files: list[str] = []
    # Each finished group is recorded in STATE_FILE, so that `resume` trains only the others.
    state = {"train_settings": asdict(settings), "data": data_fingerprint(data), "done": {}}
    state_path = out / STATE_FILE
    if resume and state_path.is_file():
        stored = json.loads(state_path.read_text(encoding="utf-8"))
        if {k: stored.get(k) for k in ("train_settings", "data")} == {k: state[k] for k in ("train_settings", "data")}:
            state["done"] = stored.get("done", {})
    for g in tqdm(range(len(edges) + 1), desc="training dlib HOG per aspect group", disable=not progress, unit="group"):
        members = all_boxes[labels == g]
        w, h = _sizes(members)
        aspect = float(np.median(w / h))
        window = _window(settings.window_area, aspect)
        small = [_unusable(r.boxes.reshape(-1, 4), window, aspect) for r in data.images]
        trained = int(sum(((lab == g) & ~s).sum() for lab, s in zip(labels_per_image, small)))
        groups.append(AspectGroup(aspect, window, trained, int(len(members) - trained)))
        if trained == 0:
            raise DataError(f"aspect group {g} (width/height ~{aspect:.2f}) has no box larger than its {window[0]}x{window[1]} window; lower window_area or aspect_groups")
        options = dlib.simple_object_detector_training_options()
        options.detection_window_size = settings.window_area
        options.C = settings.C
        options.epsilon = settings.epsilon
        options.add_left_right_image_flips = settings.flips
        options.num_threads = training_threads(settings.threads)
        options.upsample_limit = 0
        options.be_verbose = False
        name = f"group{g}.svm"
        files.append(name)
        if str(g) in state["done"] and (out / name).is_file():
            continue
        start, cpu_start = time.perf_counter(), time.process_time()
        refused = _train_group(dlib, options, data, labels_per_image, small, g, out / f"train_group{g}.xml", out / name)
        state["done"][str(g)] = {"refused_images": refused, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start}
        atomic.write_json(state_path, state)
    done = [state["done"][str(g)] for g in range(len(files))]

    meta = {
        "format": FORMAT, "kind": KIND, "detectors": files,
        "groups": [asdict(g) for g in groups], "aspect_edges": [float(math.exp(e)) for e in edges],
        "refused_images": {str(g): d["refused_images"] for g, d in enumerate(done) if d["refused_images"]},
        "train_settings": asdict(settings), "n_train_images": len(data), "data": data_fingerprint(data),
        "settings": asdict(DlibHogSettings(upsample=1)), "calibration": None,
        "timings": {"train": sum(d["seconds"] for d in done)},
        # CPU seconds of the training processes (every thread): comparable across busy and quiet machines.
        "cpu_seconds": {"train": sum(d["cpu_seconds"] for d in done)},
    }
    if dev is not None and dev.n_faces:
        start = time.perf_counter()
        (upsample, adjust), table = best_setting(
            calibration_detectors([out / f for f in files], name="dlib-hog-trained"),
            dev, CALIBRATION_GRID, progress=progress,
        )
        meta["settings"] = asdict(DlibHogSettings(int(upsample), float(adjust)))
        meta["calibration"] = table
        meta["timings"]["calibrate"] = time.perf_counter() - start
    atomic.write_json(out / META_FILE, meta)
    return out
