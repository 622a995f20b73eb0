"""Atomic writes leave whole files with ordinary permissions, synced to disk, inside their folder."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from facecmp import atomic
from facecmp.atomic import atomic_path, inside, save_npy, write_text
from facecmp.errors import DataError


def test_written_files_get_the_mode_a_plain_open_would_give_without_touching_the_umask(tmp_path, monkeypatch):
    old = os.umask(0o022)
    try:
        def no_umask(mask):  # changing the umask is process-wide: another thread's files would get mode 0o666 & ~0
            raise AssertionError("atomic writes must not change the process umask")

        monkeypatch.setattr(os, "umask", no_umask)
        save_npy(tmp_path / "a.npy", np.arange(3))
        write_text(tmp_path / "b.txt", "x")
        monkeypatch.undo()
    finally:
        os.umask(old)
    for name in ("a.npy", "b.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_the_file_is_synced_before_the_rename_and_its_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", os.path.basename(b)))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_text(tmp_path / "out.txt", "hello")
    assert events == [("fsync", 5), ("replace", "out.txt"), ("fsync", "folder")]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("name", ["../x.jpg", "images/../../x.jpg", "/tmp/x.jpg", "link/x.jpg"])
def test_a_path_from_data_that_leaves_its_output_folder_is_refused(tmp_path, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path)  # a link inside the folder that points out of it
    with pytest.raises(DataError, match="outside the output folder") as info:
        inside(out, name)
    assert "\n" not in str(info.value)


def test_a_path_that_stays_inside_is_returned_joined(tmp_path):
    assert inside(tmp_path, "images", "dad/0001.jpg") == tmp_path / "images" / "dad/0001.jpg"
    assert inside(tmp_path, "a/../b.txt") == tmp_path / "a/../b.txt"
    assert atomic.inside(tmp_path) == tmp_path
