"""Source-domain gates: each variant scored on a second test set (``--facecmp-source-data``), the
kind of images the pretrained cascade was made for, against the source dataset's own table of
benchmarks/gates.toml (``[wider-face]`` for a folder named ``wider-face``): what fine-tuning
costs where the pretrained cascade was good. The table's settings (``test = "split:1"``,
``n_test_images``, ``seed``, ``test_fingerprint``) say which source images its numbers were
measured on; a run that chose others skips the gates and says why. Without
``--facecmp-source-data`` every test here skips.

WIDER FACE with its .mat files is scored with the official protocol (``wider_easy``,
``wider_medium``, ``wider_hard``); any other dataset with the course evaluator (``source_ap_cava`` ...).
The target-domain result of each variant is computed as well, so the report puts both side by side.
"""

from __future__ import annotations

import pytest

from facecmp.bench.gates import SOURCE_METRICS, check_all, load_gates
from facecmp.bench.plugin import _gates_path


def test_source_accuracy(facecmp_variant, facecmp_source_result, facecmp_result, facecmp_session, request):
    gates = load_gates(_gates_path(request.config, request.path), facecmp_session.source.key)
    reason = gates.mismatch(facecmp_session.source_run_settings())
    if reason is not None:
        pytest.skip(reason)
    chosen = gates.minimums_for(facecmp_variant, metrics=SOURCE_METRICS)
    if not chosen:
        pytest.skip(f"no source-domain gates for {facecmp_variant} in [{gates.dataset}] of {gates.path}")
    check_all(chosen, {facecmp_variant: facecmp_source_result.metrics})
