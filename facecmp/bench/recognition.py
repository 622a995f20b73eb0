"""``[[recognition]]`` gates: task-2 mAP per recognizer kind, on the fine-tuned cascade's detections.

    [[recognition]]
    dataset = "default"            # the dataset table whose image choice the numbers were measured with
    recognizer = "finetune"        # a kind of facecmp.detection.recognizer.KINDS
    map_cava = 0.80                # minimum task-2 mAP (course AP); map_voc works too
    beats = "probe-pretrained"     # optional instead of a minimum: mAP >= the other kind's + by
    by = 0.0

Read from the same gates.toml as the other gates (``parse_gates`` ignores this list).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from facecmp.bench.gates import GatesFileError
from facecmp.detection.recognizer import KINDS

METRICS = ("map_cava", "map_voc")


@dataclass(frozen=True)
class RecognitionGate:
    recognizer: str
    metric: str
    at_least: float | None = None
    beats: str | None = None
    by: float = 0.0

    @property
    def kinds(self) -> set[str]:
        """The recognizer kinds this gate reads."""
        return {self.recognizer} | ({self.beats} if self.beats else set())

    def check(self, values: dict[str, dict[str, float]]) -> str | None:
        """None when it holds, else the failure message."""
        measured = values[self.recognizer][self.metric]
        if self.beats is None:
            if measured >= self.at_least:
                return None
            return (f"gate recognition.{self.recognizer}.{self.metric} >= {self.at_least:.2f} failed: measured "
                    f"{measured:.3f} (short by {self.at_least - measured:.3f})")
        other = values[self.beats][self.metric]
        if measured >= other + self.by:
            return None
        return (f"gate recognition: {self.recognizer}.{self.metric} >= {self.beats} + {self.by:.2f} failed: "
                f"{measured:.3f} vs {other:.3f}")


def load_recognition_gates(path: str | Path, dataset: str) -> list[RecognitionGate]:
    path = Path(path)
    if not path.is_file():
        return []
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("recognition", [])
    if not isinstance(entries, list):
        raise GatesFileError(f"{path}: 'recognition' must be a list of tables ([[recognition]])")
    gates = []
    for i, entry in enumerate(entries):
        where = f"{path}: [[recognition]] #{i + 1}"
        extra = set(entry) - {"dataset", "recognizer", "beats", "by", *METRICS}
        metrics = [m for m in METRICS if m in entry]
        if extra or entry.get("recognizer") not in KINDS or (len(metrics) != 1 and "beats" not in entry):
            raise GatesFileError(f"{where}: expected dataset = \"...\", recognizer = one of {', '.join(KINDS)}, and "
                                 f"one of {', '.join(METRICS)} = <minimum> or beats = \"<kind>\" [by = <margin>]"
                                 + (f"; unknown key(s) {', '.join(sorted(extra))}" if extra else ""))
        if entry.get("dataset", dataset) != dataset:
            continue
        if "beats" in entry:
            if entry["beats"] not in KINDS:
                raise GatesFileError(f"{where}: beats must name one of {', '.join(KINDS)}")
            gates.append(RecognitionGate(entry["recognizer"], metrics[0] if metrics else "map_cava", beats=entry["beats"],
                                         by=float(entry.get("by", 0.0))))
        else:
            gates.append(RecognitionGate(entry["recognizer"], metrics[0], at_least=float(entry[metrics[0]])))
    return gates
