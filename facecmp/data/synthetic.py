"""A built-in synthetic cartoon-face dataset in the course layout, so facecmp runs with no data.

Four invented characters, each with its own drawing style (skin, hair, eyes, mouth, face
shape), plus ``unknown`` faces in random styles, drawn with PIL on cluttered backgrounds with
face-like distractors (round objects with spots). Layout written under ``out_root``::

    antrenare/{c}/NNNN.jpg, antrenare/{c}_annotations.txt        (all faces of each image)
    validare/validare/NNNN.jpg, validare/task1_gt_validare.txt, validare/task2_{c}_gt_validare.txt

Every image has its own RNG seeded from ``(seed, part, folder, index)``: the same parameters
give byte-identical files. Files are written atomically and ``facecmp_synthetic.json`` last,
so a complete dataset is recognised and not regenerated.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facecmp.atomic import atomic_path, write_json, write_text
from facecmp.errors import DataError

GENERATOR_VERSION = 1
MANIFEST = "facecmp_synthetic.json"
PARTIAL = ".facecmp_synthetic_partial.json"
CHARACTERS = ("ada", "bo", "cy", "dot")
UNKNOWN = "unknown"
FACE_WIDTH = (30, 250)
MIN_VISIBLE = 16  # px, smallest visible side of a face cut by the border


@dataclass(frozen=True)
class Style:
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_kind: str  # "bob", "spiky", "bald", "bun", "flat"
    eye_kind: str  # "big", "dots", "glasses", "lashes"
    iris: tuple[int, int, int]
    mouth_kind: str  # "smile", "open", "line", "o"
    nose: bool
    aspect: float  # face height / width
    eye_y: float  # eye height as a fraction of the face height
    eye_dx: float  # half distance between the eyes, fraction of the width


STYLES = {
    "ada": Style((255, 206, 160), (222, 96, 30), "bob", "big", (40, 90, 220), "smile", True, 1.15, 0.45, 0.2),
    "bo": Style((130, 205, 110), (25, 25, 25), "spiky", "dots", (0, 0, 0), "open", False, 0.9, 0.42, 0.22),
    "cy": Style((150, 105, 75), (60, 40, 30), "bald", "glasses", (30, 30, 30), "line", True, 1.3, 0.42, 0.2),
    "dot": Style((250, 172, 200), (245, 215, 40), "bun", "lashes", (120, 60, 160), "o", False, 1.0, 0.5, 0.19),
}
OUTLINE = (20, 20, 20)


def random_style(rng: np.random.Generator) -> Style:
    """An ``unknown`` face: any colours and parts."""
    return Style(
        skin=_color(rng, lo=90),
        hair=_color(rng),
        hair_kind=str(rng.choice(["bob", "spiky", "bald", "bun", "flat"])),
        eye_kind=str(rng.choice(["big", "dots", "glasses", "lashes"])),
        iris=_color(rng),
        mouth_kind=str(rng.choice(["smile", "open", "line", "o"])),
        nose=bool(rng.random() < 0.5),
        aspect=float(rng.uniform(0.85, 1.35)),
        eye_y=float(rng.uniform(0.38, 0.5)),
        eye_dx=float(rng.uniform(0.16, 0.24)),
    )


def _color(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))  # type: ignore[return-value]


# ----------------------------------------------------------------------------- drawing


def draw_face(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], style: Style,
              rng: np.random.Generator) -> None:
    """A cartoon face filling ``box`` (its oval is the annotated face); hair may reach outside."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    lw = max(1, round(w / 40))
    cx = (x0 + x1) / 2
    _draw_back_hair(draw, box, style, lw)
    draw.ellipse(box, fill=style.skin, outline=OUTLINE, width=lw)
    _draw_front_hair(draw, box, style, lw)
    # Eyes, with a little per-face jitter so no two faces are identical.
    ey = y0 + h * (style.eye_y + rng.uniform(-0.03, 0.03))
    dx = w * style.eye_dx
    look = rng.uniform(-0.3, 0.3)
    for ex in (cx - dx, cx + dx):
        _draw_eye(draw, ex, ey, w, style, look, lw)
    if style.eye_kind == "glasses":
        draw.line((cx - dx + w * 0.11, ey, cx + dx - w * 0.11, ey), fill=OUTLINE, width=lw)
    if style.nose:
        ny = y0 + h * 0.62
        draw.polygon([(cx, ny - h * 0.07), (cx - w * 0.05, ny + h * 0.02), (cx + w * 0.05, ny + h * 0.02)],
                     fill=_shade(style.skin, 0.8), outline=OUTLINE)
    _draw_mouth(draw, cx, y0 + h * 0.78, w, h, style, lw)


def _shade(color, k: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * k))) for c in color)  # type: ignore[return-value]


