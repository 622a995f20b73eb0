"""The robustness grid's conditions: the corruptions' names and groups, their severities, and one
condition (``clean``, or a corruption at a severity), read from the text a command line gives.

The 19 photometric corruptions are the common corruptions (Hendrycks & Dietterich 2019; Michaelis
et al. 2019): the benchmark's 15 and its 4 held-out validation ones. Geometric conditions, which
matter for MTCNN on cartoons (faces shrink towards the minimum face size): ``scale`` (severities
1-4 = factors 0.75, 0.5, 0.35, 0.25) and ``mirror`` (a horizontal flip; severity 1 only). They
also transform the ground truth (:mod:`facecmp.study.robustness.geometric`).
"""

from __future__ import annotations

from dataclasses import dataclass

from facecmp.errors import DataError

# The common-corruption benchmark: 15 corruptions (noise, blur, weather, digital) ...
BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
# ... and its 4 held-out validation corruptions.
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
PHOTOMETRIC = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
SCALE_FACTORS = (0.75, 0.5, 0.35, 0.25)
GEOMETRIC = ("scale", "mirror")
ALL_CONDITIONS = PHOTOMETRIC + GEOMETRIC
SEVERITIES = (1, 2, 3, 4, 5)
# Named groups for ``--corruptions``.
GROUPS = {
    "benchmark": BENCHMARK_CORRUPTIONS,
    "extra": EXTRA_CORRUPTIONS,
    "all": PHOTOMETRIC,
    "geometric": GEOMETRIC,
}


class CorruptionError(DataError):
    """A corruption could not be applied (bad name, severity or image)."""


def valid_severities(name: str) -> tuple[int, ...]:
    """The severities a condition has: 1-5 for corruptions, 1-4 for scale, 1 for mirror."""
    if name == "scale":
        return tuple(range(1, len(SCALE_FACTORS) + 1))
    if name == "mirror":
        return (1,)
    return SEVERITIES


def parse_corruptions(text: str) -> tuple[str, ...]:
    """``all``, ``benchmark``, ``extra``, ``geometric`` or comma-separated names (groups may be mixed in)."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        for name in GROUPS.get(part, (part,)):
            if name not in ALL_CONDITIONS:
                raise CorruptionError(
                    f"unknown corruption {name!r}; valid: {', '.join(ALL_CONDITIONS)} (or a group: {', '.join(GROUPS)})"
                )
            if name not in names:
                names.append(name)
    if not names:
        raise CorruptionError(f"no corruption named in {text!r}; valid: {', '.join(ALL_CONDITIONS)}")
    return tuple(names)


def parse_severities(text: str) -> tuple[int, ...]:
    """``1,2,3,4,5`` (or ``3``, ``1-5``) -> sorted unique severities, each in 1-5."""
    values: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                values.update(range(lo, hi + 1))
            else:
                values.add(int(part))
        except ValueError:
            raise CorruptionError(f"severities {text!r}: expected integers 1-5 such as 1,2,3,4,5 or 3") from None
    bad = sorted(v for v in values if v not in SEVERITIES)
    if bad or not values:
        raise CorruptionError(f"severity {bad[0] if bad else text!r} is outside 1-5; severities are integers 1-5")
    return tuple(sorted(values))


def check_condition(name: str, severity: int) -> None:
    if name not in ALL_CONDITIONS:
        raise CorruptionError(f"unknown corruption {name!r}; valid: {', '.join(ALL_CONDITIONS)}")
    if severity not in valid_severities(name):
        raise CorruptionError(
            f"{name}: severity {severity!r} is outside {valid_severities(name)[0]}-{valid_severities(name)[-1]}"
        )


@dataclass(frozen=True)
class Condition:
    """One cell of the robustness grid: a corruption (or ``clean``) at a severity."""

    name: str
    severity: int = 0

    def __post_init__(self):
        if self.name == "clean":
            if self.severity != 0:
                raise CorruptionError("clean takes no severity")
        else:
            check_condition(self.name, self.severity)

    @property
    def label(self) -> str:
        return "clean" if self.name == "clean" else f"{self.name}-{self.severity}"


CLEAN = Condition("clean")
