"""Measure what every gate of benchmarks/gates.toml gates, and print it in the file's format.

    python benchmarks/measure_gates.py                                  # the built-in generated data
    python benchmarks/measure_gates.py --speed-runs 3 -- --facecmp-data ../shared/datasets/dexter \
        --facecmp-split split:50 --facecmp-dev 100 --facecmp-workers 2    # the [dexter] table

Runs the accuracy benchmarks once (every variant; arguments after ``--`` go to pytest) and the
speed gates ``--speed-runs`` times, each run its own process, then prints, for every gate of
the dataset's table and of the speed lists: the gate as it is now, what was measured, and the
gate line to paste, with ``measured`` recorded and the gate set ``[margins]`` below it (accuracy)
or at the slowest run (speed). It changes no file: read, then edit gates.toml.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _pytest(args: list[str]) -> int:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    print("$", shlex.join(command), flush=True)
    return subprocess.run(command, cwd=HERE.parent).returncode


def accuracy(extra: list[str], out: Path) -> dict[str, dict[str, float]]:
    _pytest([str(HERE / "test_accuracy.py"), "--facecmp-report", str(out), *extra])
    results = json.loads((out / "results.json").read_text())
    return {v["name"]: v for v in results["variants"]}


def speed_runs(extra: list[str], runs: int, out: Path) -> dict[str, list[float]]:
    """Gate name -> the ratio measured in each run (from the tests' recorded properties)."""
    ratios: dict[str, list[float]] = {}
    for i in range(runs):
        xml = out / f"speed{i}.xml"
        _pytest([str(HERE / "test_speed.py"), "-k", "speed_gate", "--junitxml", str(xml), *extra])
        for case in ET.parse(xml).iter("testcase"):
            for prop in case.iter("property"):
                if prop.get("name") == "measured_ratio":
                    ratios.setdefault(case.get("name"), []).append(float(prop.get("value")))
    return ratios


def _floor(value: float, step: float = 0.01) -> float:
    return math.floor(round(value / step, 6)) * step


def _ceil(value: float, step: float = 0.01) -> float:
    return math.ceil(round(value / step, 6)) * step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed-runs", type=int, default=3, help="runs of the speed gates (>= 3 for a gate; 0: none)")
    parser.add_argument("--gates", default=str(HERE / "gates.toml"))
    parser.add_argument("--speed-only", action="store_true", help="measure the speed gates only")
    parser.add_argument("pytest_args", nargs="*", help="after --: options for pytest (--facecmp-data ...)")
    args = parser.parse_args(argv)

    from facecmp.bench.gates import DEFAULT_MARGINS, SpeedGate, load_document, parse_gates

    data = next((args.pytest_args[i + 1] for i, a in enumerate(args.pytest_args[:-1]) if a == "--facecmp-data"), None)
    dataset = "default" if data is None else Path(data).resolve().name
    doc = load_document(args.gates)
    margin = {**DEFAULT_MARGINS, **doc.get("margins", {})}
    gates = parse_gates(doc, dataset, Path(args.gates))
    command = "python benchmarks/measure_gates.py " + shlex.join(
        [f"--speed-runs={args.speed_runs}"] + (["--speed-only"] if args.speed_only else [])
        + (["--", *args.pytest_args] if args.pytest_args else [])
    )
    today = datetime.date.today().isoformat()

    with tempfile.TemporaryDirectory() as tmp:
        measured = {} if args.speed_only else accuracy(args.pytest_args, Path(tmp) / "report")
        ratios = speed_runs(args.pytest_args, args.speed_runs, Path(tmp)) if args.speed_runs else {}

    print(f"\n# [{dataset}]: paste into {args.gates}")
    print(f'measured_date = "{today}"\nmeasured_command = "{command}"')
    print("#   variant  " + "  ".join(f"{m:>9}" for m in ("ap_cava", "ap_voc", "recall", "precision")) + "  thresholds")
    for name, v in measured.items():
        print(f"#   {name:<22} " + "  ".join(f"{v[m]:9.3f}" for m in ("ap_cava", "ap_voc", "recall", "precision"))
              + f"  {v['settings'].get('thresholds')}")
    for gate in [] if args.speed_only else gates.minimums:
        value = measured.get(gate.variant, {}).get(gate.metric)
        if value is None:
            print(f"# {gate.name}: {gate.variant} was not measured")
            continue
        print(f"# [{dataset}.{gate.variant}] now {gate.minimum}, measured {value:.3f}")
        print(f"{gate.metric} = {{ at_least = {_ceil(value - margin['accuracy']):.2f}, measured = {value:.3f} }}")
    for gate in [] if args.speed_only else gates.relations:
        try:
            a, b = (measured[v][gate.metric] for v in gate.variants)
        except KeyError:
            print(f"# {gate.name}: {', '.join(gate.variants)} not all measured")
            continue
        if hasattr(gate, "by"):
            print(f"# {gate.name} (now by = {gate.by}): measured {a - b:+.3f}")
            print(f"by = {_ceil(a - b - margin['accuracy']):.2f}\nmeasured = {a - b:.3f}")
        else:
            print(f"# {gate.name} (now tolerance = {gate.tolerance}): measured {abs(a - b):.3f}")
            print(f"tolerance = {abs(a - b) + margin['within']:.3f}\nmeasured = {abs(a - b):.3f}")
    for gate in gates.speed + gates.process_speed:
        assert isinstance(gate, SpeedGate)
        runs = next((r for name, r in ratios.items() if gate.name.replace(" ", "_") in name), None)
        if not runs:
            print(f"# {gate.name}: not measured (--speed-runs 0, or its variants were not selected)")
            continue
        print(f"# [[{gate.scope}]] {gate.name}: runs {', '.join(f'{r:.2f}' for r in runs)}")
        print(f"at_least = {_floor(min(runs)):.2f}\nmeasured = [{', '.join(f'{r:.2f}' for r in runs)}]\n"
              f'date = "{today}"\ncommand = "{command}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
