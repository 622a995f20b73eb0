"""``facecmp check``: everything wrong with a dataset, and what is in it, in one report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecmp.errors import DataError
from facecmp.data.images import read_image
from facecmp.data.layout import archive_parts, read_test, read_training
from facecmp.data.facesizes import min_face_advice
from facecmp.data.records import Dataset, Problem

# Face-width buckets in pixels; 12 is the smallest face PNet sees at scale 1.
WIDTH_EDGES = (12, 24, 48, 96, 192)
PERCENTILES = (5, 25, 50, 75, 95)
MAX_LISTED = 30


@dataclass
class CheckReport:
    """What ``check_dataset`` found: the datasets read (with problems), plus undecodable images."""

    root: Path
    datasets: list[Dataset]
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def summary_text(self) -> str:
        lines = [f"Dataset check: {self.root}"]
        for ds in self.datasets:
            lines.extend(_dataset_summary(ds))
        n_err, n_warn = len(self.errors), len(self.problems) - len(self.errors)
        lines.append("")
        if self.ok:
            lines.append("No problems found.")
        else:
            lines.append(f"Problems: {n_err} error(s), {n_warn} warning(s) (errors stop the loaders; "
                         "warnings are handled as each says, and stop them only with --strict)")
            lines.extend(f"  {p}" for p in self.problems[:MAX_LISTED])
            if len(self.problems) > MAX_LISTED:
                lines.append(f"  ... and {len(self.problems) - MAX_LISTED} more")
        return "\n".join(lines)


def face_widths(ds: Dataset) -> np.ndarray:
    """Widths of every face in pixels (inclusive coordinates, so ``x_max - x_min + 1``)."""
    if not ds.n_faces:
        return np.zeros(0, dtype=np.int64)
    boxes = np.concatenate([r.boxes for r in ds.images if len(r.boxes)])
    return boxes[:, 2] - boxes[:, 0] + 1


def width_histogram(widths: np.ndarray) -> list[tuple[str, int]]:
    edges = (0, *WIDTH_EDGES, None)
    buckets = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        label = f"<{hi}" if lo == 0 else (f">={lo}" if hi is None else f"{lo}-{hi - 1}")
        count = int(np.sum((widths >= lo) & (widths < hi if hi is not None else True)))
        buckets.append((label, count))
    return buckets


def _dataset_summary(ds: Dataset) -> list[str]:
    labels = Counter(label or "(no label)" for r in ds.images for label in r.labels)
    widths = face_widths(ds)
    lines = ["", f"{ds.name}: {len(ds)} images, {ds.n_faces} faces, "
             f"{sum(1 for r in ds.images if not len(r.boxes))} images without faces"]
    if labels:
        lines.append("  faces per character: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    if len(widths):
        pct = np.percentile(widths, PERCENTILES).round().astype(int)
        lines.append(f"  face width px: min {widths.min()}, "
                     + ", ".join(f"p{p} {v}" for p, v in zip(PERCENTILES, pct)) + f", max {widths.max()}")
        lines.append("  width histogram: " + ", ".join(f"{k}: {v}" for k, v in width_histogram(widths)))
        lines.append(f"  suggested --min-face: {min_face_advice(ds)}")
    if ds.missing:
        shown = ", ".join(ds.missing[:10]) + (", ..." if len(ds.missing) > 10 else "")
        lines.append(f"  missing images: {len(ds.missing)} listed in the ground truth but absent ({shown})")
    return lines


def _decode_problems(ds: Dataset, already: set[Path]) -> list[Problem]:
    problems = []
    for record in ds.images:
        if record.path in already:
            continue
        try:
            read_image(record.path)
        except DataError as exc:
            problems.append(Problem(record.path, None, str(exc).removeprefix(f"{record.path}: ")))
    return problems


def check_dataset(root: str | Path, fmt: str | None = None) -> CheckReport:
    """Read every annotation and decode every image under ``root`` (a course archive, ``antrenare/`` or
    ``validare/``, or another labelling format: found, or named by ``fmt``), collecting all problems
    instead of stopping at the first.

    Missing test images are one error problem (the count and the first names).
    Raises :class:`DataError` only when ``root`` has no recognisable layout.
    """
    from facecmp.data.archive import read_parts, resolve_format

    root = Path(root)
    if resolve_format(root, fmt) == "course":
        train_dir, test_dir = archive_parts(root)
        datasets = ([read_training(train_dir)] if train_dir else []) + ([read_test(test_dir)] if test_dir else [])
    else:
        test_dir = root
        datasets = list(read_parts(root, fmt)[1].values())
    problems: list[Problem] = []
    for ds in datasets:
        problems.extend(ds.problems)
        if ds.missing:
            shown = ", ".join(ds.missing[:5]) + (", ..." if len(ds.missing) > 5 else "")
            problems.append(Problem(Path(test_dir), None, f"{len(ds.missing)} images listed in the ground truth are "
                                    f"missing from the image folder ({shown})"))
        unreadable = {p.file for p in ds.problems if p.line is None and p.severity == "error"}
        problems.extend(_decode_problems(ds, unreadable))
    return CheckReport(root, datasets, problems)
