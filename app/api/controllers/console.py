"""`/console`: the operations console's static shell (`app/console/`), outside `/api/v1`.

The shell itself needs no token — it holds no data; every figure it shows comes from the admin
routes, called with the bearer token the page keeps in `sessionStorage` (no cookie, so nothing a
forged cross-site request could ride on). The assets are read from the installed package once,
when the app is built, and answered with their content type, `Cache-Control: no-cache` and an
`ETag` (304 on `If-None-Match`), under a strict Content-Security-Policy: scripts, styles and
sockets from this origin only, images also from the map tiles' host when `CONSOLE_TILE_URL` is set.
Only files of the package are served: any other name (`..`, a subfolder, a Python module) is 404.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.status_codes import HTTP_304_NOT_MODIFIED

from app.errors import NotFound
from app.settings import WebSettings

PACKAGE = "app.console"
INDEX = "index.html"
#: What may be served, by suffix (a `.py` of the package is not an asset); Litestar adds
#: `; charset=utf-8` to the `text/` ones.
MEDIA_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
#: The placeholder in `index.html` that carries `CONSOLE_TILE_URL` to the page.
TILE_META = b'<meta name="console-tile-url" content="">'


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def tile_source(tile_url: str) -> str:
    """The CSP source of the tiles' host (`https://{s}.tile.example.org/…` → `https://*.tile.example.org`)."""
    if not tile_url:
        return ""
    parts = urlsplit(tile_url)
    return f"{parts.scheme}://{parts.netloc.replace('{s}', '*')}"


def content_security_policy(tile_url: str) -> str:
    images = " ".join(filter(None, ("'self'", "data:", tile_source(tile_url))))
    return ("default-src 'self'; script-src 'self'; connect-src 'self' ws: wss:; "
            f"img-src {images}; style-src 'self'; base-uri 'none'; form-action 'self'; "
            "object-src 'none'; frame-ancestors 'none'")


def load_assets(tile_url: str) -> dict[str, Asset]:
    """Every servable file of the package by name; `index.html` carries the tile URL."""
    assets: dict[str, Asset] = {}
    for entry in resources.files(PACKAGE).iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or suffix not in MEDIA_TYPES:
            continue
        body = entry.read_bytes()
        if entry.name == INDEX:
            escaped = html.escape(tile_url, quote=True).encode()
            body = body.replace(TILE_META, b'<meta name="console-tile-url" content="' + escaped + b'">')
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[entry.name] = Asset(body, MEDIA_TYPES[suffix], etag)
    return assets


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def console_routes(web: WebSettings) -> list[HTTPRouteHandler]:
    """The console's two routes (the shell and its assets), left out of the OpenAPI schema."""
    assets = load_assets(web.console_tile_url)
    policy = content_security_policy(web.console_tile_url)

    def answer(request: Request[Any, Any, Any], name: str) -> Response[bytes]:
        asset = assets.get(name)
        if asset is None:
            raise NotFound("The console has no such file.", details={"asset": name[:100]})
        headers = {"Cache-Control": "no-cache", "ETag": asset.etag, "Content-Security-Policy": policy,
                   "X-Content-Type-Options": "nosniff"}
        if _matches(request.headers.get("if-none-match"), asset.etag):
            return Response(b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    @get(["/console", "/console/"], include_in_schema=False, name="console:shell")
    async def console_shell(request: Request[Any, Any, Any]) -> Response[bytes]:
        """The console's page (`index.html`); its routes are hash routes (`#/queues`, …)."""
        return answer(request, INDEX)

    @get("/console/{asset:str}", include_in_schema=False, name="console:asset")
    async def console_asset(request: Request[Any, Any, Any], asset: FromPath[str]) -> Response[bytes]:
        """One file of the console (`app.js`, `console.css`, …)."""
        return answer(request, asset)

    return [console_shell, console_asset]
