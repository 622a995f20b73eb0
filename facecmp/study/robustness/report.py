"""The robustness report: tables, the augmentation notes, the heatmap, severity curves and picture
grid, and ``robustness.md`` / ``robustness.json``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from facecmp.atomic import write_json, write_text
from facecmp.data.images import read_image
from facecmp.data.records import Dataset
from facecmp.study.robustness.apply import apply_condition
from facecmp.study.robustness.cells import GridVariant
from facecmp.study.robustness.conditions import CLEAN, Condition, valid_severities
from facecmp.study.robustness.grid import RobustnessSettings
from facecmp.study.robustness.metrics import mean_or_none

# The picture grid shows each corruption at this severity (or the nearest one run).
PICTURE_SEVERITY = 3


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
            row.append(f"{_fmt(mean_or_none(list(aps.values())))} ({' / '.join(_fmt(v) for v in aps.values())})")
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
        ap = s["clean_ap"] if column == "clean" else mean_or_none(list(s["per_corruption"].get(column, {}).values()))
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
