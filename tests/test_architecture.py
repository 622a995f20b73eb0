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


def _module_paths() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _import_graph() -> dict[str, dict[str, int]]:
    """``module -> {imported facecmp module: line}`` over every import in the file, at module top or in a function.

    ``from x import y`` is an edge to ``x.y`` when that is a module, else to ``x``; ``import x.y`` is an
    edge to ``x.y``. Parent packages an import runs on the way are not edges (every submodule would
    otherwise cycle through its package's ``__init__``).
    """
    modules = _module_paths()
    graph: dict[str, dict[str, int]] = {}
    for here, path in modules.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("facecmp"):
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("facecmp")]
            else:
                continue
            for target in targets:
                if target in modules and target != here:
                    edges.setdefault(target, node.lineno)
        graph[here] = edges
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[tuple[list[str], list[str]]]:
    """The strongly connected components of more than one module (Tarjan), each with one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for component in components:  # one concrete cycle per component: a path back to its first module
        members, start = set(component), component[0]
        paths, seen = {start: [start]}, {start}
        queue = [start]
        while queue:
            node = queue.pop(0)
            for nxt in sorted(graph[node]):
                if nxt == start:
                    queue = []
                    cycles.append((component, paths[node] + [start]))
                    break
                if nxt in members and nxt not in seen:
                    seen.add(nxt)
                    paths[nxt] = paths[node] + [nxt]
                    queue.append(nxt)
    return cycles


def test_the_cycle_finder_finds_a_cycle_through_late_imports():
    graph = {"a": {"b": 1}, "b": {"c": 3}, "c": {"a": 7}, "d": {"a": 2}}
    assert _cycles(graph) == [(["a", "b", "c"], ["a", "b", "c", "a"])]
    assert _cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles_not_even_through_function_level_imports():
    graph = _import_graph()
    assert len(graph) > 30 and sum(map(len, graph.values())) > 100, "no imports found: the check would pass on nothing"
    named = []
    for component, cycle in _cycles(graph):
        steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
        named.append(" -> ".join(steps + [cycle[-1]]) + f"; in the cycle's component: {', '.join(component)}")
    assert named == []


def test_the_evaluation_layer_is_pure_it_never_runs_a_detector():
    """Evaluation scores detections it is given: no module of it imports the detection layer."""
    graph = _import_graph()
    evaluation = [m for m in graph if m.startswith("facecmp.evaluation")]
    assert len(evaluation) >= 5, "no evaluation modules found: the check would pass on nothing"
    wrong = [f"{m} imports {t} (line {line})" for m in evaluation for t, line in graph[m].items()
             if t.startswith("facecmp.detection")]
    assert wrong == []
