"""The README stays a newcomer's page: short, and every link leads somewhere.

(That its journey works as written is tests/e2e/test_readme_journey.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_README_BYTES = 12 * 1024
# [text](target): a relative target is a file of the repository (an optional #anchor).
_LINK = re.compile(r"\]\((?!https?://|#)([^)#\s]+)(?:#[^)]*)?\)")
PAGES = ["README.md", *(f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md")))]


def test_the_readme_is_short_enough_to_read_to_the_end() -> None:
    size = len((REPO / "README.md").read_bytes())
    assert size <= MAX_README_BYTES, f"README.md is {size} bytes: move reference to docs/"


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_leads_to_a_file(page: str) -> None:
    path = REPO / page
    targets = _LINK.findall(path.read_text(encoding="utf-8"))
    missing = [t for t in targets if not (path.parent / t).exists()]
    assert missing == []


def test_the_readme_links_every_page_of_the_docs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert [p for p in PAGES[1:] if f"]({p})" not in readme] == []
