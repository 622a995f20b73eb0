"""`facecmp check`, `convert` and `evaluate` read and write files only: they never import torch.

Each command runs in its own interpreter under ``python -X importtime``, whose log names every
module imported; a command that imports torch (``detect``, the control) shows it there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facecmp.data.predictions import Predictions, save_predictions
from facecmp.data.synthetic import CHARACTERS, generate_dataset

REPO = Path(__file__).resolve().parents[1]


def imported_modules(argv: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime -m facecmp.cli ARGV``; its result and the names of every module it imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "facecmp.cli", *map(str, argv)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done, modules


def torch_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m == "torch" or m.startswith(("torch.", "torchvision")))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("light") / "data", n_train_per_character=2, n_test=3, size=(160, 120))


@pytest.fixture(scope="module")
def predictions(dataset: Path) -> Path:
    """The ground truth's own boxes as predictions, for task 1 and for every character of task 2."""
    out = dataset.parent / "pred"
    lines = (dataset / "validare" / "task1_gt_validare.txt").read_text().split()
    rows = np.array(lines, dtype=object).reshape(-1, 5)
    preds = Predictions(rows[:, 1:].astype(np.int64), np.ones(len(rows)), rows[:, 0].astype(str))
    save_predictions(out, preds)
    for char in CHARACTERS:
        save_predictions(out / "task2", preds, name=char)
    return out


@pytest.mark.parametrize("command", ["check", "convert", "evaluate", "evaluate --task2"])
def test_light_commands_import_no_torch(command, dataset, predictions, tmp_path):
    argv = {
        "check": ["check", "--data", dataset],
        "convert": ["convert", "--data", dataset, "--to", "coco", "--out", tmp_path / "coco"],
        "evaluate": ["evaluate", "--pred", predictions, "--gt", dataset / "validare" / "task1_gt_validare.txt",
                     "--json", tmp_path / "m.json", "--plot", tmp_path / "pr.png"],
        "evaluate --task2": ["evaluate", "--task2", "--pred", predictions, "--gt-dir", dataset / "validare",
                             "--json", tmp_path / "t2.json"],
    }[command]
    done, modules = imported_modules(argv, tmp_path)
    assert done.returncode in (0, 1), done.stderr[-2000:]  # check exits 1 when it finds problems
    assert "facecmp.cli" in modules or "facecmp" in modules  # the log is read
    assert torch_modules(modules) == [], f"{command} imported {torch_modules(modules)[:5]}"
    if command == "evaluate":
        assert (tmp_path / "m.json").exists() and (tmp_path / "pr.png").exists()


def test_a_command_that_runs_a_network_imports_torch_and_the_log_shows_it(dataset, tmp_path):
    """The control: the same log does show torch when a command imports it (then fails on the missing folder)."""
    done, modules = imported_modules(["detect", "--images", tmp_path / "missing", "--out", tmp_path / "p"], tmp_path)
    assert done.returncode == 2 and "facecmp: error:" in done.stderr
    assert "torch" in torch_modules(modules)
