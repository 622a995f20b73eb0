"""Atomic, confined writes: write to a temporary file beside the target, then rename over it.

A crash or Ctrl-C mid-write leaves either the old file or the new one, never half of one: the
temporary file is flushed to disk (``fsync``) before the rename, and the folder after it, so the
rename itself survives a power cut. The temporary file is created with mode ``0o666`` and the
kernel applies the process's umask, as a plain ``open()`` would; the umask is never changed.

:func:`inside` is the one check that a path built from data (an image key, a name from a file)
stays inside its output folder; every writer that joins such names goes through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from facecmp.errors import DataError


def inside(root: str | os.PathLike, *parts: str | os.PathLike) -> Path:
    """``root / parts...``, refused (DataError) unless it resolves inside ``root``: an absolute part,
    a ``..`` that climbs out, or a link pointing elsewhere would write outside the output folder."""
    root = Path(root)
    path = root.joinpath(*parts)
    if not is_within(path, root):
        shown = "/".join(str(p) for p in parts)
        raise DataError(f"{shown}: would be written outside the output folder {root} (it resolves to {path.resolve()}); "
                        "names from data must be relative paths without '..'")
    return path


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path``, resolved (``..`` and links followed), is ``folder`` or lies inside it."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def _temporary(target: Path) -> Path:
    """A new empty file beside ``target``, created like ``open(..., 'w')`` would (mode 0o666 less the umask)."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise OSError(f"{target.parent}: could not create a temporary file")


def _fsync_path(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # some platforms cannot open a folder; the file itself was synced
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success, sync it and rename it onto ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(target)
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, target)
        _fsync_path(target.parent, directory=True)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
