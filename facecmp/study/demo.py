"""``facecmp demo``: the comparison on the built-in generated dataset."""

from __future__ import annotations

from pathlib import Path

from facecmp.study.compare import CASCADE_VARIANTS, COMPARE_VARIANTS, run_comparison


def run_demo(out: str | Path, *, seed: int = 0) -> Path:
    """The comparison on the built-in generated dataset (made once, cached)."""
    from facecmp.data.synthetic import ensure_default_dataset

    root = ensure_default_dataset(seed=seed)
    return run_comparison(
        root, out, seed=seed, variants=COMPARE_VARIANTS + CASCADE_VARIANTS, title="facecmp demo (generated cartoon faces)",
        recognizers=("probe-pretrained", "probe-finetuned", "finetune"),
    )
