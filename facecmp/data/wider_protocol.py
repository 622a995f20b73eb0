"""The files of WIDER FACE's official evaluation: its ``.mat`` ground truth and its submission folders.

Ground truth (``eval_tools/ground_truth/`` of the official download), read with ``scipy.io.loadmat``:

    wider_face_val.mat                 face_bbx_list, event_list, file_list (every face, ``x y w h``)
    wider_{easy,medium,hard}_val.mat   gt_list: per image, the 1-based indices of the faces that
                                       count at that difficulty; the image's other faces are ignored

A submission is one text file per image, ``<event>/<name>.txt``: the image name, the number of
boxes, then one ``x y w h score`` line per box. Images are keyed ``<event>/<name>`` (no ``.jpg``),
the event from the folder and the name from the file's first line, as the reference evaluation
keys them. Boxes keep their file order: the protocol's PR curve depends on it.

facecmp's boxes are inclusive pixels ``x_min..x_max``; a submission writes ``w = x_max - x_min + 1``,
the inverse of how :mod:`facecmp.data.formats.wider` reads WIDER's ``x y w h``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from facecmp.atomic import write_text
from facecmp.errors import DataError

DIFFICULTIES = ("easy", "medium", "hard")
FACES_FILE = "wider_face_val.mat"
DIFFICULTY_FILES = {d: f"wider_{d}_val.mat" for d in DIFFICULTIES}
SUBMISSION_FOLDER = "wider"  # PRED/wider/<event>/<name>.txt, beside the course's .npy files
INSTALL_NOTE = "the WIDER FACE protocol reads its .mat files with scipy: pip install 'facecmp[wider]'"
_FACE_FIELDS = ("face_bbx_list", "event_list", "file_list")


@dataclass(frozen=True)
class WiderGroundTruth:
    """Per image ``<event>/<name>``, in the .mat files' order: its faces (``x y w h``, float) and,
    per difficulty, the 0-based indices of the faces that count (the others are ignored)."""

    boxes: Mapping[str, np.ndarray]
    counted: Mapping[str, Mapping[str, np.ndarray]]  # difficulty -> key -> indices
    source: str = ""

    @property
    def keys(self) -> list[str]:
        return list(self.boxes)

    def restricted_to(self, keys) -> "WiderGroundTruth":
        """The same ground truth on ``keys`` only (in the files' order)."""
        keep = set(keys)
        return WiderGroundTruth(
            {k: v for k, v in self.boxes.items() if k in keep},
            {d: {k: v for k, v in c.items() if k in keep} for d, c in self.counted.items()},
            self.source,
        )


def _loadmat(path: Path) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(INSTALL_NOTE) from None
    if not path.is_file():
        raise DataError(f"{path}: not found; --gt for --protocol wider is the folder with {FACES_FILE} and "
                        f"{', '.join(DIFFICULTY_FILES.values())} (eval_tools/ground_truth/ of the official download)")
    try:
        return loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, NotImplementedError (v7.3) ...
        raise DataError(f"{path}: not a readable MATLAB .mat file ({exc}); use the official WIDER FACE evaluation files") from None


def _field(mat: dict, path: Path, name: str, length: int | None = None) -> np.ndarray:
    if name not in mat:
        raise DataError(f"{path}: not a WIDER FACE evaluation file: field {name!r} missing "
                        f"(found {', '.join(k for k in mat if not k.startswith('__')) or 'none'})")
    value = np.asarray(mat[name])
    if value.dtype != object or (length is not None and len(value) != length):
        want = f"a cell array of {length} events" if length is not None else "a cell array, one cell per event"
        raise DataError(f"{path}: field {name!r} is not {want} (shape {value.shape}, dtype {value.dtype})")
    return value.reshape(-1)


def _cells(value, path: Path, what: str) -> np.ndarray:
    """A MATLAB cell array (as loadmat returns it: an object array) as a flat array of its contents."""
    value = np.asarray(value)
    if value.dtype != object:
        raise DataError(f"{path}: {what} is not a cell array (dtype {value.dtype})")
    return value.reshape(-1)


def _text(value) -> str:
    value = np.asarray(value).reshape(-1)
    return str(value[0]) if value.size else ""


def read_wider_ground_truth(gt_dir: str | Path) -> WiderGroundTruth:
    """The official ``.mat`` ground truth in ``gt_dir``; a DataError naming the file (and field) when it is not WIDER's."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise DataError(f"{gt_dir}: not a folder; --gt for --protocol wider is the folder with {FACES_FILE} and "
                        f"{', '.join(DIFFICULTY_FILES.values())}")
    path = gt_dir / FACES_FILE
    mat = _loadmat(path)
    events = _field(mat, path, "event_list")
    files = _field(mat, path, "file_list", len(events))
    faces = _field(mat, path, "face_bbx_list", len(events))
    boxes: dict[str, np.ndarray] = {}
    for e, event in enumerate(events):
        name = _text(event)
        names = _cells(files[e], path, f"file_list of event {name!r}")
        per_image = _cells(faces[e], path, f"face_bbx_list of event {name!r}")
        if len(names) != len(per_image):
            raise DataError(f"{path}: event {name!r} lists {len(names)} files but {len(per_image)} face lists")
        for j, file in enumerate(names):
            b = np.asarray(per_image[j]).astype(np.float64)
            if b.size and (b.ndim != 2 or b.shape[1] != 4):
                raise DataError(f"{path}: face_bbx_list of {name}/{_text(file)} has shape {b.shape}, expected N x 4 (x y w h)")
            boxes[f"{name}/{_text(file)}"] = b.reshape(-1, 4)
    keys = list(boxes)
    counted = {}
    for difficulty, filename in DIFFICULTY_FILES.items():
        dpath = gt_dir / filename
        gt_list = _field(_loadmat(dpath), dpath, "gt_list", len(events))
        per_key: dict[str, np.ndarray] = {}
        i = 0
        for e in range(len(events)):
            cells = _cells(gt_list[e], dpath, f"gt_list of event {_text(events[e])!r}")
            n_files = len(_cells(files[e], path, "file_list"))
            if len(cells) != n_files:
                raise DataError(f"{dpath}: gt_list of event {_text(events[e])!r} has {len(cells)} images, "
                                f"{FACES_FILE} has {n_files}; use the files of one release")
            for cell in cells:
                key = keys[i]
                index = np.asarray(cell).astype(np.int64).reshape(-1)
                n = len(boxes[key])
                if index.size and (index.min() < 1 or index.max() > n):
                    raise DataError(f"{dpath}: gt_list of {key} has face index {int(index.max() if index.max() > n else index.min())}, "
                                    f"but the image has {n} faces (indices are 1-based)")
                per_key[key] = index - 1
                i += 1
        counted[difficulty] = per_key
    return WiderGroundTruth(boxes, counted, str(gt_dir))


# ----------------------------------------------------------------------------- submissions


def image_key(record_key: str) -> str:
    """A dataset record key ``0--Parade/0_Parade_x_1.jpg`` as a submission key ``0--Parade/0_Parade_x_1``."""
    stem, dot, suffix = record_key.rpartition(".")
    return stem if dot and "/" not in suffix else record_key


def _name(first_line: str) -> str:
    name = first_line.strip().replace("\\", "/").split("/")[-1]
    return name[: -len(".jpg")] if name.lower().endswith(".jpg") else name


def find_submission(pred: str | Path) -> Path | None:
    """The submission folder in ``pred``: ``pred/wider/`` (what ``facecmp detect`` writes), or ``pred``
    itself when it holds ``<event>/*.txt``; None when there is none."""
    pred = Path(pred)
    for folder in (pred / SUBMISSION_FOLDER, pred):
        if folder.is_dir() and any(e.is_dir() and any(e.glob("*.txt")) for e in folder.iterdir()):
            return folder
    return None


def read_submission(folder: str | Path) -> dict[str, np.ndarray]:
    """``<event>/<name> -> (N, 5) x y w h score`` in file order; a line that does not parse is a
    DataError naming its file and line."""
    folder = Path(folder)
    found = find_submission(folder)
    if found is None:
        raise DataError(f"{folder}: no WIDER FACE submission found; expected {folder}/{SUBMISSION_FOLDER}/<event>/<name>.txt "
                        f"or {folder}/<event>/<name>.txt (image name, box count, then `x y w h score` lines), as "
                        "`facecmp detect` writes for a WIDER FACE dataset")
    out: dict[str, np.ndarray] = {}
    where: dict[str, Path] = {}
    for event in sorted(p for p in found.iterdir() if p.is_dir()):
        for path in sorted(event.glob("*.txt")):
            key, boxes = _read_submission_file(path, event.name)
            if key in out:
                raise DataError(f"{path}:1: image {key} is also the image of {where[key]}; one file per image")
            out[key], where[key] = boxes, path
    return out


def _read_submission_file(path: Path, event: str) -> tuple[str, np.ndarray]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or not lines[0].strip():
        raise DataError(f"{path}:1: expected the image name, then the box count, then `x y w h score` lines")
    try:
        count = int(lines[1].strip()) if len(lines) > 1 else -1
    except ValueError:
        count = -1
    if count < 0:
        raise DataError(f"{path}:2: expected the number of boxes (a whole number), found {lines[1].strip()!r}"
                        if len(lines) > 1 else f"{path}:2: expected the number of boxes after the image name")
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(values) != 5 or not np.isfinite(values).all():
            raise DataError(f"{path}:{number}: {line.strip()!r} is not `x y w h score` (five numbers)")
        rows.append(values)
    if len(rows) != count:
        raise DataError(f"{path}:2: says {count} boxes, but {len(rows)} `x y w h score` lines follow")
    return f"{event}/{_name(lines[0])}", np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def to_submission_boxes(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Inclusive ``x_min y_min x_max y_max`` + scores -> ``x y w h score`` rows, highest score first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    b, s = boxes[order], scores[order]
    return np.column_stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1, s])


def write_submission(out: str | Path, per_image: Mapping[str, np.ndarray]) -> list[Path]:
    """Write ``out/<event>/<name>.txt`` for every ``<event>/<name> -> (N, 5)`` (images with no box
    included: they tell a missing image from an image without detections); return the paths."""
    out = Path(out)
    written = []
    for key, rows in per_image.items():
        event, _, name = key.rpartition("/")
        if not event or "/" in event or name in ("", ".", "..") or event in (".", ".."):
            raise DataError(f"image {key!r}: a WIDER FACE submission needs keys <event>/<name> (one folder level)")
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        lines = [name, str(len(rows))]
        lines += [f"{x:.2f} {y:.2f} {w:.2f} {h:.2f} {s:.8f}" for x, y, w, h, s in rows.tolist()]
        path = out / event / f"{name}.txt"
        write_text(path, "\n".join(lines) + "\n")
        written.append(path)
    return written
