"""The web app, served by ``salon serve``: the bundle ``web/scripts/build.mjs`` writes.

``GET /`` and the app's own routes (``/join/<id>``, ``/space/...``) answer ``index.html``;
``/assets/<name>`` the content-hashed files (cached for good: a new build has new names);
``/manifest.json`` what ``salon web verify`` compares. Text assets go gzip-compressed to
clients that accept it (compressed once per file version). Every response of the server (the
WebSocket upgrade, /health and errors included) carries the security headers below.

The bundle lives in ``spaces/web_dist/`` (shipped as package data) unless ``[server] web_dir``
names another directory. It is read from disk on each request, so a rebuild needs no restart;
without one, ``/`` answers 503 saying how to build it.

The invite secret is in the URL fragment, which browsers never send; this server keeps no
access log (``AppRunner(access_log=None)``), so no path or query is written anywhere either.
"""

from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path

from aiohttp import web

from spaces.config import Config

log = logging.getLogger(__name__)

PACKAGED_DIST = Path(__file__).resolve().parent.parent / "web_dist"

# libsodium.js runs as WebAssembly (it has no asm.js fallback): compiling it needs
# 'wasm-unsafe-eval', which allows WebAssembly compilation only — not eval() or new Function().
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    "script-src 'self' 'wasm-unsafe-eval'; "
    "style-src 'self'; "
    "img-src 'self' blob: data:; "
    "media-src 'self' blob:; "
    "connect-src 'self'; "
    "worker-src 'self'; "  # the SFrame worker is an asset of its own (no blob: workers)
    "base-uri 'none'; "
    "form-action 'none'; "
    "frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(self)",
}

IMMUTABLE = "public, max-age=31536000, immutable"

CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".txt": "text/plain",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
    ".json": "application/json",
}

ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")

NOT_BUILT_PAGE = """<!doctype html>
<html lang="en"><meta charset="utf-8"><title>Salon: the web app is not built</title>
<h1>The web app is not built</h1>
<p>This Salon server runs, but it has no web app to serve (its log says where it looked).</p>
<p>Build them from a checkout with <code>make run</code>, or
<code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>, then reload this page.
The command-line client works without them: <code>salon join 'LINK' --as NAME</code>.</p>
</html>
"""

WEB_DIR: web.AppKey[Path] = web.AppKey("web_dir", Path)
GZIPPED: web.AppKey[dict[tuple[str, int, int], bytes]] = web.AppKey("gzipped_assets", dict)
COMPRESSIBLE = {".js", ".css", ".txt", ".svg", ".json"}
MAX_GZIPPED_CACHE = 64  # assets of one or two builds

# The routes of the single-page app (web/src/ui): each answers index.html.
APP_ROUTES = ("/", "/join/{invite_id}", "/space", "/space/{tail:.*}")


def web_dir(config: Config) -> Path:
    """Where the built bundle is: ``[server] web_dir`` if set, else the packaged one."""
    return Path(config.server.web_dir) if config.server.web_dir else PACKAGED_DIST


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers["Server"] = "salon"  # no version: aiohttp's default names its own


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


async def index(request: web.Request) -> web.Response:
    root = request.app[WEB_DIR]
    page = _read(root / "index.html")
    if page is None:
        return web.Response(
            status=503,
            text=NOT_BUILT_PAGE,
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )
    return web.Response(
        body=page,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    suffix = Path(name).suffix
    if not ASSET_NAME.match(name) or ".." in name or suffix not in CONTENT_TYPES:
        raise web.HTTPNotFound()
    path = request.app[WEB_DIR] / "assets" / name
    body = _read(path)
    if body is None:
        raise web.HTTPNotFound()
    headers = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
    if suffix in COMPRESSIBLE and "gzip" in request.headers.get("Accept-Encoding", ""):
        # Compressed once per file version (name, size, mtime), not per request.
        stat = path.stat()
        key = (name, stat.st_size, stat.st_mtime_ns)
        cache = request.app[GZIPPED]
        if key not in cache:
            if len(cache) >= MAX_GZIPPED_CACHE:
                cache.clear()
            cache[key] = gzip.compress(body, compresslevel=9, mtime=0)
        body = cache[key]
        headers["Content-Encoding"] = "gzip"
    return web.Response(
        body=body,
        content_type=CONTENT_TYPES[suffix],
        charset="utf-8" if suffix in COMPRESSIBLE else None,
        headers=headers,
    )


async def manifest(request: web.Request) -> web.Response:
    body = _read(request.app[WEB_DIR] / "manifest.json")
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=body,
        content_type="application/json",
        headers={"Cache-Control": "no-cache"},
    )


async def no_icon(request: web.Request) -> web.Response:
    """Browsers ask for /favicon.ico unprompted; a 404 there is a console error on every page."""
    return web.Response(status=204, headers={"Cache-Control": IMMUTABLE})


def install_webapp(app: web.Application, config: Config) -> None:
    """Serve the web app from ``app`` and put the security headers on every response."""
    app[WEB_DIR] = web_dir(config)
    app[GZIPPED] = {}
    if not (app[WEB_DIR] / "index.html").is_file():
        log.warning("the web app is not built (no %s): / answers 503", app[WEB_DIR] / "index.html")
    app.on_response_prepare.append(add_security_headers)
    for route in APP_ROUTES:
        app.router.add_get(route, index)
    app.router.add_get("/assets/{name}", asset)
    app.router.add_get("/manifest.json", manifest)
    app.router.add_get("/favicon.ico", no_icon)
