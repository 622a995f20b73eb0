"""Robustness, the study's third axis: every variant on clean and corrupted test frames.

The grid is (condition = clean or corruption x severity) x test image. Corrupted frames are
made on the fly in worker processes (the full grid as PNGs would be gigabytes): a worker reads
an image, applies the condition once and runs every variant still missing that cell on it.
Each finished (variant, condition) cell is written to the cache at once (atomically), keyed by
the variant's identity (name, detector settings, checkpoint bytes), the condition, the
corruption seed and the test data's fingerprint, so an interrupted run resumes where it
stopped and never mixes results of other checkpoints or data.

Metrics as "Benchmarking Robustness in Object Detection" (Michaelis et al. 2019) defines them:
P_clean (AP on clean frames), mPC (mean AP over the benchmark's 15 corruptions x severities
run), rPC = mPC / P_clean; with AP per corruption and severity, for ``ap_cava`` and ``ap_voc``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from facecmp.atomic import write_json, write_text
from facecmp.data.corruptions import (
    BENCHMARK_CORRUPTIONS,
    CLEAN,
    SEVERITIES,
    Condition,
    CorruptionError,
    apply_condition,
    valid_severities,
)
from facecmp.data.fingerprint import CODE_PACKAGES, code_fingerprint, library_versions
from facecmp.data.images import read_image
from facecmp.data.records import Dataset
from facecmp.errors import FacecmpError

# Bump when a change makes cached cells stale (the corruptions, the grid, the metrics).
ROBUSTNESS_VERSION = 1
METRICS = ("ap_cava", "ap_voc")
# The picture grid shows each corruption at this severity (or the nearest one run).
PICTURE_SEVERITY = 3


@dataclass(frozen=True)
class RobustnessSettings:
    corruptions: tuple[str, ...] = BENCHMARK_CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    seed: int = 0  # the corruptions' random draws (with the image and the condition)
    workers: int = 0  # processes that corrupt and detect; 0 = this process

    def conditions(self) -> list[Condition]:
        """Clean first, then every corruption at every severity it has among ``severities``."""
        cells = [CLEAN]
        for name in self.corruptions:
            cells += [Condition(name, s) for s in self.severities if s in valid_severities(name)]
        return cells


@dataclass(frozen=True)
class Cell:
    """One variant's result on one condition over the whole test set."""

    ap_cava: float
    ap_voc: float
    n_detections: int
    n_true_positives: int
    n_ground_truth: int


@dataclass
class GridVariant:
    """A variant ready for the grid: its detector and what identifies its results."""

    name: str
    detector: object
    identity: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return _digest(self.identity)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def variant_identity(name: str, detector, settings: Mapping) -> dict:
    """What a variant's results depend on: name, detector settings and class, checkpoint content."""
    identity = {"name": name, "class": type(detector).__name__, "thresholds": settings.get("thresholds")}
    detector_settings = getattr(detector, "settings", None)
    if detector_settings is not None:
        identity["detector"] = asdict(detector_settings)
        identity["detector"].pop("device", None)
    if settings.get("checkpoint"):
        from facecmp.detection.checkpoint import checkpoint_digest  # torch: only once a variant is ready

        identity["checkpoint"] = checkpoint_digest(settings["checkpoint"])
    return identity


# Beyond the core libraries, what a cell's pixels and detections depend on: the corruptions'
# libraries and the peers' packages (BlazeFace runs in its own environment, not covered here).
CELL_LIBRARIES = ("imagecorruptions", "scikit-image", "scipy", "opencv-python-headless", "dlib-bin")


def cell_environment() -> dict:
    """The code (the cascade, data and corruptions, evaluation, this grid), library versions and
    pretrained weights every cell depends on, whichever variant made it."""
    from facecmp.detection.models import pretrained_weights_digest  # torch: only once cells are cached

    return {
        "code": code_fingerprint((*CODE_PACKAGES, "study/robustness.py")),
        "libraries": library_versions(*CELL_LIBRARIES),
        "pretrained_weights": pretrained_weights_digest(),
    }


