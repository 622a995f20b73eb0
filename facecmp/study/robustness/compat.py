"""The reference corruption package, importable and correct on today's stack.

The 19 photometric corruptions are the reference package's own code (``imagecorruptions``
1.1.2, the implementation published COCO-C / Pascal-C numbers use), loaded through a small
compatibility layer for today's stack. That package was written for numpy 1 and scikit-image
< 0.19; on ours five things break, and each is mended *outside* its code, so every formula
stays the reference's:

- ``from pkg_resources import resource_filename`` (setuptools >= 81 has no ``pkg_resources``):
  a stand-in module answers it while the package is imported, resolving the frost pictures
  inside the installed package, then goes away again;
- ``gaussian(..., multichannel=True)`` in glass_blur and gaussian_blur (removed in scikit-image
  0.19): the package's ``gaussian`` name is bound to a wrapper that passes ``channel_axis=-1``,
  which is what ``multichannel=True`` meant;
- ``np.float_`` in fog's plasma fractal (removed in numpy 2): the package's ``np`` name is bound
  to a view of numpy whose ``float_`` is ``float64``, the type it aliased;
- impulse_noise's ``sk.util.random_noise`` ignores numpy's global random state since
  scikit-image 0.19 (a fresh unseeded generator per call): its generator is seeded from that
  state instead, so impulse_noise is deterministic like the others;
- glass_blur's per-pixel Python loop (seconds per frame) is replaced by the same loop over a
  flat index map: the same random draws in the same order give the same pixels (tested
  against the reference loop), about 20x faster (:mod:`facecmp.study.robustness.blurs`, with
  zoom_blur's per-channel zoom).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from functools import lru_cache
from pathlib import Path

import numpy as np

from facecmp.errors import FacecmpError

INSTALL_HINT = "pip install 'facecmp[robustness]' (imagecorruptions==1.1.2 --no-deps, scikit-image, scipy, opencv-python-headless)"


def missing_dependency() -> str | None:
    """One line naming what to install when the robustness extra is absent, else None."""
    missing = [m for m in ("imagecorruptions", "skimage", "scipy", "cv2") if importlib.util.find_spec(m) is None]
    if missing:
        return f"corruptions need the robustness extra ({', '.join(missing)} missing): {INSTALL_HINT}"
    return None


def _gaussian_channel_axis(gaussian):
    """scikit-image's ``gaussian`` accepting the removed ``multichannel=True`` (= ``channel_axis=-1``)."""

    def compat(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs.setdefault("channel_axis", -1)
        return gaussian(image, *args, **kwargs)

    return compat


def _module_view(module: types.ModuleType, **overrides) -> types.ModuleType:
    """A stand-in for ``module`` that answers ``overrides`` and delegates every other name."""
    view = types.ModuleType(module.__name__)
    view.__getattr__ = lambda attr: getattr(module, attr)  # type: ignore[attr-defined]
    for name, value in overrides.items():
        setattr(view, name, value)
    return view


def _random_noise_from_global_state(random_noise):
    """scikit-image's ``random_noise`` drawing its generator's seed from numpy's global state.

    Since scikit-image 0.19, ``random_noise`` without ``rng`` uses a fresh, unseeded generator
    (impulse_noise would differ on every call); older versions drew from the global state.
    """

    def compat(image, *args, rng=None, **kwargs):
        if rng is None:
            rng = int(np.random.randint(0, 2**31 - 1))
        return random_noise(image, *args, rng=rng, **kwargs)

    return compat


@contextlib.contextmanager
def _pkg_resources_stand_in():
    """Provide ``pkg_resources.resource_filename`` while the reference package is imported."""
    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        yield
        return
    stand_in = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        spec = importlib.util.find_spec(package)
        return str(Path(spec.origin).parent / resource)

    stand_in.resource_filename = resource_filename  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = stand_in
    try:
        yield
    finally:
        sys.modules.pop("pkg_resources", None)


@lru_cache(maxsize=None)
def reference_module() -> types.ModuleType:
    """``imagecorruptions.corruptions`` as shipped, importable on this stack (nothing patched yet)."""
    import warnings

    try:
        with _pkg_resources_stand_in(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module("imagecorruptions.corruptions")
    except ImportError as exc:
        raise FacecmpError(missing_dependency() or f"cannot import imagecorruptions ({exc}): {INSTALL_HINT}") from None
    return module


@lru_cache(maxsize=None)
def patched_module() -> types.ModuleType:
    """:func:`reference_module` with the compatibility fixes applied to the package's names (once)."""
    module = reference_module()
    if not getattr(module, "_facecmp_compat", False):
        module.gaussian = _gaussian_channel_axis(module.gaussian)
        module.np = _module_view(np, float_=np.float64)
        sk = module.sk
        util = _module_view(sk.util, random_noise=_random_noise_from_global_state(sk.util.random_noise))
        module.sk = _module_view(sk, util=util)
        module._facecmp_compat = True
    return module
