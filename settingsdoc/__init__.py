"""What every member's settings mean and default to, for `--help` and docs/reference.md,
and sessionha's version: one copy for the app server, the proxy and the launcher.

Standard library only, and it imports none of its users.
"""

from settingsdoc.reference import (
    Reference,
    default_text,
    package_version,
    settings_epilog,
    settings_reference,
    toml_literal,
)

__all__ = (
    "Reference",
    "default_text",
    "package_version",
    "settings_epilog",
    "settings_reference",
    "toml_literal",
)