# -- the cache ------------------------------------------------------------------------------
class CellCache:
    """One JSON file per (variant, condition, data): written atomically, read only when every key matches."""

    def __init__(self, folder: Path, data_fingerprint: str, seed: int, environment: dict | None = None):
        self.folder = Path(folder)
        self.data = data_fingerprint
        self.seed = seed
        self.environment = cell_environment() if environment is None else environment

    def _keys(self, variant: GridVariant, condition: Condition) -> dict:
        return {
            "version": ROBUSTNESS_VERSION, "variant": variant.identity, "condition": condition.label,
            "seed": self.seed, "data": self.data, "environment": self.environment,
        }

    def path(self, variant: GridVariant, condition: Condition) -> Path:
        where = _digest([self.data, self.seed, self.environment])
        return self.folder / f"{variant.name}-{variant.key}" / f"{condition.label}-{where}.json"

    def get(self, variant: GridVariant, condition: Condition) -> Cell | None:
        path = self.path(variant, condition)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if stored.get("keys") != json.loads(json.dumps(self._keys(variant, condition), default=str)):
            return None
        return Cell(**stored["cell"])

    def put(self, variant: GridVariant, condition: Condition, cell: Cell) -> None:
        write_json(self.path(variant, condition), {"keys": self._keys(variant, condition), "cell": asdict(cell)})


