"""Settings shared by tests/ and benchmarks/: two CPU threads, and where the real data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parent


def shared_datasets_dir() -> Path:
    """``../shared/datasets`` beside the checkout, or ``$FACECMP_SHARED_DATASETS``."""
    return Path(os.environ.get("FACECMP_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    path = shared_datasets_dir()
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set FACECMP_SHARED_DATASETS to run these)")
    return path


@pytest.fixture(scope="session")
def dexter_root(shared_datasets: Path) -> Path:
    path = shared_datasets / "dexter"
    if not (path / "antrenare").is_dir():
        pytest.skip(f"Dexter training set not found at {path}")
    return path
