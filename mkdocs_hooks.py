"""MkDocs hook (mkdocs.yml `hooks:`): the site's home page shows the answer table of README.md.

README.md is the repository's front page and the one place of the answer; docs/index.md marks where
it goes with ``<!-- README: the answer -->``, and this copies README's "The answer" section there
at build time, its links made relative to docs/ (so `mkdocs build --strict` checks them too).
"""

from __future__ import annotations

import re
from pathlib import Path

MARK = "<!-- README: the answer -->"


def answer_section(readme: str) -> str:
    match = re.search(r"^## The answer.*?(?=^## )", readme, re.S | re.M)
    if match is None:
        raise ValueError("README.md has no '## The answer' section for the site's home page")
    return re.sub(r"\]\(docs/", "](", match.group(0))


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARK not in markdown:
        return markdown
    readme = (Path(config["config_file_path"]).parent / "README.md").read_text(encoding="utf-8")
    return markdown.replace(MARK, answer_section(readme))
