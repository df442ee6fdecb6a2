"""docs/reference.md, `--help` and the settings classes say the same thing.

Keys are read from the settings themselves (`appserver.settings.known_keys()`,
`proxy.settings.KNOWN_KEYS`, the launcher's `MEMCACHED_KEYS`), so a key added there and
not documented fails here, naming it.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from appserver.__main__ import MEANINGS as APPSERVER_MEANINGS
from appserver.settings import known_keys
from cluster.topology import MEMCACHED_KEYS
from proxy.__main__ import MEANINGS as PROXY_MEANINGS
from proxy.settings import KNOWN_KEYS

from .reference import REFERENCE, SOURCES, current_document, documented_keys

REPO = Path(__file__).resolve().parents[2]
HOW = "add it to MEANINGS in {where}, then run scripts/settings-reference"
REAL_KEYS = {
    "launcher": (frozenset(MEMCACHED_KEYS), "cluster/topology.py (MEMBER_KEYS)"),
    "appserver": (known_keys(), "appserver/__main__.py"),
    "proxy": (frozenset(KNOWN_KEYS), "proxy/__main__.py"),
}


@pytest.mark.parametrize("member", sorted(REAL_KEYS))
def test_every_key_is_documented_and_every_documented_key_is_real(member: str) -> None:
    real, where = REAL_KEYS[member]
    rows = SOURCES[member]()
    described = [key for key, default, meaning in rows if "?" not in (default, meaning)]
    assert sorted(real - set(described)) == [], HOW.format(where=where)
    assert sorted({key for key, _, _ in rows} - real) == [], f"not a setting: remove from {where}"
    documented = documented_keys(REFERENCE.read_text(encoding="utf-8"))[member]
    assert sorted(real - set(documented)) == [], "undocumented: run scripts/settings-reference"
    assert sorted(set(documented) - real) == [], "not settings: run scripts/settings-reference"


@pytest.mark.parametrize(
    ("meanings", "member"), [(APPSERVER_MEANINGS, "appserver"), (PROXY_MEANINGS, "proxy")]
)
def test_no_meaning_is_left_for_a_key_that_is_gone(meanings: dict[str, str], member: str) -> None:
    real, where = REAL_KEYS[member]
    assert sorted(meanings.keys() - real) == [], f"not settings any more: remove from {where}"


def test_the_settings_tables_are_the_ones_the_code_prints() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    assert set(documented_keys(text)) == set(SOURCES)
    assert current_document(text) == text, "docs/reference.md is stale: scripts/settings-reference"


@pytest.mark.parametrize(
    ("command", "member"),
    [
        (["-m", "appserver"], "appserver"),
        (["-m", "proxy"], "proxy"),
        (["-m", "cluster", "up"], "launcher"),
    ],
    ids=["appserver", "proxy", "sessionha-up"],
)
def test_help_lists_every_setting_with_its_default(command: list[str], member: str) -> None:
    result = subprocess.run(
        [sys.executable, *command, "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    for key, default, _ in SOURCES[member]():
        shown = f"  {key} {default}" if default.startswith("(") else f"  {key} = {default}"
        assert f"\n{shown}\n" in result.stdout, f"{shown!r} not in --help"


@pytest.mark.parametrize(
    "command", [["-m", "appserver"], ["-m", "proxy"], ["-m", "cluster"]], ids=lambda c: c[1]
)
def test_version_is_the_package_version(command: list[str]) -> None:
    with (REPO / "pyproject.toml").open("rb") as file:
        version = tomllib.load(file)["project"]["version"]
    assert importlib.metadata.version("sessionha") == version
    result = subprocess.run(
        [sys.executable, *command, "--version"], capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout.split()[-1]) == (0, version), result.stderr