def _draw_back_hair(draw, box, style: Style, lw: int) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if style.hair_kind == "bob":
        draw.ellipse((x0 - w * 0.12, y0 - h * 0.1, x1 + w * 0.12, y0 + h * 0.85), fill=style.hair, outline=OUTLINE,
                     width=lw)
    elif style.hair_kind == "bun":
        r = w * 0.22
        cx = (x0 + x1) / 2
        draw.ellipse((cx - r, y0 - r * 1.4, cx + r, y0 + r * 0.6), fill=style.hair, outline=OUTLINE, width=lw)


def _draw_front_hair(draw, box, style: Style, lw: int) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if style.hair_kind in ("bob", "flat", "bun"):
        # a fringe over the top of the face
        draw.chord((x0, y0, x1, y0 + h * 0.6), 180, 360, fill=style.hair, outline=OUTLINE, width=lw)
    elif style.hair_kind == "spiky":
        n = 6
        pts = [(x0 + w * 0.05, y0 + h * 0.3)]
        for i in range(n + 1):
            px = x0 + w * (0.05 + 0.9 * i / n)
            pts.append((px, y0 - h * 0.18 if i % 2 == 0 else y0 + h * 0.12))
        pts.append((x1 - w * 0.05, y0 + h * 0.3))
        draw.polygon(pts, fill=style.hair, outline=OUTLINE)


def _draw_eye(draw, ex: float, ey: float, w: float, style: Style, look: float, lw: int) -> None:
    kind = style.eye_kind
    if kind == "dots":
        r = w * 0.045
        draw.ellipse((ex - r, ey - r, ex + r, ey + r), fill=(0, 0, 0))
        return
    r = w * (0.11 if kind == "big" else 0.085)
    ry = r * (1.25 if kind == "big" else 1.0)
    draw.ellipse((ex - r, ey - ry, ex + r, ey + ry), fill=(255, 255, 255), outline=OUTLINE, width=lw)
    pr = r * 0.45
    px = ex + look * r * 0.5
    draw.ellipse((px - pr, ey - pr, px + pr, ey + pr), fill=style.iris)
    draw.ellipse((px - pr * 0.45, ey - pr * 0.45, px + pr * 0.45, ey + pr * 0.45), fill=(0, 0, 0))
    if kind == "glasses":
        g = r * 1.35
        draw.ellipse((ex - g, ey - g, ex + g, ey + g), outline=OUTLINE, width=max(2, lw))
    elif kind == "lashes":
        for k in (-1, 0, 1):
            draw.line((ex + k * r * 0.6, ey - ry, ex + k * r * 0.9, ey - ry * 1.5), fill=OUTLINE, width=lw)


def _draw_mouth(draw, mx: float, my: float, w: float, h: float, style: Style, lw: int) -> None:
    kind = style.mouth_kind
    mw = w * 0.2
    if kind == "smile":
        draw.arc((mx - mw, my - h * 0.12, mx + mw, my + h * 0.06), 20, 160, fill=(170, 20, 30), width=max(2, lw))
    elif kind == "open":
        draw.chord((mx - mw * 1.2, my - h * 0.08, mx + mw * 1.2, my + h * 0.1), 0, 180, fill=(120, 10, 20),
                   outline=OUTLINE, width=lw)
    elif kind == "line":
        draw.line((mx - mw, my, mx + mw, my), fill=OUTLINE, width=max(2, lw))
        draw.rectangle((mx - mw * 0.8, my - h * 0.07, mx + mw * 0.8, my - h * 0.03), fill=(40, 30, 20))
    else:
        r = w * 0.06
        draw.ellipse((mx - r, my - r, mx + r, my + r), fill=(150, 20, 60), outline=OUTLINE, width=lw)


