"""``facecmp curve``: the label budget. How much AP do N labelled frames buy?

One fine-tune per point, on nested seeded subsets of the training frames (every subset holds
the smaller ones), each calibrated on the same dev split and scored on the same test set; the
pretrained cascade, as it is and calibrated on that dev split, are the horizontal lines the
points must beat. Writes into ``out``::

    curve.json           {"points": [{"frames", "faces", "ap_cava", "ap_voc", "recall", "train_s",
                          "checkpoint", "stages", "seed", "resumed"}, ...], "baselines": ..., "spec": ...}
    learning_curve.png   AP against labelled frames (log axis), training seconds on a second axis
    curve.md             the points as a table, and where they reach 90 % / 95 % of the largest one
    points/<stages>/seed<S>/frames<N>/   each point's checkpoint (``facecmp detect --model`` reads it)

``curve.json`` is rewritten (atomically) after every point, so an interrupted curve resumes
(``resume=True``) with the points it has; the point that was interrupted resumes its own
training (``finetune(resume=True)``). A curve folder holds one spec (data, splits, epochs):
points of other stages (``dlib-hog``) or seeds are added to the same curve and drawn on the same axes.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from facecmp.atomic import atomic_path, write_json, write_text
from facecmp.data.records import Dataset
from facecmp.errors import DataError
from facecmp.study.compare import evaluate_prepared
from facecmp.study.finetune import recipe_training
from facecmp.study.splits import Splits, choose_splits
from facecmp.study.report import data_note
from facecmp.study.variants import Prepared, VariantContext, get_variants

CURVE_FILE = "curve.json"
PLOT_FILE = "learning_curve.png"
REPORT_FILE = "curve.md"
POINTS_DIR = "points"
CURVE_FORMAT = 1
# `--frames` when not given: these sizes below the training set's frame count, then all of it.
DEFAULT_FRAMES = (25, 50, 100, 200, 400, 800)
DEFAULT_STAGES = ("pnet", "rnet", "onet")
BASELINES = ("pretrained", "pretrained-calibrated")
# Shares of the largest point's AP that curve.md says the curve reaches, and at how many frames.
REACH = (0.90, 0.95)


@dataclass(frozen=True)
class CurveSettings:
    """What a curve measures. ``frames`` None: :data:`DEFAULT_FRAMES` that fit, plus all frames."""

    frames: str | None = None
    stages: tuple[str, ...] = DEFAULT_STAGES
    seed: int = 0
    repeats: int = 1
    epochs: int | None = None
    dev_per_folder: int | None = None  # None: study.splits.default_dev_per_folder
    recipe: str | None = None  # the stages' training recipe by name (training.finetune.RECIPES); None: the default


# --- the points ------------------------------------------------------------------------------


def frame_sizes(text: str | None, available: int) -> list[int]:
    """The subset sizes of ``--frames`` (comma-separated positive integers and ``all``), ascending.

    Raises one DataError line naming what is available for a size of 0, above ``available``,
    listed twice, or not a number."""
    if text is None:
        return [n for n in DEFAULT_FRAMES if n < available] + [available]
    have = f"the training set has {available} frames: use sizes 1..{available} or 'all' (e.g. --frames 25,50,all)"
    sizes: list[int] = []
    for token in (t.strip() for t in text.split(",")):
        if token == "all":
            size = available
        else:
            try:
                size = int(token)
            except ValueError:
                raise DataError(f"--frames {text!r}: {token!r} is not a number of frames; {have}") from None
            if size < 1:
                raise DataError(f"--frames {text!r}: a point needs at least 1 labelled frame, not {size}; {have}")
            if size > available:
                raise DataError(f"--frames {text!r}: {size} frames asked for, but {have}")
        if size in sizes:
            raise DataError(f"--frames {text!r}: {size} frames listed twice ('all' is {available}); {have}")
        sizes.append(size)
    return sorted(sizes)


def nested_order(train: Dataset, seed: int) -> list[str]:
    """The training frames' keys in the order the subsets take them: the first ``n`` are the
    ``n``-frame subset, so every subset contains the smaller ones. Each folder is shuffled
    (seeded) and the folders take turns, so a small subset draws on every folder."""
    rng = np.random.default_rng([seed, 3])
    by_folder: dict[str, list[str]] = {}
    for record in train.images:
        by_folder.setdefault(record.folder, []).append(record.key)
    queues = [[keys[i] for i in rng.permutation(len(keys))] for keys in (sorted(by_folder[f]) for f in sorted(by_folder))]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def nested_subset(train: Dataset, order: Sequence[str], frames: int) -> Dataset:
    return train.subset(order[:frames], name=f"{train.name}[{frames} frames]")


def _file_hash(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def require_disjoint(test: Dataset, *training: Dataset | None) -> None:
    """Refuse a test set holding a frame the training sets (train, dev) hold, by file content
    (a copy, a link or the same file): one DataError naming one shared frame."""
    by_hash = {_file_hash(r.path): r for r in test.images}
    for ds in training:
        for record in ds.images if ds is not None else ():
            hit = by_hash.get(_file_hash(record.path))
            if hit is not None:
                raise DataError(
                    f"{hit.path}: test image {hit.key} is training frame {record.key} ({record.path}); a curve scored "
                    "on frames it was trained on measures memory, not learning. Use a test set of other frames, or --test split:N"
                )


def _fingerprint(ds: Dataset | None) -> str | None:
    from facecmp.data.fingerprint import data_fingerprint

    return None if ds is None else data_fingerprint(ds)[:20]


def curve_spec(splits: Splits, settings: CurveSettings) -> dict:
    """What every point of a curve folder shares: the data, the splits, the recipe and its epochs."""
    from facecmp.training.finetune import DEFAULT_RECIPE

    return {
        "format": CURVE_FORMAT, "train": _fingerprint(splits.train), "dev": _fingerprint(splits.dev),
        "test": _fingerprint(splits.test), "epochs": settings.epochs, "split_seed": settings.seed,
        "recipe": settings.recipe or DEFAULT_RECIPE,
    }


def point_folder(out: Path, stages: Sequence[str], seed: int, frames: int) -> Path:
    return out / POINTS_DIR / "-".join(stages) / f"seed{seed}" / f"frames{frames}"


def train_point(subset: Dataset, folder: Path, *, stages: tuple[str, ...], dev: Dataset | None, seed: int,
                epochs: int | None, cache_dir: Path, device: str, resume: bool, progress: bool, training=None) -> Prepared:
    """Fine-tune (or train dlib's HOG detector) on one subset; the ready detector and its seconds
    (mining + training + calibration, as the checkpoint records them). ``training``: the stages'
    ``FinetuneSettings.training`` (None: the default recipe)."""
    if stages == ("dlib-hog",):
        from facecmp.detection.peers.dlib_hog import load_dlib_checkpoint
        from facecmp.training.dlib_train import DlibTrainSettings, train_dlib_hog

        train_dlib_hog(subset, folder, dev=dev, settings=DlibTrainSettings(seed=seed), progress=progress, resume=resume)
        detector = load_dlib_checkpoint(folder)
        meta = json.loads((folder / "facecmp.json").read_text(encoding="utf-8"))
    else:
        from facecmp.detection.detector import Detector
        from facecmp.training.finetune import FinetuneSettings, finetune

        settings = FinetuneSettings(stages=stages, epochs=epochs, seed=seed, training=training)
        meta = finetune(subset, folder, settings, dev=dev, device=device,
                        resume=resume, cache_dir=cache_dir, progress=progress).meta
        detector = Detector.from_checkpoint(folder, device=device)
    return Prepared(detector, float(sum((meta.get("timings") or {}).values())), {"checkpoint": str(folder)})


def _scores(result) -> dict:
    s = result.evaluation.summary()
    return {"ap_cava": s["ap_cava"], "ap_voc": s["ap_voc"], "recall": s["recall"]}


# --- the run ---------------------------------------------------------------------------------


def _read_curve(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable curve file ({exc}); delete it to start the curve over") from None


def _start(out: Path, spec: dict, resume: bool) -> dict:
    path = out / CURVE_FILE
    if not resume:
        if path.exists() or (out / POINTS_DIR).exists():
            raise DataError(f"{out}: holds a curve already; pass --resume to continue or extend it, or choose another --out")
        return {"spec": spec, "baselines": {}, "points": []}
    if not path.is_file():
        return {"spec": spec, "baselines": {}, "points": []}
    curve = _read_curve(path)
    if curve.get("spec") != spec:
        raise DataError(f"{path}: made with other data, splits, recipe or epochs ({curve.get('spec')}); "
                        "drop --resume and choose another --out to start a new curve")
    return curve


def run_curve(root: str | Path, out: str | Path, settings: CurveSettings = CurveSettings(), *, test: str | None = None,
              resume: bool = False, device: str = "cpu", fmt: str | None = None, progress: bool = True,
              cache_dir: Path | None = None) -> dict:
    """Measure the curve (see the module docstring); returns what ``curve.json`` holds.

    ``cache_dir`` (default ``out/cache``): mined samples and the baselines' calibration, shared
    with ``facecmp compare`` / the benchmarks when they use the same folder."""
    from facecmp.training.finetune import ordered_stages

    stages = ("dlib-hog",) if tuple(settings.stages) == ("dlib-hog",) else ordered_stages(settings.stages)
    if "dlib-hog" in settings.stages and stages != ("dlib-hog",):
        raise DataError(f"--stages {','.join(settings.stages)}: dlib-hog trains a detector of its own; pass --stages dlib-hog alone")
    training = recipe_training(settings.recipe, stages)
    out = Path(out)
    splits = choose_splits(root, test, seed=settings.seed, dev_per_folder=settings.dev_per_folder, fmt=fmt)
    if splits.train is None or len(splits.train) == 0:
        raise DataError(f"{root}: no training frames left to draw subsets from (antrenare/ with <character>_annotations.txt)")
    sizes = frame_sizes(settings.frames, len(splits.train))
    require_disjoint(splits.test, splits.train, splits.dev)
    curve = _start(out, curve_spec(splits, settings), resume)
    curve.update(train_frames=len(splits.train), note=data_note(splits, seed=settings.seed),
                 test={"name": splits.test.name, "images": len(splits.test), "faces": splits.test.n_faces})
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"

    ctx = VariantContext(train=splits.train, dev=splits.dev, cache_dir=cache, device=device, seed=settings.seed, progress=progress)
    for variant in get_variants([b for b in BASELINES if b not in curve["baselines"] and (splits.dev or b == "pretrained")]):
        curve["baselines"][variant.name] = _scores(evaluate_prepared(variant.name, variant.prepare(ctx), splits.test, progress=progress))
    save_curve(out, curve)

    done = {(p["stages"], p["seed"], p["frames"]) for p in curve["points"]}
    label = ",".join(stages)
    todo = [(seed, n) for seed in range(settings.seed, settings.seed + settings.repeats) for n in sizes if (label, seed, n) not in done]
    for seed, n in tqdm(todo, desc=f"curve {label}", unit="point", disable=not progress):
        subset = nested_subset(splits.train, nested_order(splits.train, seed), n)
        folder = point_folder(out, stages, seed, n)
        resumed = folder.is_dir() and any(folder.iterdir())
        prepared = train_point(subset, folder, stages=stages, dev=splits.dev, seed=seed, epochs=settings.epochs,
                               cache_dir=cache, device=device, resume=resumed, progress=progress, training=training)
        result = evaluate_prepared(f"{n} frames", prepared, splits.test, progress=progress)
        point = {"frames": n, "faces": subset.n_faces, **_scores(result), "train_s": prepared.training_seconds,
                 "checkpoint": str(folder), "stages": label, "seed": seed, "resumed": resumed}
        curve["points"].append(point)
        curve["points"].sort(key=lambda p: (p["stages"], p["seed"], p["frames"]))
        save_curve(out, curve)
        tqdm.write(f"{label} seed {seed}: {n} frames ({subset.n_faces} faces): AP {point['ap_cava']:.3f} course, "
                   f"{point['ap_voc']:.3f} VOC, recall {point['recall']:.3f}, {point['train_s']:.0f} s")
    return curve


def save_curve(out: Path, curve: dict) -> None:
    """curve.json, learning_curve.png and curve.md from what the curve holds so far."""
    write_json(out / CURVE_FILE, curve)
    if curve["points"]:
        plot_curve(curve, out / PLOT_FILE)
    write_text(out / REPORT_FILE, curve_markdown(curve))


# --- summaries -------------------------------------------------------------------------------


def series(curve: dict) -> dict[str, dict[int, list[dict]]]:
    """``stages -> frames -> [point per seed]``, frames ascending."""
    out: dict[str, dict[int, list[dict]]] = {}
    for p in sorted(curve["points"], key=lambda p: p["frames"]):
        out.setdefault(p["stages"], {}).setdefault(p["frames"], []).append(p)
    return out


def reached(by_frames: dict[int, list[dict]], share: float, key: str = "ap_cava") -> int | None:
    """The fewest frames whose mean AP is at least ``share`` of the largest point's mean AP."""
    means = {n: statistics.fmean(p[key] for p in ps) for n, ps in by_frames.items()}
    target = share * means[max(means)]
    return next((n for n in sorted(means) if means[n] >= target), None)


def curve_markdown(curve: dict) -> str:
    lines = ["# Label budget: AP against labelled frames", "", curve.get("note", ""), ""]
    test = curve.get("test") or {}
    lines += [f"Every point is scored on the same {test.get('images')} test images ({test.get('faces')} faces) of "
              f"`{test.get('name')}` and calibrated on the same dev split. AP (course) is the course evaluator's.", ""]
    for name, s in curve["baselines"].items():
        lines.append(f"- {name}: AP {s['ap_cava']:.3f} (course), {s['ap_voc']:.3f} (VOC), recall {s['recall']:.3f}")
    for label, by_frames in series(curve).items():
        lines += ["", f"## {label}", "", "| frames | faces | seeds | AP (course) | AP (VOC) | recall | training s |",
                  "|---:|---:|---:|---|---|---|---:|"]
        for n, ps in by_frames.items():
            def cell(key, digits=3):
                values = [p[key] for p in ps]
                mean = f"{statistics.fmean(values):.{digits}f}"
                return mean if len(values) == 1 else f"{mean} ({min(values):.{digits}f}–{max(values):.{digits}f})"
            faces = "/".join(sorted({str(p["faces"]) for p in ps}))
            lines.append(f"| {n} | {faces} | {len(ps)} | {cell('ap_cava')} | {cell('ap_voc')} | {cell('recall')} | {cell('train_s', 0)} |")
        reach = [f"{share:.0%} of the largest point's AP at {reached(by_frames, share)} frames" for share in REACH]
        lines += ["", f"Reaches {' and '.join(reach)} (mean over seeds; several seeds: mean (min–max))."]
    lines += ["", f"![learning curve]({PLOT_FILE})", ""]
    return "\n".join(lines)


def plot_curve(curve: dict, path: Path) -> Path:
    """AP against labelled frames (log axis) per series, the spread over seeds as a band, the
    baselines as horizontal lines, training seconds (dashed) on a second axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig = Figure(figsize=(7.2, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    seconds = ax.twinx()
    colors = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")
    ticks: set[int] = set()
    for i, (label, by_frames) in enumerate(series(curve).items()):
        color = colors[i % len(colors)]
        frames = list(by_frames)
        ticks.update(frames)
        ap = [[p["ap_cava"] for p in by_frames[n]] for n in frames]
        ax.plot(frames, [statistics.fmean(v) for v in ap], "o-", color=color, label=f"{label}: AP (course)")
        if any(len(v) > 1 for v in ap):
            ax.fill_between(frames, [min(v) for v in ap], [max(v) for v in ap], color=color, alpha=0.2,
                            label=f"{label}: spread over {max(map(len, ap))} seeds")
        secs = [statistics.fmean(p["train_s"] for p in by_frames[n]) for n in frames]
        seconds.plot(frames, secs, "s--", color=color, alpha=0.6, markersize=4, label=f"{label}: training s")
    for (name, s), style in zip(curve["baselines"].items(), (":", "-.")):
        ax.axhline(s["ap_cava"], color="0.35", linestyle=style, label=f"{name}: {s['ap_cava']:.3f}")
    ax.set_xscale("log")
    ax.set_xticks(sorted(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("labelled training frames (log scale)")
    ax.set_ylabel("AP (course) on the test set")
    seconds.set_ylabel("training seconds (mining + training + calibration)")
    seconds.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    handles = ax.get_legend_handles_labels()
    more = seconds.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], loc="lower right", fontsize="x-small")
    ax.set_title("Label budget: AP against labelled frames")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
