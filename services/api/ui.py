"""The web UI: the single-page app `make ui` builds into ``services/api/web/dist`` (Vue +
Vite), served by the api at its public address, so it needs no server of its own and
talks to the API on its own origin (no CORS, the session cookie stays ``SameSite=Strict``).

Routes (open: the page is no secret; every API call it makes carries its credentials):

* ``GET /`` -- ``index.html``, ``Cache-Control: no-cache``: a new build's asset names are
  seen on the next load.
* ``GET /assets/{path}`` -- Vite's output, named by content hash: cached for a year,
  ``immutable``. A missing one is a 404, not ``index.html``: a page of an older build must
  fail loudly rather than run HTML as a script.
* ``GET /{path}`` -- any other path but ``/api/...``, ``/healthz`` and ``/metrics`` (whose
  404s stay JSON: the route's pattern leaves them out): a file at the root of the build
  (``favicon.ico``: Vite copies ``public/`` there), else ``index.html``, so a deep link
  (``/runs/ID``) opens the app, whose router shows the page.

Without ``index.html`` (not built) these answer 503, saying how to build it. A path is
served only if each of its segments is a plain name (no ``..``, no hidden file, no
backslash) and the file it resolves to (symlinks followed) is inside the build.

``security_headers`` puts on every answer of the api: a Content-Security-Policy for a
self-contained SPA (Vite's builds need no inline script; inline styles are allowed for
components that set them), ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy:
same-origin`` (run and project names stay on this server).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.api.context import CONTEXT
from services.api.errors import ApiError

__all__ = ["CSP", "SECURITY_HEADERS", "security_headers", "ui_routes"]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin"}
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
# Not left to the host's mime.types, which differ between distributions.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".json": "application/json", ".map": "application/json",
    ".webmanifest": "application/manifest+json", ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
    ".avif": "image/avif", ".ico": "image/x-icon", ".woff": "font/woff",
    ".woff2": "font/woff2", ".ttf": "font/ttf", ".otf": "font/otf",
    ".wasm": "application/wasm",
}
# Every path but the API's own (and /healthz, /metrics): their 404s stay theirs.
_NOT_API = r"(?!(?:api|healthz|metrics)(?:/|$)).+"


def ui_routes() -> list[web.RouteDef]:
    return [
        web.get("/", _index),
        web.get("/assets/{path:.+}", _asset),
        web.get("/{path:" + _NOT_API + "}", _page),
    ]


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the headers every answer carries (a handler's own win)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


async def _index(request: web.Request) -> web.StreamResponse:
    return _file(_index_html(request), NO_CACHE)


async def _asset(request: web.Request) -> web.StreamResponse:
    dist = _built(request)
    found = _inside(dist / "assets", request.match_info["path"])
    if found is None:
        raise ApiError(404, f"no asset {request.match_info['path']!r} in this build of the "
                            "web UI (reload the page)")
    return _file(found, IMMUTABLE)


async def _page(request: web.Request) -> web.StreamResponse:
    """A file at the build's root, else the app itself (its router shows the path)."""
    found = _inside(_built(request), request.match_info["path"])
    return _file(found if found is not None else _index_html(request), NO_CACHE)


def _built(request: web.Request) -> Path:
    """The build's directory; a 503 saying how to make it when it has no index.html."""
    dist = request.app[CONTEXT].ui_dist
    if not (dist / "index.html").is_file():
        raise ApiError(503, f"the web UI is not built ({dist} has no index.html): build it "
                            "with `make ui` (npm in services/api/web), then reload; the API "
                            "works without it", "ui_not_built")
    return dist


def _index_html(request: web.Request) -> Path:
    return _built(request) / "index.html"


def _inside(root: Path, path: str) -> Path | None:
    """The file ``path`` names under ``root``; None unless every segment is a plain name
    and the file (symlinks followed) is inside ``root``."""
    parts = path.split("/")
    if any(not p or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
        return None
    try:
        found = root.joinpath(*parts).resolve(strict=True)
        inside = found.is_relative_to(root.resolve(strict=True)) and found.is_file()
    except (OSError, RuntimeError):  # missing, a loop of symlinks, a name too long
        return None
    return found if inside else None


def _file(path: Path, cache: str) -> web.FileResponse:
    kind = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return web.FileResponse(path, headers={"Content-Type": kind, "Cache-Control": cache})