def draw_background(img: Image.Image, rng: np.random.Generator) -> None:
    """Stripes, random shapes and face-like distractors."""
    draw = ImageDraw.Draw(img)
    W, H = img.size
    if rng.random() < 0.6:
        period = int(rng.integers(12, 60))
        color = _color(rng)
        vertical = rng.random() < 0.5
        for p in range(0, W if vertical else H, period):
            box = (p, 0, p + period // 2, H) if vertical else (0, p, W, p + period // 2)
            draw.rectangle(box, fill=color)
    for _ in range(int(rng.integers(4, 14))):
        x, y = rng.uniform(-50, W), rng.uniform(-50, H)
        s = rng.uniform(15, 160, size=2)
        shape = rng.integers(0, 3)
        color = _color(rng)
        if shape == 0:
            draw.rectangle((x, y, x + s[0], y + s[1]), fill=color)
        elif shape == 1:
            draw.ellipse((x, y, x + s[0], y + s[1]), fill=color, outline=OUTLINE if rng.random() < 0.5 else None)
        else:
            pts = [(x + rng.uniform(0, s[0]), y + rng.uniform(0, s[1])) for _ in range(3 + int(rng.integers(0, 3)))]
            draw.polygon(pts, fill=color)
    for _ in range(int(rng.integers(1, 4))):
        _draw_distractor(draw, W, H, rng)


def _draw_distractor(draw: ImageDraw.ImageDraw, W: int, H: int, rng: np.random.Generator) -> None:
    """A round object with spots (ball, cookie, clock, ladybird): face-like, not a face."""
    r = rng.uniform(15, 90)
    cx, cy = rng.uniform(0, W), rng.uniform(0, H)
    skin_like = rng.random() < 0.5
    fill = STYLES[str(rng.choice(CHARACTERS))].skin if skin_like else _color(rng)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=OUTLINE, width=max(1, round(r / 20)))
    kind = rng.integers(0, 3)
    if kind == 0:  # spots scattered anywhere
        for _ in range(int(rng.integers(3, 9))):
            a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.75 * r)
            sr = rng.uniform(0.06, 0.16) * r
            sx, sy = cx + d * np.cos(a), cy + d * np.sin(a)
            draw.ellipse((sx - sr, sy - sr, sx + sr, sy + sr), fill=_color(rng))
    elif kind == 1:  # clock: hands and ticks
        for k in range(12):
            a = k * np.pi / 6
            draw.line((cx + 0.8 * r * np.cos(a), cy + 0.8 * r * np.sin(a), cx + 0.92 * r * np.cos(a),
                       cy + 0.92 * r * np.sin(a)), fill=OUTLINE, width=2)
        draw.line((cx, cy, cx + 0.6 * r * np.cos(rng.uniform(0, 6.3)), cy + 0.6 * r * np.sin(rng.uniform(0, 6.3))),
                  fill=OUTLINE, width=3)
    else:  # two spots side by side, but one line across: not eyes and mouth
        for sx in (cx - 0.35 * r, cx + 0.35 * r):
            sy = cy + rng.uniform(-0.5, 0.5) * r
            draw.ellipse((sx - 0.12 * r, sy - 0.12 * r, sx + 0.12 * r, sy + 0.12 * r), fill=OUTLINE)
        draw.line((cx - r, cy + rng.uniform(-0.2, 0.6) * r, cx + r, cy + rng.uniform(-0.2, 0.6) * r), fill=OUTLINE,
                  width=3)


# ----------------------------------------------------------------------------- one image


def _place_faces(n: int, aspects: list[float], size: tuple[int, int], rng: np.random.Generator) -> list[tuple]:
    """Face boxes (float, may reach past the border) with little overlap and enough visible."""
    W, H = size
    placed: list[tuple[float, float, float, float]] = []
    for k in range(n):
        for _attempt in range(40):
            w = float(np.exp(rng.uniform(np.log(FACE_WIDTH[0]), np.log(FACE_WIDTH[1]))))
            h = w * aspects[k]
            if h > H * 0.95:
                continue
            cut = rng.random() < 0.2  # some faces cut by the border
            lo_x, hi_x = (-0.35 * w, W - 0.65 * w) if cut else (0, W - w - 1)
            lo_y, hi_y = (-0.35 * h, H - 0.65 * h) if cut else (0, H - h - 1)
            if hi_x <= lo_x or hi_y <= lo_y:
                continue
            x, y = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
            box = (x, y, x + w, y + h)
            vis = _clip(box, size)
            if vis[2] - vis[0] < MIN_VISIBLE or vis[3] - vis[1] < MIN_VISIBLE:
                continue
            # hair reaches ~20% above the oval, so keep faces apart with a margin
            grown = (x - 0.15 * w, y - 0.25 * h, x + 1.15 * w, y + 1.1 * h)
            if all(_overlap(grown, p) == 0 for p in placed):
                placed.append(box)
                break
    return placed


def _clip(box, size) -> tuple[int, int, int, int]:
    W, H = size
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return max(x0, 0), max(y0, 0), min(x1, W - 1), min(y1, H - 1)


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def render_image(
    faces: list[str], size: tuple[int, int], rng: np.random.Generator
) -> tuple[Image.Image, list[tuple[tuple[int, int, int, int], str]]]:
    """An image with the given faces (some may not fit and are left out); returns ``(image, [(box, label)])``."""
    W, H = size
    img = Image.new("RGB", size, _color(rng, lo=60, hi=230))
    draw_background(img, rng)
    draw = ImageDraw.Draw(img)
    styles = [STYLES[c] if c in STYLES else random_style(rng) for c in faces]
    boxes = _place_faces(len(faces), [s.aspect for s in styles], size, rng)
    annotations = []
    for box, style, label in zip(boxes, styles, faces):
        draw_face(draw, box, style, rng)
        annotations.append((_clip(box, size), label))
    noise = rng.normal(0, 6, size=(H, W, 3))
    pixels = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), annotations


