"""Atomic writes leave whole files with ordinary permissions."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from facecmp.atomic import atomic_path, save_npy, write_text


def test_written_files_get_the_mode_a_plain_open_would_give(tmp_path):
    old = os.umask(0o022)
    try:
        save_npy(tmp_path / "a.npy", np.arange(3))
        write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    for name in ("a.npy", "b.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
