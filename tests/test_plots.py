"""facecmp.evaluation.plots: PR curves are written as real images, atomically."""

from __future__ import annotations

import numpy as np

from facecmp.evaluation.evaluator import evaluate
from facecmp.evaluation.plots import plot_pr_curves
from facecmp.data.predictions import Predictions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def two_variants():
    gt = {"a.jpg": np.array([[0, 0, 9, 9], [20, 0, 29, 9]])}
    good = Predictions(np.array([[0, 0, 9, 9], [20, 0, 29, 9]]), np.array([0.9, 0.8]), np.array(["a.jpg"] * 2))
    poor = Predictions(np.array([[50, 50, 60, 60], [0, 0, 9, 9]]), np.array([0.9, 0.8]), np.array(["a.jpg"] * 2))
    return {"pretrained": evaluate(poor, gt), "fine-tuned": evaluate(good, gt), "none": evaluate(Predictions.empty(), gt)}


def test_plot_writes_a_png_and_leaves_no_temporary_file(tmp_path):
    out = plot_pr_curves(two_variants(), tmp_path / "plots" / "pr.png")
    assert out == tmp_path / "plots" / "pr.png"
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert [p.name for p in out.parent.iterdir()] == ["pr.png"]


def test_plot_follows_the_suffix_and_accepts_no_curves(tmp_path):
    svg = plot_pr_curves(two_variants(), tmp_path / "pr.svg", title="Dexter")
    assert b"<svg" in svg.read_bytes()[:500]
    empty = plot_pr_curves({}, tmp_path / "empty.png")
    assert empty.read_bytes().startswith(PNG_SIGNATURE)
