"""Stand-in base images built locally (no registry is reachable from the test machines).

A Debian bookworm root file system made by mmdebstrap and imported with `docker import`
plays `python:3.12-slim`, and another with Debian's memcached plays the official
memcached image. Both are cached by tag: a label holds a digest of the recipe, so an
image is rebuilt only when its recipe changes.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .engine import DockerCommandError, image_label, run

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
RECIPE_LABEL = "sessionha.recipe"
BUILD_TIMEOUT = 900.0
# Documentation, manual pages and translations are dead weight in a container.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")


@dataclass(frozen=True)
class StandIn:
    """One stand-in image: what mmdebstrap puts in it and how `docker import` finishes it."""

    tag: str
    packages: tuple[str, ...]
    changes: tuple[str, ...]
    uploads: tuple[tuple[str, str], ...] = ()  # (file next to this module, path in the image)

    def recipe_digest(self) -> str:
        digest = hashlib.sha256(repr((SUITE, self.packages, self.changes, DPKG_EXCLUDES)).encode())
        for local, target in self.uploads:
            digest.update(target.encode())
            digest.update((HERE / local).read_bytes())
        return digest.hexdigest()[:16]


PYTHON = StandIn(
    tag="sessionha-test/python:bookworm",
    packages=("python3", "python3-venv", "python-is-python3", "ca-certificates"),
    changes=('CMD ["python3"]',),
)

MEMCACHED = StandIn(
    tag="sessionha-test/memcached:bookworm",
    packages=("memcached",),
    changes=(
        'ENTRYPOINT ["docker-entrypoint.sh"]',
        'CMD ["memcached"]',
        "USER memcache",
        "EXPOSE 11211",
    ),
    uploads=(("memcached-entrypoint.sh", "/usr/local/bin/docker-entrypoint.sh"),),
)


def debian_mirror() -> str:
    """SESSIONHA_DEBIAN_MIRROR, else the bookworm mirror of this machine's apt sources."""
    configured = os.environ.get("SESSIONHA_DEBIAN_MIRROR")
    if configured:
        return configured
    sources = Path("/etc/apt")
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in _bookworm_main_uris(text):
            if "security" not in uri:
                return uri
    return DEFAULT_MIRROR


def _bookworm_main_uris(text: str) -> list[str]:
    """URIs serving `bookworm main`, from one-line or deb822 apt sources."""
    found = re.findall(rf"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{SUITE}\s+.*\bmain\b", text, re.M)
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
        suites = fields.get("Suites", "").split()
        if SUITE in suites and "main" in fields.get("Components", "").split():
            found += fields.get("URIs", "").split()
    return found


def ensure(image: StandIn) -> str:
    """The image's tag, after building it unless an image of the same recipe is cached."""
    digest = image.recipe_digest()
    cached = image_label(image.tag, RECIPE_LABEL)
    if cached == digest:
        return image.tag
    hooks: list[str] = []
    for local, target in image.uploads:
        hooks += [f"--customize-hook=upload {HERE / local} {target}",
                  f'--customize-hook=chmod 755 "$1{target}"']
    mmdebstrap = [
        "mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(image.packages)}",
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES),
        *hooks, SUITE, "-", debian_mirror(),
    ]
    importer = ["docker", "import", f"--change=LABEL {RECIPE_LABEL}={digest}"]
    importer += [f"--change={change}" for change in image.changes]
    importer += ["-", image.tag]
    _pipe(mmdebstrap, importer)
    if cached is not None:  # the outdated image lost its tag: do not leave it behind
        run(["docker", "image", "prune", "--force", "--filter", f"label={RECIPE_LABEL}={cached}"],
            timeout=60, check=False)
    return image.tag


def _pipe(producer_args: list[str], consumer_args: list[str]) -> None:
    """producer | consumer, both bounded by BUILD_TIMEOUT, both reaped on every path."""
    with tempfile.TemporaryFile() as errors, subprocess.Popen(
        producer_args, stdout=subprocess.PIPE, stderr=errors
    ) as producer:
        try:
            consumer = subprocess.run(
                consumer_args, stdin=producer.stdout, capture_output=True, text=True,
                timeout=BUILD_TIMEOUT, check=False,
            )
            producer.wait(timeout=60)
        except subprocess.TimeoutExpired as exc:
            raise DockerCommandError(f"{producer_args[0]} | docker import: too slow") from exc
        finally:
            if producer.poll() is None:
                producer.kill()
                producer.wait(timeout=10)
        errors.seek(0)
        produced = errors.read().decode(errors="replace")
    if producer.returncode != 0 or consumer.returncode != 0:
        raise DockerCommandError(
            f"{' '.join(producer_args)} | {' '.join(consumer_args)} failed "
            f"({producer.returncode}, {consumer.returncode})\n{produced}\n{consumer.stderr}"
        )
