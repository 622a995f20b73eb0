"""``[[recognition]]`` gates: task-2 mAP per recognizer kind, on the fine-tuned cascade's detections.

    [[recognition]]
    dataset = "default"            # the dataset table whose image choice the numbers were measured with
    recognizer = "finetune"        # a kind of facecmp.detection.recognizer.KINDS
    map_cava = 0.80                # minimum task-2 mAP (course AP); map_voc works too
    beats = "probe-pretrained"     # optional instead of a minimum: mAP >= the other kind's + by
    by = 0.02
    measured = 0.026               # what was measured when the gate was set (for beats: the difference);
                                   # facecmp.bench.audit holds the gate to gates.toml's [margins]

Read from the same gates.toml as the other gates (``parse_gates`` ignores this list).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from facecmp.bench.gates import FloorOrRelation, GatesFileError
from facecmp.detection.recognizer import KINDS

METRICS = ("map_cava", "map_voc")


@dataclass(frozen=True)
class RecognitionGate(FloorOrRelation):
    recognizer: str
    metric: str
    at_least: float | None = None
    beats: str | None = None
    by: float = 0.0
    measured: float | None = None  # the mAP (for beats: the difference) measured when the gate was set
    dataset: str | None = None

    @property
    def kinds(self) -> set[str]:
        """The recognizer kinds this gate reads."""
        return {self.recognizer} | ({self.beats} if self.beats else set())

    @property
    def name(self) -> str:
        where = f"recognition {self.dataset}" if self.dataset else "recognition"
        if self.beats is None:
            return f"{where}.{self.recognizer}.{self.metric} >= {self.at_least:.2f}"
        return f"{where}: {self.recognizer}.{self.metric} >= {self.beats} + {self.by:.2f}"

    def check(self, values: dict[str, dict[str, float]]) -> str | None:
        """None when it holds, else the failure message."""
        measured = values[self.recognizer][self.metric]
        if self.beats is None:
            if measured >= self.at_least:
                return None
            return f"gate {self.name} failed: measured {measured:.3f} (short by {self.at_least - measured:.3f})"
        other = values[self.beats][self.metric]
        if measured >= other + self.by:
            return None
        return f"gate {self.name} failed: {measured:.3f} vs {other:.3f}"


def _number(where: str, entry: dict, key: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GatesFileError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def load_recognition_gates(path: str | Path, dataset: str | None) -> list[RecognitionGate]:
    """The ``[[recognition]]`` gates of ``dataset`` (None: of every dataset) in the TOML file ``path``."""
    path = Path(path)
    if not path.is_file():
        return []
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("recognition", [])
    if not isinstance(entries, list):
        raise GatesFileError(f"{path}: 'recognition' must be a list of tables ([[recognition]])")
    gates = []
    for i, entry in enumerate(entries):
        where = f"{path}: [[recognition]] #{i + 1}"
        extra = set(entry) - {"dataset", "recognizer", "beats", "by", "measured", *METRICS}
        metrics = [m for m in METRICS if m in entry]
        if extra or entry.get("recognizer") not in KINDS or (len(metrics) != 1 and "beats" not in entry):
            raise GatesFileError(f"{where}: expected dataset = \"...\", recognizer = one of {', '.join(KINDS)}, and "
                                 f"one of {', '.join(METRICS)} = <minimum> or beats = \"<kind>\" [by = <margin>]"
                                 + (f"; unknown key(s) {', '.join(sorted(extra))}" if extra else ""))
        if dataset is not None and entry.get("dataset", dataset) != dataset:
            continue
        recorded = dict(measured=_number(where, entry, "measured"), dataset=entry.get("dataset", dataset) or "any")
        if "beats" in entry:
            if entry["beats"] not in KINDS:
                raise GatesFileError(f"{where}: beats must name one of {', '.join(KINDS)}")
            gates.append(RecognitionGate(entry["recognizer"], metrics[0] if metrics else "map_cava", beats=entry["beats"],
                                         by=_number(where, entry, "by") or 0.0, **recorded))
        else:
            gates.append(RecognitionGate(entry["recognizer"], metrics[0], at_least=_number(where, entry, metrics[0]), **recorded))
    return gates
