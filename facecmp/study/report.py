"""The comparison report: one table, ``results.json``, PR curves, a speed chart and a picture grid.

Used by ``facecmp compare`` / ``facecmp demo`` and by the pytest plugin at the end of a
benchmark session, so both produce the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tabulate import tabulate

from facecmp.atomic import atomic_path, write_json, write_text
from facecmp.data.records import Dataset
from facecmp.evaluation.evaluator import Evaluation
from facecmp.evaluation.plots import plot_pr_curves
from facecmp.data.predictions import Predictions

COLUMNS = ("variant", "AP (course)", "AP (VOC)", "recall", "precision", "ms/image", "training s")


@dataclass
class VariantResult:
    """What one model variant achieved on the test images."""

    name: str
    predictions: Predictions
    evaluation: Evaluation
    ms_per_image: float
    training_seconds: float | None = None
    settings: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        s = self.evaluation.summary()
        return {
            "name": self.name,
            "ap_cava": s["ap_cava"],
            "ap_voc": s["ap_voc"],
            "recall": s["recall"],
            "precision": s["precision"],
            "ms_per_image": self.ms_per_image,
            "training_seconds": self.training_seconds,
            "n_detections": s["n_detections"],
            "n_ground_truth": s["n_ground_truth"],
            "n_true_positives": s["n_true_positives"],
            "settings": self.settings,
        }


def data_note(splits, *, seed: int, source: str | None = None) -> str:
    """One line saying which images the study used (``splits``: a ``study.splits.Splits``)."""
    count = lambda ds: len(ds) if ds is not None else 0  # noqa: E731
    prefix = f"{source}; " if source else ""
    return (f"{prefix}test images: {count(splits.test)}, training images: {count(splits.train)}, "
            f"dev (threshold calibration): {count(splits.dev)}; seed {seed}.")


def variant_notes(results: Sequence[VariantResult]) -> list[str]:
    """One line per variant: its thresholds and, when known, where its ms/image comes from."""
    notes = []
    for r in results:
        source = r.settings.get("ms_per_image_source")
        notes.append(f"{r.name}: thresholds {r.settings.get('thresholds')}" + (f"; ms/image from {source}" if source else ""))
    return notes


def results_table(results: Sequence[VariantResult], fmt: str = "github") -> str:
    rows = []
    for r in results:
        s = r.evaluation.summary()
        train = "-" if r.training_seconds is None else f"{r.training_seconds:.0f}"
        rows.append([r.name, s["ap_cava"], s["ap_voc"], s["recall"], s["precision"], r.ms_per_image, train])
    return tabulate(rows, headers=COLUMNS, tablefmt=fmt, floatfmt=(None, ".3f", ".3f", ".3f", ".3f", ".1f", None))


def speed_note(results: Sequence[VariantResult]) -> str:
    """How the chart's ms/image were measured: the variants' ``ms_per_image_source``, said once
    when they share it ("not recorded" where a variant has none)."""
    sources = [r.settings.get("ms_per_image_source") or "not recorded" for r in results]
    if len(set(sources)) == 1:
        return f"measured: {sources[0]}"
    return "measured: " + "; ".join(f"{r.name}: {s}" for r, s in zip(results, sources))


def plot_speed(results: Sequence[VariantResult], path: Path) -> Path:
    """Bars of ms/image, with how they were measured (:func:`speed_note`) written under them."""
    import textwrap

    note = textwrap.fill(speed_note(results), 95)
    fig = Figure(figsize=(6.4, 0.9 + 0.5 * len(results) + 0.16 * note.count("\n")), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = [r.name for r in results]
    ax.barh(names, [r.ms_per_image for r in results], color="#4c72b0")
    ax.invert_yaxis()
    ax.set_xlabel("ms per image (lower is better)")
    for y, r in enumerate(results):
        ax.text(r.ms_per_image, y, f" {r.ms_per_image:.1f}", va="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.05 + 0.03 * note.count("\n"), 1, 1))
    fig.text(0.01, 0.01, note, fontsize=6.5, va="bottom", ha="left", color="0.3")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


SOURCE_LABELS = {"wider_easy": "WIDER easy", "wider_medium": "WIDER medium", "wider_hard": "WIDER hard",
                 "source_ap_cava": "source AP (course)", "source_ap_voc": "source AP (VOC)",
                 "source_recall": "source recall", "source_precision": "source precision"}


def source_table(results: Sequence[VariantResult], source: Mapping, fmt: str = "github") -> str:
    """Target-domain AP beside source-domain AP, one row per variant scored on both."""
    scored = [r for r in results if r.name in source]
    metrics = list(source[scored[0].name].metrics) if scored else []
    rows = []
    for r in scored:
        s = r.evaluation.summary()
        rows.append([r.name, s["ap_cava"], s["ap_voc"], *(source[r.name].metrics[m] for m in metrics), r.ms_per_image])
    headers = ("variant", "target AP (course)", "target AP (VOC)", *(SOURCE_LABELS.get(m, m) for m in metrics), "ms/image (target)")
    return tabulate(rows, headers=headers, tablefmt=fmt, floatfmt=(None, *[".3f"] * (2 + len(metrics)), ".1f"))


def plot_tradeoff(results: Sequence[VariantResult], source: Mapping, path: Path) -> Path:
    """Every variant scored on both domains as a point: target-domain AP (course) across,
    source-domain AP up (WIDER: one marker per difficulty, the three joined). One colour per
    variant, named in the legend beside the axes (peers crowd near the origin, where names
    written beside the points would overlap)."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    from facecmp.evaluation.plots import save_figure

    scored = [r for r in results if r.name in source]
    fig = Figure(figsize=(10.5, 5.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    markers = {"wider_easy": "o", "wider_medium": "s", "wider_hard": "^", "source_ap_cava": "o"}
    palette = colormaps["tab10" if len(scored) <= 10 else "tab20"]
    shown, handles = set(), []
    for i, r in enumerate(scored):
        colour = palette(i % palette.N)
        x = r.evaluation.summary()["ap_cava"]
        points = [(m, v) for m, v in source[r.name].metrics.items() if m in markers]
        ax.plot([x] * len(points), [v for _, v in points], linewidth=1, alpha=0.5, color=colour)
        for m, v in points:
            ax.scatter([x], [v], marker=markers[m], color=colour, edgecolors="black", linewidths=0.3, zorder=3)
            shown.add(m)
        label = f"{r.name} ({x:.2f} / " + " / ".join(f"{v:.2f}" for _, v in points) + ")"
        handles.append(Line2D([], [], marker="o", color=colour, linestyle="-", label=label))
    ax.set_xlim(-0.02, 1.0)
    ax.set_ylim(-0.02, 1.0)
    ax.set_xlabel("target-domain AP (course evaluator)")
    ax.set_ylabel("source-domain AP" + (" (WIDER FACE protocol)" if "wider_easy" in shown else ""))
    ax.set_title("Target domain against source domain")
    ax.grid(True, alpha=0.4)
    legend = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                       title="target AP / source AP" + (" (easy / medium / hard)" if "wider_easy" in shown else ""),
                       title_fontsize="small")
    if len(shown) > 1:  # one marker per source metric, hollow: the colours are the variants
        ax.add_artist(legend)
        ax.legend([Line2D([], [], marker=markers[m], color="black", markerfacecolor="none", linestyle="") for m in markers if m in shown],
                  [SOURCE_LABELS[m] for m in markers if m in shown], loc="lower right", fontsize="small")
    fig.subplots_adjust(left=0.07, right=0.58, bottom=0.1, top=0.93)  # the legend to the right of the axes
    return save_figure(fig, path)


def _source_section(results: Sequence[VariantResult], source: Mapping | None, note: str | None) -> list[str]:
    if not source:
        return []
    return ["## Target domain and source domain", "", *( [note, ""] if note else []), source_table(results, source), "",
            "![target vs source](tradeoff.png)", ""]


def _coco_per_variant(results: Sequence[VariantResult], dataset: Dataset) -> dict[str, dict] | None:
    """COCO's metrics of each variant (pycocotools), or None when the optional extra is not installed."""
    from facecmp.evaluation.coco import available, coco_metrics

    if not available():
        return None
    gt = dataset.ground_truth()
    return {r.name: coco_metrics(r.predictions, gt) for r in results}


def _coco_section(coco: dict[str, dict] | None) -> list[str]:
    from facecmp.evaluation.coco import INSTALL_NOTE, coco_table

    if coco is None:
        return [f"{INSTALL_NOTE}.", ""]
    return ["COCO metrics (pycocotools; IoU 0.50:0.95, sizes by face area, at most 100 detections per image):", "",
            coco_table(coco), ""]


def write_report(
    out_dir: str | Path,
    results: Sequence[VariantResult],
    *,
    dataset: Dataset,
    title: str = "facecmp comparison",
    notes: Sequence[str] = (),
    n_samples: int = 6,
    source: Mapping | None = None,
    source_note: str | None = None,
) -> Path:
    """Write report.md, results.json, pr_curves.png, speed.png, samples.png into ``out_dir``; with
    ``source`` (variant -> :class:`facecmp.study.source.SourceResult`) also the target-vs-source
    table and tradeoff.png."""
    from facecmp.study.gallery import pick_sample_images, plot_detection_grid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_pr_curves({r.name: r.evaluation for r in results}, out / "pr_curves.png", title=f"{title}: precision–recall")
    plot_speed(results, out / "speed.png")
    keys = pick_sample_images(dataset, n_samples)
    plot_detection_grid(dataset, {r.name: (r.predictions, r.evaluation) for r in results}, out / "samples.png", keys)
    coco = _coco_per_variant(results, dataset)
    source = {k: v for k, v in (source or {}).items() if k in {r.name for r in results}}
    if source:
        plot_tradeoff(results, source, out / "tradeoff.png")
    write_json(
        out / "results.json",
        {"title": title, "dataset": dataset.name, "n_images": len(dataset), "n_faces": dataset.n_faces,
         **({"source": source_note} if source else {}),
         "variants": [r.as_json() | ({"coco": coco[r.name]} if coco else {})
                      | ({"source": source[r.name].metrics} if r.name in source else {}) for r in results]},
    )
    lines = [
        f"# {title}",
        "",
        f"Test images: {len(dataset)} ({dataset.n_faces} faces) from `{dataset.name}`. "
        "A detection is a true positive at IoU >= 0.3 (course convention, +1 pixel).",
        "",
        results_table(results),
        "",
        "AP (course) reproduces the course evaluator (no precision envelope); AP (VOC) is the all-point "
        "VOC average precision with the monotone envelope.",
        "",
        *_coco_section(coco),
        *_source_section(results, source, source_note),
        *[f"- {n}" for n in notes],
        "",
        "![precision-recall](pr_curves.png)",
        "",
        "![speed](speed.png)",
        "",
        "![samples](samples.png)",
        "",
    ]
    write_text(out / "report.md", "\n".join(lines))
    return out