def _faces_for_image(first: str | None, rng: np.random.Generator) -> list[str]:
    n = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1]))
    pool = [*CHARACTERS, UNKNOWN]
    p = [0.2, 0.2, 0.2, 0.2, 0.2]
    faces = [str(c) for c in rng.choice(pool, size=n, p=p)]
    if first is not None:
        faces[0] = first
    return faces


# ----------------------------------------------------------------------------- dataset


def _params(n_train_per_character: int, n_test: int, seed: int, size: tuple[int, int]) -> dict:
    return {"generator_version": GENERATOR_VERSION, "n_train_per_character": int(n_train_per_character),
            "n_test": int(n_test), "seed": int(seed), "size": [int(size[0]), int(size[1])],
            "characters": list(CHARACTERS)}


def _save_jpeg(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="JPEG", quality=90)


def _line(name: str, box, label: str | None) -> str:
    return " ".join([name, *(str(v) for v in box)] + ([label] if label else []))


def generate_dataset(out_root: str | Path, *, n_train_per_character: int = 60, n_test: int = 60, seed: int = 0,
                     size: tuple[int, int] = (480, 360)) -> Path:
    """Write the synthetic dataset under ``out_root`` (course layout, see the module docstring); return ``out_root``.

    Returns at once when ``out_root`` already holds a complete dataset made with the same parameters.
    Refuses (DataError) to write into a non-empty folder that is not an unfinished or identical
    synthetic dataset, so nothing of the user's is overwritten.
    """
    out_root = Path(out_root)
    params = _params(n_train_per_character, n_test, seed, size)
    _check_target(out_root, params)
    out_root.mkdir(parents=True, exist_ok=True)
    if (out_root / MANIFEST).exists():
        return out_root
    write_json(out_root / PARTIAL, params)
    train = out_root / "antrenare"
    for ci, char in enumerate(CHARACTERS):
        lines = []
        for i in range(1, n_train_per_character + 1):
            rng = np.random.default_rng([seed, 0, ci, i])
            name = f"{i:04d}.jpg"
            img, annotations = render_image(_faces_for_image(char, rng), size, rng)
            _save_jpeg(img, train / char / name)
            lines.extend(_line(name, box, label) for box, label in annotations)
        write_text(train / f"{char}_annotations.txt", "\n".join(lines) + "\n")
    test = out_root / "validare"
    task1, task2 = [], {c: [] for c in CHARACTERS}
    for i in range(1, n_test + 1):
        rng = np.random.default_rng([seed, 1, 0, i])
        name = f"{i:04d}.jpg"
        img, annotations = render_image(_faces_for_image(None, rng), size, rng)
        _save_jpeg(img, test / "validare" / name)
        for box, label in annotations:
            task1.append(_line(name, box, None))
            if label in task2:
                task2[label].append(_line(name, box, None))
    write_text(test / "task1_gt_validare.txt", "\n".join(task1) + "\n")
    for char, lines in task2.items():
        write_text(test / f"task2_{char}_gt_validare.txt", "\n".join(lines) + ("\n" if lines else ""))
    write_json(out_root / MANIFEST, params)  # last: marks the dataset complete
    (out_root / PARTIAL).unlink(missing_ok=True)  # another process (pytest -n 2) may have finished the same dataset
    return out_root


def _check_target(out_root: Path, params: dict) -> None:
    manifest, partial = out_root / MANIFEST, out_root / PARTIAL
    if manifest.exists():
        found = json.loads(manifest.read_text(encoding="utf-8"))
        if found != params:
            raise DataError(
                f"{out_root} holds a synthetic dataset made with other parameters ({found}); "
                "choose another folder or delete this one to regenerate"
            )
    elif partial.exists():
        found = json.loads(partial.read_text(encoding="utf-8"))
        if found != params:
            raise DataError(
                f"{out_root} holds an unfinished synthetic dataset made with other parameters ({found}); "
                "delete it or choose another folder"
            )
    elif out_root.exists() and any(out_root.iterdir()):
        raise DataError(
            f"{out_root} is not empty and is not a facecmp synthetic dataset; choose an empty or new folder "
            "(nothing was written)"
        )


def default_dataset_dir(*, n_train_per_character: int = 60, n_test: int = 60, seed: int = 0,
                        size: tuple[int, int] = (480, 360)) -> Path:
    """``$FACECMP_CACHE`` (or ``./.facecmp_cache``) ``/synthetic-<hash of the parameters>``."""
    params = _params(n_train_per_character, n_test, seed, size)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("FACECMP_CACHE") or Path.cwd() / ".facecmp_cache")
    return cache / f"synthetic-{digest}"


def ensure_default_dataset(**params) -> Path:
    """The synthetic dataset for ``params`` in the cache, generated the first time only."""
    return generate_dataset(default_dataset_dir(**params), **params)
