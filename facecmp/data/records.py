"""Plain records the rest of facecmp passes around: images, their faces, and data problems."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located as precisely as we can."""

    file: Path
    # a line number, or for formats without lines the object (``annotations[3] (id 17)``, ``object 2``)
    line: int | str | None
    message: str
    # "error" problems stop a strict run; "warning" ones were repaired by an explicit policy.
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else f"{self.file}"
        return f"{where}: {self.severity}: {self.message}"


@dataclass
class ImageRecord:
    """An image and its annotated faces.

    ``key`` identifies the image in ground truth and prediction files: ``dad/0001.jpg`` for a
    training image (the same file name exists in every character folder), the bare file name
    (``0001.jpg``) for an image of a test folder.
    Boxes are integer pixels ``x_min, y_min, x_max, y_max``, both ends inclusive.
    """

    key: str
    path: Path
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.int64))
    labels: tuple[str, ...] = ()
    # Per box, what a labelling format adds beyond box and class (WIDER FACE's blur/occlusion/invalid,
    # VOC's difficult, COCO attributes); empty when the format has none (the course layout).
    meta: tuple[dict, ...] = ()
    # The same boxes as the file wrote them, where the box policy clipped any (None: ``boxes`` are as written).
    # ``facecmp convert`` writes these: what the user labelled.
    labelled: np.ndarray | None = None

    @classmethod
    def of(cls, key: str, path: Path, boxes, labelled, labels, meta: tuple[dict, ...] = ()) -> "ImageRecord":
        """A record from the kept boxes (clipped) and the same boxes as written; ``labelled`` only when they differ."""
        kept = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        written = np.asarray(labelled, dtype=np.int64).reshape(-1, 4)
        return cls(key, path, kept, tuple(labels), meta, None if np.array_equal(kept, written) else written)

    @property
    def boxes_as_labelled(self) -> np.ndarray:
        """The boxes as the file wrote them (``boxes`` unless the policy clipped some)."""
        return self.boxes if self.labelled is None else self.labelled

    @property
    def folder(self) -> str:
        """The character folder of a training image ('' for a test image)."""
        return self.key.rpartition("/")[0]


@dataclass
class Dataset:
    """Images with their faces, plus every problem met while reading them."""

    name: str
    images: list[ImageRecord]
    problems: list[Problem] = field(default_factory=list)
    # Names listed in ground truth whose image file is absent.
    missing: list[str] = field(default_factory=list)
    characters: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_faces(self) -> int:
        return int(sum(len(r.boxes) for r in self.images))

    def ground_truth(self) -> dict[str, np.ndarray]:
        """``key -> (K, 4) int boxes`` for every image, in dataset order."""
        return {r.key: r.boxes for r in self.images}

    def subset(self, keys, name: str | None = None) -> "Dataset":
        wanted = set(keys)
        return replace(self, name=name or self.name, images=[r for r in self.images if r.key in wanted])
