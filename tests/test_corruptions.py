"""Corruptions: the reference package's pixels, determinism, scale/mirror ground truth, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from facecmp.errors import DataError
from facecmp.study.robustness.apply import apply_condition, condition_seed, corrupt
from facecmp.study.robustness.compat import _gaussian_channel_axis, missing_dependency, reference_module
from facecmp.study.robustness.conditions import BENCHMARK_CORRUPTIONS, PHOTOMETRIC, Condition, parse_corruptions, parse_severities
from facecmp.study.robustness.geometric import mirror_boxes, scale_boxes

if missing_dependency():
    pytest.skip(missing_dependency(), allow_module_level=True)


def frame(height=72, width=96, seed=3) -> np.ndarray:
    """A small frame with structure (gradients, a bright square) and some texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    img = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    img[height // 4 : height // 2, width // 4 : width // 2] = [250, 200, 40]
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def reference(image, name, severity, seed=0):
    """The reference package's ``corrupt`` with the global state seeded as facecmp seeds it."""
    module = reference_module()  # noqa: F841 (imports the package with the stand-in)
    import imagecorruptions

    np.random.seed(condition_seed(image, name, severity, seed))
    return imagecorruptions.corrupt(image, severity, corruption_name=name)


# The corruptions whose reference code runs unchanged on this stack (the others are checked below);
# zoom_blur is computed by our faster per-channel zoom and compared with the package's own here.
UNCHANGED = [n for n in PHOTOMETRIC if n not in ("glass_blur", "gaussian_blur", "fog", "impulse_noise")]


@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("name", UNCHANGED)
def test_gives_the_reference_packages_pixels(name, severity):
    image = frame()
    assert np.array_equal(corrupt(image, name, severity), reference(image, name, severity))


def test_gaussian_compat_is_what_multichannel_meant():
    """Old scikit-image ``gaussian(x, sigma, multichannel=True)``: per-channel 2-D filter, mode nearest."""
    from scipy import ndimage
    from skimage.filters import gaussian

    x = frame() / 255.0
    ours = _gaussian_channel_axis(gaussian)(x, sigma=2, multichannel=True)
    formula = ndimage.gaussian_filter(x, sigma=(2, 2, 0), mode="nearest", truncate=4.0)
    assert np.allclose(ours, formula, atol=1e-12)
    c = [1, 2, 3, 4, 6]
    image = frame()
    for severity in (1, 4):
        expected = np.uint8(np.clip(ndimage.gaussian_filter(image / 255.0, sigma=(c[severity - 1],) * 2 + (0,), mode="nearest"), 0, 1) * 255)
        assert np.array_equal(corrupt(image, "gaussian_blur", severity), expected)


def reference_glass_loop(x, severity):
    """The reference glass_blur's loop, verbatim (numpy views: the 'swap' copies one way)."""
    from skimage.filters import gaussian

    c = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    x = np.uint8(gaussian(np.array(x) / 255.0, sigma=c[0], channel_axis=-1) * 255)
    x_shape = np.array(x).shape
    for i in range(c[2]):
        for h in range(x_shape[0] - c[1], c[1], -1):
            for w in range(x_shape[1] - c[1], c[1], -1):
                dx, dy = np.random.randint(-c[1], c[1], size=(2,))
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return np.uint8(np.clip(gaussian(x / 255.0, sigma=c[0], channel_axis=-1), 0, 1) * 255)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_glass_blur_equals_the_reference_loop(severity):
    image = frame(48, 64)
    np.random.seed(condition_seed(image, "glass_blur", severity, 0))
    assert np.array_equal(corrupt(image, "glass_blur", severity), reference_glass_loop(image, severity))


def test_fog_equals_its_formula_on_the_reference_fractal():
    image = frame(40, 60)
    module = reference_module()
    corrupt(image, "contrast", 1)  # applies the compatibility layer
    for severity in (1, 5):
        c = [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][severity - 1]
        np.random.seed(condition_seed(image, "fog", severity, 0))
        plasma = module.plasma_fractal(mapsize=64, wibbledecay=c[1])[:40, :60, None]
        x = image / 255.0
        expected = np.uint8(np.clip((x + c[0] * plasma) * x.max() / (x.max() + c[0]), 0, 1) * 255)
        assert plasma.dtype == np.float64
        assert np.array_equal(corrupt(image, "fog", severity), expected)


def test_impulse_noise_is_salt_and_pepper_from_a_seeded_generator():
    from skimage.util import random_noise

    image = frame()
    amount = [0.03, 0.06, 0.09, 0.17, 0.27]
    for severity in (1, 5):
        np.random.seed(condition_seed(image, "impulse_noise", severity, 0))
        rng = int(np.random.randint(0, 2**31 - 1))
        expected = np.uint8(np.clip(random_noise(image / 255.0, mode="s&p", amount=amount[severity - 1], rng=rng), 0, 1) * 255)
        ours = corrupt(image, "impulse_noise", severity)
        assert np.array_equal(ours, expected)
        changed = (ours != image).mean()  # a fraction of the values (channels separately)
        assert amount[severity - 1] * 0.5 < changed < amount[severity - 1] * 1.5


def test_deterministic_seeded_and_leaves_the_callers_random_state():
    image = frame()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = corrupt(image, "gaussian_noise", 2)
    assert np.array_equal(np.random.get_state()[1], before)
    assert np.array_equal(a, corrupt(image, "gaussian_noise", 2))
    assert not np.array_equal(a, corrupt(image, "gaussian_noise", 2, seed=1))
    assert not np.array_equal(a, corrupt(frame(seed=4), "gaussian_noise", 2))


def test_same_pixels_in_another_process():
    image = frame()
    names = ["gaussian_noise", "impulse_noise", "frost", "motion_blur", "snow", "glass_blur"]
    code = (
        "import sys, numpy as np; from facecmp.study.robustness.apply import corrupt\n"
        "image = np.frombuffer(sys.stdin.buffer.read(), np.uint8).reshape(%r)\n"
        "for n in %r: sys.stdout.buffer.write(corrupt(image, n, 3).tobytes())\n"
    ) % (image.shape, names)
    out = subprocess.run([sys.executable, "-c", code], input=image.tobytes(), capture_output=True, check=True).stdout
    expected = b"".join(corrupt(image, n, 3).tobytes() for n in names)
    assert out == expected


def test_every_corruption_changes_the_image_and_severity_matters():
    image = frame()
    for name in PHOTOMETRIC:
        mild, strong = (corrupt(image, name, s) for s in (1, 5))
        assert mild.shape == strong.shape == image.shape and mild.dtype == np.uint8, name
        assert not np.array_equal(mild, image) and not np.array_equal(mild, strong), name


def test_scale_and_mirror_transform_the_ground_truth_inclusively():
    boxes = np.array([[0, 0, 479, 359], [100, 40, 139, 79], [470, 350, 479, 359]])
    assert mirror_boxes(boxes, 480).tolist() == [[0, 0, 479, 359], [340, 40, 379, 79], [0, 350, 9, 359]]
    assert np.array_equal(mirror_boxes(mirror_boxes(boxes, 480), 480), boxes)
    half = scale_boxes(boxes, (480, 360), (240, 180))
    assert half.tolist() == [[0, 0, 239, 179], [50, 20, 69, 39], [235, 175, 239, 179]]
    image = frame(360, 480)
    small, small_boxes = apply_condition(image, boxes, Condition("scale", 4))
    assert small.shape == (90, 120, 3)
    assert small_boxes.tolist()[1] == [25, 10, 34, 19]  # a 40 px face becomes 10 px
    flipped, flipped_boxes = apply_condition(image, boxes, Condition("mirror", 1))
    assert np.array_equal(flipped[:, ::-1], image)
    # the mirrored box covers the mirrored pixels
    x0, y0, x1, y1 = flipped_boxes[1]
    assert np.array_equal(flipped[y0 : y1 + 1, x0 : x1 + 1], image[40:80, 100:140][:, ::-1])


def test_bad_names_severities_and_images_are_clear_errors():
    with pytest.raises(DataError, match="unknown corruption 'blurr'.*gaussian_noise.*saturate"):
        parse_corruptions("gaussian_noise,blurr")
    assert parse_corruptions("benchmark") == BENCHMARK_CORRUPTIONS
    assert parse_corruptions("fog,all")[0] == "fog" and len(parse_corruptions("fog,all")) == 19
    with pytest.raises(DataError, match="severity 6 is outside 1-5"):
        parse_severities("1,6")
    with pytest.raises(DataError, match="severity 0 is outside 1-5"):
        parse_severities("0")
    assert parse_severities("3,1-2") == (1, 2, 3)
    with pytest.raises(DataError, match="outside 1-5"):
        corrupt(frame(), "fog", 6)
    with pytest.raises(DataError, match="outside 1-4"):
        Condition("scale", 5)
    with pytest.raises(DataError, match="at least 32x32"):
        corrupt(frame(20, 40), "fog", 1)
    with pytest.raises(DataError, match="uint8"):
        corrupt(frame().astype(np.float32), "fog", 1)
