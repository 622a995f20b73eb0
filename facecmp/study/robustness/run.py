"""``facecmp robustness``, the study's third axis: the test set chosen as ``compare`` chooses it, the
variants prepared from the registry, the grid run, the report written."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from facecmp.data.fingerprint import data_fingerprint
from facecmp.errors import FacecmpError
from facecmp.study.robustness.cells import CellCache, GridVariant, variant_identity
from facecmp.study.robustness.grid import RobustnessSettings, run_grid
from facecmp.study.robustness.metrics import variant_summary
from facecmp.study.robustness.report import write_robustness_report
from facecmp.study.splits import choose_splits
from facecmp.study.variants import VariantContext, get_variants

DEFAULT_VARIANTS = ("pretrained-calibrated", "finetuned-cascade")


def prepare_grid_variants(names: Sequence[str], ctx) -> list[GridVariant]:
    """Variants from the registry, ready (trained or loaded) on ``ctx``, with their identities."""
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
    dev_per_folder: int | None = None,
    progress: bool = True,
    fmt: str | None = None,
) -> list[dict]:
    """``facecmp robustness``: choose the test set as ``compare`` does, run the grid, write the report."""
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


def checkpoints_by_variant(specs: list[str], variants: tuple[str, ...]) -> dict[str, Path]:
    """``NAME=DIR`` or a bare ``DIR`` (for the one fine-tuned variant asked for)."""
    out: dict[str, Path] = {}
    finetuned = [v for v in variants if v.startswith("finetuned")]
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep:
            if len(finetuned) != 1:
                raise FacecmpError(
                    f"--checkpoint {spec}: say which variant it is for (NAME=DIR); fine-tuned variants asked for: {', '.join(finetuned) or 'none'}"
                )
            name, folder = finetuned[0], spec
        if name not in variants:
            raise FacecmpError(f"--checkpoint {spec}: variant {name!r} is not among --variants ({', '.join(variants)})")
        if not (Path(folder) / "facecmp.json").is_file():
            raise FacecmpError(f"--checkpoint {folder}: not a facecmp checkpoint folder (no facecmp.json); train one with `facecmp finetune`")
        out[name] = Path(folder)
    return out
