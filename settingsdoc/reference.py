"""Settings as `--help` and docs/reference.md show them: each key, its default as a TOML
file would write it, and what it means."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import textwrap
from collections.abc import Callable, Iterable, Mapping

# (key, default as TOML writes it or "(required)", meaning), in the order shown.
Reference = list[tuple[str, str, str]]


def package_version() -> str:
    """sessionha's installed version (`--version`, sessionha_build_info)."""
    try:
        return importlib.metadata.version("sessionha")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def toml_literal(value: object) -> str:
    """A default as the TOML file would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A TOML literal string keeps regular expressions readable (no doubled backslashes).
        return f"'{value}'" if "\\" in value and "'" not in value else json.dumps(value)
    return "(none)" if value is None else str(value)


def default_text(key: str, classes: Iterable[type], shown: Mapping[str, str]) -> str | None:
    """The default of `key`: `shown`'s word for it, else the field of that name in the first
    of the dataclasses `classes` that has one, "(required)" without a default; None when
    no class has it."""
    if key in shown:
        return shown[key]
    for cls in classes:
        for field in dataclasses.fields(cls):
            if field.name != key:
                continue
            if field.default is not dataclasses.MISSING:
                return toml_literal(field.default)
            if field.default_factory is not dataclasses.MISSING:
                return toml_literal(field.default_factory())
            return "(required)"
    return None


def settings_reference(
    meanings: Mapping[str, str], keys: Iterable[str], default_of: Callable[[str], str | None]
) -> Reference:
    """Every key: `meanings`' order first, then the keys it lacks (shown with "?")."""
    known = set(keys)
    ordered = [key for key in meanings if key in known] + sorted(known - meanings.keys())
    return [(key, default_of(key) or "?", meanings.get(key, "?")) for key in ordered]


def settings_epilog(reference: Reference) -> str:
    """The settings part of `--help`."""
    lines = ["settings (TOML keys, or upper case in the environment; durations in seconds):"]
    for key, default, meaning in reference:
        lines.append(f"  {key} {default}" if default.startswith("(") else f"  {key} = {default}")
        lines += textwrap.wrap(meaning, 79, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)