# -- running the grid -----------------------------------------------------------------------
class _GridItems:
    """Items ``(condition, image)``: the corrupted frame, its ground truth and each pending variant's detections.

    A torch Dataset in spirit (``__len__``/``__getitem__``), so a DataLoader can spread it over
    worker processes. Errors travel back as values, so the main process raises one clean line.
    """

    def __init__(self, dataset: Dataset, work: list[tuple[Condition, list[GridVariant]]], seed: int):
        self.records = dataset.images
        self.work = work
        self.seed = seed

    def __len__(self) -> int:
        return len(self.work) * len(self.records)

    def __getitem__(self, index: int):
        condition, variants = self.work[index // len(self.records)]
        record = self.records[index % len(self.records)]
        try:
            image = read_image(record.path)
        except FacecmpError as exc:
            return exc
        try:
            image, truth = apply_condition(image, record.boxes, condition, self.seed)
        except Exception as exc:  # noqa: BLE001 - any failure stops the run, named
            return CorruptionError(
                f"corruption {condition.name} at severity {condition.severity} failed on {record.path}: "
                f"{type(exc).__name__}: {exc}"
            )
        return index, record.key, truth, {v.name: v.detector.detect_batch([image])[0] for v in variants}


def _worker_init(worker_id: int) -> None:
    from facecmp.detection.inference import _single_threaded

    _single_threaded(worker_id)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def _grid_items(items: _GridItems, workers: int):
    if workers <= 0 or len(items) == 0:  # nothing to spread: no worker processes to start
        yield from (items[i] for i in range(len(items)))
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(items, batch_size=None, num_workers=workers, worker_init_fn=_worker_init)
    yield from loader


def _cell(predictions, truth: dict[str, np.ndarray]) -> Cell:
    from facecmp.evaluation.evaluator import evaluate

    ev = evaluate(predictions, truth)
    return Cell(float(ev.ap_cava), float(ev.ap_voc), int(ev.n_detections), int(ev.n_true_positives), int(ev.n_ground_truth))


def run_grid(
    variants: Sequence[GridVariant],
    test: Dataset,
    settings: RobustnessSettings,
    cache: CellCache,
    *,
    conditions: Sequence[Condition] | None = None,
    progress: bool = True,
) -> dict[str, dict[Condition, Cell]]:
    """Every variant on ``conditions`` (default: all of ``settings``), cached cells reused: name -> condition -> Cell."""
    from tqdm import tqdm

    from facecmp.detection.inference import detections_to_predictions

    if len(test) == 0:
        raise FacecmpError("the test set has no images; nothing to measure robustness on")
    results: dict[str, dict[Condition, Cell]] = {v.name: {} for v in variants}
    work = []
    for condition in settings.conditions() if conditions is None else conditions:
        pending = []
        for variant in variants:
            cell = cache.get(variant, condition)
            if cell is None:
                pending.append(variant)
            else:
                results[variant.name][condition] = cell
        if pending:
            work.append((condition, pending))
    items = _GridItems(test, work, settings.seed)
    n = len(test)
    done_cells = sum(len(r) for r in results.values())
    with tqdm(total=len(items), desc="robustness", unit="frame", disable=not progress or not items) as bar:
        if done_cells:
            bar.write(f"robustness: {done_cells} cached cells reused")
        frames: dict[str, dict] = {}
        truth: dict[str, np.ndarray] = {}
        for item in _grid_items(items, settings.workers):
            if isinstance(item, FacecmpError):
                raise item
            index, key, boxes, detections = item
            condition, pending = work[index // n]
            truth[key] = boxes
            for name, d in detections.items():
                frames.setdefault(name, {})[key] = d
            bar.update(1)
            bar.set_postfix_str(condition.label, refresh=False)
            if index % n == n - 1:  # the condition's last image: its cells are complete
                ordered = {r.key: truth[r.key] for r in test.images}
                for variant in pending:
                    per_image = {r.key: frames[variant.name][r.key] for r in test.images}
                    cell = _cell(detections_to_predictions(per_image), ordered)
                    cache.put(variant, condition, cell)
                    results[variant.name][condition] = cell
                frames, truth = {}, {}
    return results


# -- metrics --------------------------------------------------------------------------------
def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize(cells: Mapping[Condition, Cell], metric: str = "ap_cava") -> dict:
    """P_clean, mPC (benchmark corruptions only), rPC, and AP per corruption / severity."""
    clean = getattr(cells[CLEAN], metric) if CLEAN in cells else None
    per_corruption: dict[str, dict[str, float]] = {}
    for condition, cell in cells.items():
        if condition != CLEAN:
            per_corruption.setdefault(condition.name, {})[str(condition.severity)] = getattr(cell, metric)
    benchmark = [getattr(c, metric) for cond, c in cells.items() if cond.name in BENCHMARK_CORRUPTIONS]
    severities = sorted({cond.severity for cond in cells if cond.name in BENCHMARK_CORRUPTIONS})
    per_severity = {
        str(s): _mean([getattr(c, metric) for cond, c in cells.items() if cond.name in BENCHMARK_CORRUPTIONS and cond.severity == s])
        for s in severities
    }
    mpc = _mean(benchmark)
    return {
        "clean_ap": clean,
        "mpc": mpc,
        "rpc": mpc / clean if mpc is not None and clean else None,
        "per_corruption": {name: dict(sorted(v.items())) for name, v in per_corruption.items()},
        "per_severity": per_severity,
        "mpc_corruptions": [n for n in BENCHMARK_CORRUPTIONS if n in per_corruption],
        "mpc_severities": severities,
    }


def variant_summary(name: str, cells: Mapping[Condition, Cell], settings: Mapping | None = None) -> dict:
    """The ``robustness.json`` entry of one variant: course AP at the top level, VOC AP beside it."""
    course = summarize(cells, "ap_cava")
    return {"name": name, **course, "ap_voc": summarize(cells, "ap_voc"), "settings": dict(settings or {})}


# -- outputs --------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def summary_table(summaries: Sequence[dict]) -> str:
    from tabulate import tabulate

    rows = [
        [s["name"], _fmt(s["clean_ap"]), _fmt(s["mpc"]), _fmt(s["rpc"]),
         _fmt(s["ap_voc"]["clean_ap"]), _fmt(s["ap_voc"]["mpc"]), _fmt(s["ap_voc"]["rpc"])]
        for s in summaries
    ]
    headers = ["variant", "P_clean", "mPC", "rPC", "P_clean (VOC)", "mPC (VOC)", "rPC (VOC)"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def corruption_table(summaries: Sequence[dict]) -> str:
    """Rows = corruptions, columns = variants: AP per severity ``s1 / s2 / ...`` and their mean."""
    from tabulate import tabulate

    names = list(dict.fromkeys(n for s in summaries for n in s["per_corruption"]))
    rows = []
    for corruption in names:
        row = [corruption]
        for s in summaries:
            aps = s["per_corruption"].get(corruption, {})
            row.append(f"{_fmt(_mean(list(aps.values())))} ({' / '.join(_fmt(v) for v in aps.values())})")
        rows.append(row)
    return tabulate(rows, headers=["corruption", *(f"{s['name']}: mean (per severity)" for s in summaries)], tablefmt="github", disable_numparse=True)


def _worst(summary: dict) -> tuple[str, float] | None:
    """The lowest benchmark cell: ``(corruption s<severity>, AP)``."""
    cells = [(f"{name} s{sev}", ap) for name in summary.get("mpc_corruptions", [])
             for sev, ap in summary["per_corruption"][name].items() if ap is not None]
    return min(cells, key=lambda c: c[1]) if cells else None


def augmentation_notes(summaries: Sequence[dict], suffix: str = "-augmented") -> list[str]:
    """What augmentation costs on clean frames and buys under corruption, for every variant run
    beside its ``<name>-augmented`` twin (e.g. finetuned-cascade and finetuned-cascade-augmented)."""
    by_name = {s["name"]: s for s in summaries}
    notes = []
    for name, augmented in by_name.items():
        plain = by_name.get(name[: -len(suffix)]) if name.endswith(suffix) else None
        if plain is None or None in (plain["clean_ap"], augmented["clean_ap"], plain["mpc"], augmented["mpc"]):
            continue
        worst = [_worst(s) for s in (plain, augmented)]
        notes.append(
            f"Augmentation ({name} vs {plain['name']}): clean AP {augmented['clean_ap'] - plain['clean_ap']:+.3f} "
            f"({_fmt(plain['clean_ap'])} -> {_fmt(augmented['clean_ap'])}), mPC {augmented['mpc'] - plain['mpc']:+.3f} "
            f"({_fmt(plain['mpc'])} -> {_fmt(augmented['mpc'])}), rPC {_fmt(plain['rpc'])} -> {_fmt(augmented['rpc'])}"
            + (f"; worst cell {worst[0][0]} {worst[0][1]:.3f} -> {worst[1][0]} {worst[1][1]:.3f}" if all(worst) else "")
        )
    return notes


def plot_heatmap(summaries: Sequence[dict], path: Path) -> Path:
    """Variant x corruption, colour = AP (course) averaged over the severities run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from facecmp.atomic import atomic_path

    names = list(dict.fromkeys(n for s in summaries for n in s["per_corruption"]))
    columns = ["clean", *names]
    def value(s: dict, column: str) -> float:
        ap = s["clean_ap"] if column == "clean" else _mean(list(s["per_corruption"].get(column, {}).values()))
        return np.nan if ap is None else ap  # an AP of 0.0 is a value, drawn like any other

    grid = np.array([[value(s, c) for c in columns] for s in summaries], dtype=float)
    fig = Figure(figsize=(1.0 + 0.62 * len(columns), 1.4 + 0.55 * len(summaries)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(summaries)), [s["name"] for s in summaries], fontsize=8)
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="AP (course)")
    ax.set_title("AP per corruption (mean over severities)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_severity_curves(summaries: Sequence[dict], path: Path) -> Path:
    """One panel per variant: AP vs severity, a line per corruption, the benchmark mean in bold."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from facecmp.atomic import atomic_path

    fig = Figure(figsize=(4.6 * max(len(summaries), 1), 4.2), dpi=100)
    FigureCanvasAgg(fig)
    for k, s in enumerate(summaries):
        ax = fig.add_subplot(1, max(len(summaries), 1), k + 1)
        for name, aps in s["per_corruption"].items():
            xs = [0, *(int(v) for v in aps)]
            ax.plot(xs, [s["clean_ap"], *aps.values()], linewidth=0.9, marker=".", label=name)
        if s["per_severity"]:
            xs = [0, *(int(v) for v in s["per_severity"])]
            ax.plot(xs, [s["clean_ap"], *s["per_severity"].values()], color="black", linewidth=2.5, label="mean (mPC)")
        ax.set_ylim(0, 1.02)
        ax.set_xticks(range(0, 6))
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel("AP (course)")
        ax.set_title(s["name"], fontsize=9)
        ax.grid(True, alpha=0.3)
    if summaries:
        ax.legend(fontsize=6, loc="lower left", ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_corruption_pictures(
    variants: Sequence[GridVariant], test: Dataset, settings: RobustnessSettings, path: Path, severity: int = PICTURE_SEVERITY
) -> Path:
    """One test frame (with faces) under each corruption at ``severity``: each variant's hits, false alarms, misses."""
    from facecmp.detection.inference import detections_to_predictions
    from facecmp.evaluation.evaluator import evaluate
    from facecmp.study.gallery import Panel, pick_sample_images, plot_panel_grid

    keys = pick_sample_images(test, 1, seed=settings.seed)
    record = next(r for r in test.images if r.key == keys[0]) if keys else test.images[0]
    original = read_image(record.path)
    rows = []
    for condition in [CLEAN, *dict.fromkeys(_nearest(c, severity, settings) for c in settings.conditions()[1:])]:
        image, truth = apply_condition(original, record.boxes, condition, settings.seed)
        panels = {}
        for variant in variants:
            detections = variant.detector.detect_batch([image])[0]
            predictions = detections_to_predictions({record.key: detections})
            ev = evaluate(predictions, {record.key: truth})
            found = ev.gt_matched.get(record.key, np.zeros(len(truth), bool))
            panels[variant.name] = Panel(image, truth, found, predictions.boxes, ev.is_true_positive)
        rows.append((condition.label, panels))
    return plot_panel_grid(rows, path)


def _nearest(condition: Condition, severity: int, settings: RobustnessSettings) -> Condition:
    available = [s for s in settings.severities if s in valid_severities(condition.name)]
    return Condition(condition.name, min(available, key=lambda s: (abs(s - severity), s)))


def write_robustness_report(
    out: Path,
    summaries: Sequence[dict],
    *,
    test: Dataset,
    settings: RobustnessSettings,
    variants: Sequence[GridVariant] = (),
    notes: Sequence[str] = (),
) -> Path:
    """robustness.md, robustness.json, heatmap.png, severity_curves.png and corruptions.png in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "robustness.json",
        {"dataset": test.name, "n_images": len(test), "n_faces": test.n_faces,
         "corruptions": list(settings.corruptions), "severities": list(settings.severities), "seed": settings.seed,
         "variants": list(summaries)},
    )
    plot_heatmap(summaries, out / "heatmap.png")
    plot_severity_curves(summaries, out / "severity_curves.png")
    if variants:
        plot_corruption_pictures(variants, test, settings, out / "corruptions.png")
    mpc_over = summaries[0]["mpc_corruptions"] if summaries else []
    lines = [
        "# facecmp: robustness to common corruptions",
        "",
        f"Test images: {len(test)} ({test.n_faces} faces) from `{test.name}`; severities "
        f"{', '.join(map(str, settings.severities))}; corruption seed {settings.seed}. "
        "A detection is a true positive at IoU >= 0.3 (course convention).",
        "",
        summary_table(summaries),
        "",
        f"P_clean: AP on clean frames. mPC: mean AP over {len(mpc_over)} of the benchmark's 15 corruptions "
        f"x the severities run{'' if len(mpc_over) == 15 else ' (' + ', '.join(mpc_over) + ')'}. rPC = mPC / P_clean. "
        "Corruptions: the reference imagecorruptions 1.1.2 (Hendrycks & Dietterich 2019; Michaelis et al. 2019).",
        "",
        "## AP (course) per corruption",
        "",
        corruption_table(summaries),
        "",
        *[f"- {n}" for n in [*augmentation_notes(summaries), *notes]],
        "",
        "![heatmap](heatmap.png)",
        "",
        "![AP vs severity](severity_curves.png)",
        "",
        *(["![one frame under each corruption](corruptions.png)", ""] if variants else []),
    ]
    write_text(out / "robustness.md", "\n".join(lines))
    return out


# -- the whole study's robustness axis ------------------------------------------------------
DEFAULT_VARIANTS = ("pretrained-calibrated", "finetuned-cascade")


def prepare_grid_variants(names: Sequence[str], ctx) -> list[GridVariant]:
    """Variants from the registry, ready (trained or loaded) on ``ctx``, with their identities."""
    from facecmp.study.variants import get_variants

    ready = []
    for variant in get_variants(names):
        prepared = variant.prepare(ctx)
        ready.append(GridVariant(variant.name, prepared.detector, variant_identity(variant.name, prepared.detector, prepared.settings)))
    return ready


def run_robustness(
    root: str | Path,
    out: str | Path,
    *,
    test: str | None = None,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    checkpoints: Mapping[str, Path] | None = None,
    settings: RobustnessSettings = RobustnessSettings(),
    epochs: int | None = None,
    device: str = "cpu",
    cache_dir: Path | None = None,
    allow_missing: bool = False,
    dev_per_folder: int = 25,
    progress: bool = True,
    fmt: str | None = None,
) -> list[dict]:
    """``facecmp robustness``: choose the test set as ``compare`` does, run the grid, write the report."""
    from facecmp.study.splits import choose_splits
    from facecmp.study.variants import VariantContext
    from facecmp.data.fingerprint import data_fingerprint

    out = Path(out)
    splits = choose_splits(root, test, seed=settings.seed, dev_per_folder=dev_per_folder, allow_missing=allow_missing, fmt=fmt)
    cache_root = Path(cache_dir) if cache_dir else out / "cache"
    ctx = VariantContext(
        train=splits.train, dev=splits.dev, cache_dir=cache_root, device=device, seed=settings.seed,
        epochs=epochs, progress=progress, checkpoints=dict(checkpoints or {}),
    )
    ready = prepare_grid_variants(variants, ctx)
    cache = CellCache(cache_root / "robustness", data_fingerprint(splits.test), settings.seed)
    cells = run_grid(ready, splits.test, settings, cache, progress=progress)
    summaries = [variant_summary(v.name, cells[v.name], {"identity": v.identity}) for v in ready]
    notes = [
        f"training images: {len(splits.train) if splits.train else 0}, dev (threshold calibration): "
        f"{len(splits.dev) if splits.dev else 0}, test: {len(splits.test)}.",
        *(f"{v.name}: thresholds {v.identity.get('thresholds')}" for v in ready),
    ]
    write_robustness_report(out, summaries, test=splits.test, settings=settings, variants=ready, notes=notes)
    return summaries
