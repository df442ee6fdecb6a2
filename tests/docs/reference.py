"""The settings tables of docs/reference.md, printed from the code's own tables.

Each member's settings come from the same function its `--help` uses
(`appserver.__main__.settings_reference()`, `proxy.__main__.settings_reference()`,
`cluster.topology.MEMBER_KEYS`), so the docs, the help and the settings classes agree.
Between `<!-- settings:NAME -->` and `<!-- /settings:NAME -->` the file holds what
`render_table` prints; everything else in it is written by hand.

    scripts/settings-reference          rewrite the tables in docs/reference.md
    scripts/settings-reference --check  exit 1 when they are out of date
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Row = tuple[str, str, str]  # key, default (TOML literal or "(words)"), meaning

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
SECTION = re.compile(
    r"(<!-- settings:(?P<name>[a-z]+) -->\n)(?P<body>.*?)(<!-- /settings:(?P=name) -->)",
    re.DOTALL,
)


def launcher_rows() -> list[Row]:
    from cluster.topology import MEMBER_KEYS

    return list(MEMBER_KEYS)


def appserver_rows() -> list[Row]:
    from appserver.__main__ import settings_reference

    return settings_reference()


def proxy_rows() -> list[Row]:
    from proxy.__main__ import settings_reference

    return settings_reference()


SOURCES: dict[str, Callable[[], list[Row]]] = {
    "launcher": launcher_rows,
    "appserver": appserver_rows,
    "proxy": proxy_rows,
}


def _pipes(text: str) -> str:
    """A pipe would end the table cell, even inside `code`."""
    return text.replace("|", "\\|")


def _text(text: str) -> str:
    """Plain cell text: <regex> would vanish as an HTML tag."""
    return _pipes(text).replace("<", "&lt;").replace(">", "&gt;")


def render_table(rows: Sequence[Row]) -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in rows:
        shown = default.strip("()") if default.startswith("(") else f"`{_pipes(default)}`"
        lines.append(f"| `{key}` | {shown} | {_text(meaning)} |")
    return "\n".join(lines) + "\n"


def current_document(text: str) -> str:
    """`text` with every settings section replaced by the table the code prints now."""

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in SOURCES:
            raise KeyError(f"docs/reference.md: unknown settings section {name!r}")
        return f"{match[1]}{render_table(SOURCES[name]())}{match[4]}"

    return SECTION.sub(replace, text)


def documented_keys(text: str) -> dict[str, list[str]]:
    """The keys each settings section of `text` lists, read back from its table rows."""
    return {
        match["name"]: re.findall(r"^\| `([^`]+)` \|", match["body"], re.MULTILINE)
        for match in SECTION.finditer(text)
    }


def main(argv: Sequence[str]) -> int:
    text = REFERENCE.read_text(encoding="utf-8")
    fresh = current_document(text)
    if "--check" in argv:
        if fresh != text:
            print(f"{REFERENCE} is out of date: run scripts/settings-reference", file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        REFERENCE.write_text(fresh, encoding="utf-8")
        print(f"rewrote the settings tables of {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
