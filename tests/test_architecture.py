"""The package tree is the architecture: data -> detection -> evaluation -> training -> study -> bench.

Every import in facecmp (at module top or inside a function) goes to the same layer or one to
its left; the shared helpers (errors, atomic, process) import no layer, and nothing imports the CLI
(but `facecmp/__main__.py`, which is `python -m facecmp`).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "facecmp"
LAYERS = ["data", "detection", "evaluation", "training", "study", "bench"]
HELPERS = {"errors", "atomic", "process"}


def _rank(module: str) -> int | None:
    """Layer index of a ``facecmp.*`` module; -1 for the shared helpers; None for the CLI / package root."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    if parts[1] in HELPERS:
        return -1
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("facecmp"):
            names = [node.module] if node.module != "facecmp" else [f"facecmp.{a.name}" for a in node.names]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("facecmp")]
    return found


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_layer_imports_only_from_itself_or_layers_before_it():
    wrong = []
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30, "no modules found: the check would pass on nothing"
    for path in modules:
        here = _module_name(path)
        mine = _rank(here)
        for line, target in _imports(path):
            theirs = _rank(target)
            if target.startswith("facecmp.cli") and here != "facecmp.__main__":  # `python -m facecmp` is the CLI's door
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} imports the CLI")
            elif here.split(".")[-1] in HELPERS and theirs not in (-1, None) and len(here.split(".")) == 2:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: helper {here} imports {target}")
            elif mine is not None and mine >= 0 and theirs is not None and theirs > mine:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} imports {target} (a later layer)")
    assert wrong == []


def test_relative_imports_are_not_used():
    """Absolute imports keep the layer of every dependency visible (and checkable above)."""
    relative = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                relative.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert relative == []


def _training_loop_functions(package: Path) -> set[str]:
    """``path:function`` of every function under ``package/training`` that builds a ``torch.optim`` optimizer or
    schedule, or calls ``.step()`` / ``.backward()``: the functions that make up a training loop."""
    found = set()
    for path in sorted((package / "training").rglob("*.py")):
        for func in ast.walk(ast.parse(path.read_text())):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                stepping = node.func.attr in ("step", "backward") and not node.args
                building = "torch.optim" in ast.unparse(node.func)
                if stepping or building:
                    found.add(f"{path.relative_to(package.parent).as_posix()}:{func.name}")
    return found


def test_one_training_loop_serves_one_process_and_ddp():
    """The cascade's stages train in one loop, whatever the number of processes (loop.train_stage with its
    epoch function run_epoch); the task-2 recognizer, another network, has its own. A second stage loop (as
    training/ddp.py was: its own optimizer, schedule and epochs) would show up here."""
    assert _training_loop_functions(PACKAGE) == {
        "facecmp/training/loop.py:run_epoch",
        "facecmp/training/loop.py:train_stage",
        "facecmp/training/recognizer.py:train_recognizer",
    }
    wrapping = sorted(p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.py")
                      if "DistributedDataParallel(" in p.read_text())
    assert wrapping == ["facecmp/training/distributed.py"], "only the distribution module wraps a net in DDP"
