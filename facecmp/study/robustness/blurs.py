"""Two of the reference's slowest corruptions, zoom_blur and glass_blur, as code of ours that gives the
reference's exact pixels (``tests/test_corruptions.py`` compares them with the package) in less time."""

from __future__ import annotations

import numpy as np

from facecmp.study.robustness.compat import reference_module

# The reference zoom_blur's zoom factors per severity, as it lists them.
ZOOM_FACTORS = (
    (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03),
)


def zoom_blur(x, severity=1):
    """The reference zoom_blur (the frame averaged with centre crops of it zoomed back up), each
    zoom done one channel at a time: the same floats in half the time.

    The reference zooms the ``H x W x 3`` crop with factors ``(z, z, 1)``, so scipy's linear
    interpolation visits 8 neighbours of which the 4 on another channel weigh exactly 0; a 2-D zoom
    per channel sums the same 4 products (``tests/test_corruptions.py`` compares with the package).
    """
    from scipy.ndimage import zoom

    x = (np.array(x) / 255.0).astype(np.float32)
    height, width = x.shape[:2]
    out = np.zeros_like(x)
    factors = np.arange(*ZOOM_FACTORS[severity - 1])
    for factor in factors:
        crop_h, crop_w = int(np.ceil(height / float(factor))), int(np.ceil(width / float(factor)))
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        crop = x[top : top + crop_h, left : left + crop_w]
        layer = np.stack([zoom(crop[..., k], (factor, factor), order=1) for k in range(x.shape[2])], axis=-1)
        layer = layer[:height, :width]
        out[: layer.shape[0], : layer.shape[1]] += layer  # the reference's fallback when the zoom comes out short
    x = (x + out) / (len(factors) + 1)
    return np.clip(x, 0, 1) * 255


def glass_blur(x, severity=1):
    """The reference glass_blur, its pixel loop run on a flat index map (same draws, same pixels).

    The reference "swap" ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` works on numpy views, so it
    copies ``x[h', w']`` into ``x[h, w]`` and leaves ``x[h', w']`` as it was; :func:`glass_sources`
    works out where every pixel's value comes from, then the pixels are gathered once.
    """
    module = reference_module()
    gaussian = module.gaussian
    sigma, delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    x = np.uint8(gaussian(np.array(x) / 255.0, sigma=sigma, channel_axis=-1) * 255)
    height, width = x.shape[:2]
    flat = x.reshape(height * width, -1)
    rows = range(height - delta, delta, -1)
    columns = range(width - delta, delta, -1)
    for _ in range(iterations):
        # One draw of all offsets gives the same numbers, in the same order, as the reference's
        # draw of two per pixel (numpy's legacy generator; tested).
        offsets = np.random.randint(-delta, delta, size=(len(rows) * len(columns), 2))
        source = glass_sources(height, width, rows, columns, offsets[:, 1] * width + offsets[:, 0])
        flat = flat[source]
    x = flat.reshape(x.shape)
    return np.clip(gaussian(x / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


def glass_sources(height: int, width: int, rows: range, columns: range, shifts: np.ndarray) -> np.ndarray:
    """For the reference's pixel loop (``x[p] = x[p + shift]``, pixels ``p`` visited in ``rows`` x
    ``columns`` order, i.e. decreasing flat index): the flat index each pixel's value comes from.

    A visited pixel copies its source's value *at that moment*: the source's own new value when
    the source was visited before (a larger flat index, as the loop runs downwards), else its
    original value. Following those links to their end is pointer jumping: every round doubles
    the length of chain followed, so ~log2(pixels) vectorised rounds replace the per-pixel loop.
    """
    r = np.fromiter(rows, dtype=np.int64)
    c = np.fromiter(columns, dtype=np.int64)
    visited = (r[:, None] * width + c[None, :]).ravel()  # in the loop's order
    source = np.arange(height * width, dtype=np.int64)
    was_visited = np.zeros(height * width, dtype=bool)
    was_visited[visited] = True
    target = visited + np.asarray(shifts, dtype=np.int64)
    source[visited] = target
    # Links still to follow: visited pixels whose source was visited earlier (has a larger index).
    pending = visited[was_visited[target] & (target > visited)]
    linked = np.zeros(height * width, dtype=bool)
    linked[pending] = True
    while len(pending):
        nxt = source[pending]
        source[pending] = source[nxt]
        linked[pending] = linked[nxt]
        pending = pending[linked[pending]]
    return source
