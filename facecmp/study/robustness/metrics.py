"""The robustness metrics as "Benchmarking Robustness in Object Detection" (Michaelis et al. 2019)
defines them: P_clean (AP on clean frames), mPC (mean AP over the benchmark's 15 corruptions x
severities run), rPC = mPC / P_clean; with AP per corruption and severity, for ``ap_cava`` and
``ap_voc``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from facecmp.study.robustness.cells import Cell
from facecmp.study.robustness.conditions import BENCHMARK_CORRUPTIONS, CLEAN, Condition


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean of ``values``, None when there are none (a grid without such cells)."""
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
        str(s): mean_or_none([getattr(c, metric) for cond, c in cells.items() if cond.name in BENCHMARK_CORRUPTIONS and cond.severity == s])
        for s in severities
    }
    mpc = mean_or_none(benchmark)
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
