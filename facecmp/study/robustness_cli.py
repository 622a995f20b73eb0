"""``facecmp robustness``: its options and its command (kept here so cli.py only wires them in).

Light to import: the parser is built on every ``facecmp`` call.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def add_options(p: argparse.ArgumentParser) -> None:
    """Every option but ``--device`` and ``--format`` (cli.py adds them as for the other commands)."""
    p.add_argument("--data", required=True, type=Path, help="course archive root")
    p.add_argument("--test", default=None, help="test folder, or 'split' / 'split:N' (as compare; default: validare/, else split:50)")
    p.add_argument("--out", required=True, type=Path, help="report folder (robustness.md, robustness.json, heatmap.png, ...)")
    p.add_argument("--variants", default="pretrained-calibrated,finetuned-cascade", help="comma-separated variants (default pretrained-calibrated,finetuned-cascade)")
    p.add_argument(
        "--checkpoint", action="append", default=[],
        help="reuse a fine-tuned checkpoint instead of training: NAME=DIR for variant NAME, or DIR when one fine-tuned variant is asked for (repeatable)",
    )
    p.add_argument("--corruptions", default="benchmark", help="all (19), benchmark (the 15), extra (4), geometric (scale, mirror) or comma-separated names (default benchmark)")
    p.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities 1-5 (default 1,2,3,4,5)")
    p.add_argument("--workers", type=int, default=2, help="processes that corrupt and detect, one thread each (default 2; 0 = this process)")
    p.add_argument("--seed", type=int, default=0, help="split seed and corruption seed (default 0)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--cache", type=Path, default=None, help="cache folder for checkpoints and grid cells (default OUT/cache); a rerun resumes from it")
    p.add_argument("--dev-per-folder", type=int, default=25, help="dev images per training folder for threshold calibration (default 25, as compare)")
    p.add_argument("--allow-missing", action="store_true", help="evaluate only the test images present on disk")


def checkpoints_by_variant(specs: list[str], variants: tuple[str, ...]) -> dict[str, Path]:
    """``NAME=DIR`` or a bare ``DIR`` (for the one fine-tuned variant asked for)."""
    from facecmp.errors import FacecmpError

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


def run_command(args) -> int:
    from facecmp.data.corruptions import missing_dependency, parse_corruptions, parse_severities
    from facecmp.errors import FacecmpError
    from facecmp.study.robustness import RobustnessSettings, run_robustness, summary_table
    from facecmp.study.variants import get_variants

    if args.workers < 0 or args.dev_per_folder < 0:
        raise FacecmpError(f"--workers {args.workers} / --dev-per-folder {args.dev_per_folder}: expected 0 or more")
    corruptions = parse_corruptions(args.corruptions)
    severities = parse_severities(args.severities)
    variants = _names(args.variants)
    get_variants(variants)  # unknown names: one line listing the valid ones
    checkpoints = checkpoints_by_variant(args.checkpoint, variants)
    problem = missing_dependency()
    if problem:
        raise FacecmpError(problem)
    if args.out.exists() and not args.out.is_dir():
        raise FacecmpError(f"{args.out}: --out must be a folder, but a file of that name exists; choose another path")
    settings = RobustnessSettings(corruptions=corruptions, severities=severities, seed=args.seed, workers=args.workers)
    summaries = run_robustness(
        args.data, args.out, test=args.test, variants=variants, checkpoints=checkpoints, settings=settings,
        epochs=args.epochs, device=args.device, cache_dir=args.cache, allow_missing=args.allow_missing,
        dev_per_folder=args.dev_per_folder, fmt=args.format,
    )
    print(summary_table(summaries))
    print(f"report: {args.out / 'robustness.md'}")
    return 0
