"""The label budget's gate: a tiny ``facecmp curve`` (facecmp.study.curve) on the benchmark's data.

Each ``[[curve]]`` entry of gates.toml for this dataset names a curve (frames, stages, epochs)
and a gate on it: AP at its largest point >= AP at its smallest + ``by``, with the difference
measured when the gate was set (``measured``, audited with the accuracy margin like every
other gate). The curve uses the run's splits (the same test set and dev split as the accuracy
gates) and is kept in the cache, keyed by the code, so a re-run with a warm cache trains nothing.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from facecmp.bench.gates import CURVE_POINTS, check, curve_gates, load_document
from facecmp.bench.plugin import _gates_path, skip_unless_selected

DEFAULT_DATASET = "default"
# What a curve point is trained and calibrated like: the variants it stands beside.
NEEDS = ("pretrained-calibrated", "finetuned-pnet")


def test_curve_gate(facecmp_session, facecmp_gates, request):
    from facecmp.study.curve import CurveSettings, run_curve
    from facecmp.data.fingerprint import code_fingerprint

    session = facecmp_session
    gates = curve_gates(load_document(_gates_path(request.config, request.path)), session.dataset_key)
    reason = facecmp_gates.mismatch(session.run_settings()) or (None if gates else f"no [[curve]] gate for {session.dataset_key}")
    if reason:
        if session.dataset_key == DEFAULT_DATASET:
            pytest.fail(f"{reason}: the built-in data's curve gate must apply to the default run", pytrace=False)
        pytest.skip(reason)
    skip_unless_selected(session, NEEDS)
    test = None if session.test_selection == "archive" else session.test_selection
    for entry in gates:
        settings = CurveSettings(frames=entry.frames, stages=tuple(entry.stages.split(",")), seed=session.options.seed,
                                 epochs=entry.epochs, dev_per_folder=session.options.dev_per_folder)
        key = json.dumps([code_fingerprint(), str(session.root.resolve()), test, repr(settings)])
        out = session.options.cache_dir / f"curve-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        curve = run_curve(session.root, out, settings, test=test, resume=True, device=session.options.device, progress=False,
                          cache_dir=session.variant_context.cache_dir)  # pretrained-calibrated's thresholds: the accuracy gates' own
        points = sorted((p for p in curve["points"] if p["stages"] == ",".join(settings.stages)), key=lambda p: p["frames"])
        assert len(points) >= 2, f"{out}: a curve gate needs two points, has {len(points)}"
        print(f"\n{entry.gate.name}: " + ", ".join(f"{p['frames']} frames AP {p['ap_cava']:.3f} ({p['train_s']:.0f} s)" for p in points))
        check(entry.gate, dict(zip(CURVE_POINTS, (points[-1], points[0]))))
