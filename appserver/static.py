"""Static files under /static/, held in memory, with validators and long-lived caching.

The files are a handful of small assets shipped with the package, so they are read once
when the app is built; a request is a dict lookup. URLs carry a content hash (`?v=`), which
is what makes a long max-age safe.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

STATIC_DIR = Path(__file__).parent / "static"
CACHE_CONTROL = "public, max-age=86400"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str
    last_modified: str

    @property
    def version(self) -> str:
        return self.etag.strip('"')


def load_assets(directory: Path = STATIC_DIR) -> dict[str, Asset]:
    assets = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        body = path.read_bytes()
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if content_type.startswith("text/"):
            content_type += "; charset=utf-8"
        assets[path.name] = Asset(
            body=body,
            content_type=content_type,
            etag=f'"{hashlib.sha256(body).hexdigest()[:20]}"',
            last_modified=formatdate(path.stat().st_mtime, usegmt=True),
        )
    return assets


def asset_url(assets: dict[str, Asset], name: str) -> str:
    return f"/static/{name}?v={assets[name].version}"


def static_handler(assets: dict[str, Asset]) -> Handler:
    """GET/HEAD /static/{name}: 200 with validators, 304 when the client's copy is current."""

    async def serve_static(request: web.Request) -> web.StreamResponse:
        asset = assets.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound(text="no such static file")
        headers = {
            "Content-Type": asset.content_type,
            "Cache-Control": CACHE_CONTROL,
            "ETag": asset.etag,
            "Last-Modified": asset.last_modified,
        }
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None and etag_matches(asset.etag, if_none_match):
            return web.Response(status=304, headers=headers)
        return web.Response(body=asset.body, headers=headers)

    return serve_static


def etag_matches(etag: str, if_none_match: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match list against our strong ETag."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags
