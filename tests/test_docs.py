"""The documentation stays true to the tree: the README's links, the site's nav, the layout map,
and what each package's ``__init__`` says it imports.

`make docs` (mkdocs build --strict) checks the links inside docs/; the README lives outside the
site, so its links are checked here, without mkdocs installed.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "facecmp"
DOCS = REPO / "docs"
README = REPO / "README.md"
NAMES = {"data", "detection", "evaluation", "training", "study", "bench", "errors", "atomic", "process"}

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (mkdocs) gives a heading."""
    text = re.sub(r"[`*_]", "", heading)  # markup, not text
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+?)\s*$", text, re.M)}


def local_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_slug_matches_the_anchors_mkdocs_writes():
    assert slug("Peers: what users would pick instead") == "peers-what-users-would-pick-instead"
    assert slug("Robustness-aware fine-tuning (`finetune --augment`)") == "robustness-aware-fine-tuning-finetune-augment"
    assert slug("Task 2 results (Dexter, our split)") == "task-2-results-dexter-our-split"


def test_readme_is_a_front_page_that_leads_with_the_answer():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    sections = re.findall(r"^## (.+)$", text, re.M)
    assert sections[0].startswith("The answer")
    answer = text.split("\n## ", 2)[1]
    rows = [line for line in answer.splitlines() if line.startswith("| **")]
    questions = ["target-domain AP", "source-domain AP", "robustness", "speed", "fine-tune minutes", "labels needed"]
    assert [q for q in questions if not any(q in row for row in rows)] == []
    for row in rows:  # each answer names the command that measured it, or says it is not measured yet
        assert re.search(r"`(pytest|python|facecmp) ", row) or "not yet measured" in row, row
    assert "make demo" in text and "make test" in text


def test_readme_links_point_at_files_and_headings_that_exist():
    links = local_links(README)
    assert len(links) >= 10, "no links found: the check would pass on nothing"
    broken = []
    for target in links:
        path, _, anchor = target.partition("#")
        page = (README.parent / path).resolve()
        if not page.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(page):
            broken.append(f"{target}: no heading #{anchor} in {path}")
    assert broken == []


def test_the_site_home_gets_the_readmes_answer_with_links_into_the_site():
    from mkdocs_hooks import MARK, answer_section

    assert MARK in (DOCS / "index.md").read_text(encoding="utf-8")
    section = answer_section(README.read_text(encoding="utf-8"))
    assert section.startswith("## The answer") and "| **target-domain AP**" in section
    assert "](docs/" not in section and "](results.md" in section


def _nav_files(nav) -> list[str]:
    files = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        files += _nav_files(value) if isinstance(value, list) else [value]
    return files


def test_the_site_nav_lists_every_page_and_only_pages_that_exist():
    yaml = pytest.importorskip("yaml", reason="pip install pyyaml (facecmp's test extra has it)")
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = _nav_files(config["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert [f for f in listed if not (DOCS / f).is_file()] == []
    assert sorted(listed) == pages


def _tree_modules() -> set[str]:
    found = {p for p in [*PACKAGE.rglob("*.py"), *(REPO / "benchmarks").glob("*.py")] if "__pycache__" not in p.parts}
    return {p.relative_to(REPO).as_posix() for p in found}


def test_the_layout_map_lists_every_module_and_only_modules_that_exist():
    text = (DOCS / "layout.md").read_text(encoding="utf-8")
    mapped = set(re.findall(r"^\| `((?:facecmp|benchmarks)/[\w/]+\.py)` \|", text, re.M))
    tree = _tree_modules()
    assert len(tree) > 40
    assert sorted(mapped - tree) == [], "listed in docs/layout.md but not in the tree"
    assert sorted(tree - mapped) == [], "in the tree but not listed in docs/layout.md"


def _imported_packages(package: Path) -> dict[str, str]:
    """``facecmp.<name> -> first file importing it`` over every module under ``package`` (function-level imports too)."""
    found: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] if node.module != "facecmp" else [f"facecmp.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                if parts[0] == "facecmp" and len(parts) > 1 and parts[1] != package.name:
                    found.setdefault(parts[1], path.relative_to(REPO).as_posix())
    return found


@pytest.mark.parametrize("name", ["data", "detection", "evaluation", "training", "study", "bench"])
def test_each_package_docstring_names_every_package_it_imports(name):
    package = PACKAGE / name
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
    said = re.search(r"Imports ([^.]*(?:\.\w[^.]*)*?)(?:\.\s|\.$)", doc)
    assert said, f"facecmp/{name}/__init__.py does not say what it imports"
    named = set(re.findall(r"[a-z]+", said.group(1))) & NAMES
    imported = _imported_packages(package)
    unnamed = {k: v for k, v in imported.items() if k not in named and k != "cli"}
    assert unnamed == {}, f"facecmp/{name}/__init__.py says it imports {sorted(named)}"
