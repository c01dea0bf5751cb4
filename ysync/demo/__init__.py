"""The demo editor page that ``ysync serve`` answers at ``GET /`` (setting ``server.demo``).

A ``<textarea>`` bound to a ``Y.Text`` of the room ``?room=`` (default ``demo``) on this very
server (or on the one ``?server=ws://host:port`` names), with the connection status and the
people online. Its script
(``static/editor.js``) is yjs + y-websocket + ``src/editor.js``, bundled and minified by
``scripts/build_demo`` at the versions of ``src/package-lock.json`` and committed, so the page
needs neither a CDN nor Node.js at run time (licenses: ``LICENSES/THIRD-PARTY``).

:func:`demo_response` maps a request path to one of a fixed table of files, read once from the
package; nothing from the request ever becomes a filesystem path.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources

from ysync.errors import YsyncError

#: The page may load its own script and style and nothing else. It opens one WebSocket: to its
#: own host (CSP 3: ``'self'`` matches ws: and wss: of the page's host and port) or to the server
#: ``?server=`` names, which can be any host, hence ``ws: wss:`` (a ``fetch`` elsewhere stays
#: refused). That gives up no secret: the page is static, holds no token or cookie, runs no
#: script but its own (``script-src``), and sends the text typed into it only to the server its
#: address names, which it shows.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: The 404 body of ``GET /`` while the page is off.
DEMO_OFF = ("ysync: this is a Yjs sync server; connect a y-websocket client to "
            "ws://<this host>/<room>. The demo page is off (setting server.demo).\n")

_PAGE = "index.html"
_ASSETS = ("static/editor.js", "static/editor.css")
# request path -> (file in this package, content type): the whole of what is served
_FILES = {
    "/": (_PAGE, "text/html; charset=utf-8"),
    "/index.html": (_PAGE, "text/html; charset=utf-8"),
    "/static/editor.js": ("static/editor.js", "text/javascript; charset=utf-8"),
    "/static/editor.css": ("static/editor.css", "text/css; charset=utf-8"),
}
# the page revalidates; the script and style are named by their hash in it, so they can be kept
_PAGE_CACHE = "no-cache"
_ASSET_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class DemoResponse:
    """An HTTP response of the demo page: status, headers (``Content-Length`` included), body."""

    status: HTTPStatus
    headers: tuple[tuple[str, str], ...]
    body: bytes


def demo_response(path: str) -> DemoResponse | None:
    """The response to ``GET path`` (without its query string), or None if it is no demo file."""
    return _responses().get(path)


def demo_off_response(path: str) -> DemoResponse | None:
    """The 404 that ``GET /`` answers while the page is off (it says why), else None."""
    if path not in ("/", "/index.html"):
        return None
    return _response(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", "no-cache",
                     DEMO_OFF.encode())


@functools.cache
def _responses() -> dict[str, DemoResponse]:
    package = resources.files(__name__)
    content = {name: package.joinpath(name).read_bytes() for name, _ in _FILES.values()}
    # a new bundle gets a new URL, so a browser never runs an old script with a new page
    page = content[_PAGE]
    for asset in _ASSETS:
        tag = hashlib.sha256(content[asset]).hexdigest()[:16]
        linked = page.replace(f'"{asset}"'.encode(), f'"{asset}?v={tag}"'.encode())
        if linked == page:
            raise YsyncError(f"ysync/demo/{_PAGE} does not link {asset}")
        page = linked
    content[_PAGE] = page
    return {
        path: _response(HTTPStatus.OK, kind, _PAGE_CACHE if name == _PAGE else _ASSET_CACHE,
                        content[name])
        for path, (name, kind) in _FILES.items()
    }


def _response(status: HTTPStatus, kind: str, cache: str, body: bytes) -> DemoResponse:
    headers = (
        ("Content-Type", kind),
        ("Content-Length", str(len(body))),
        ("Cache-Control", cache),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    )
    return DemoResponse(status, headers, body)


__all__ = ["CONTENT_SECURITY_POLICY", "DEMO_OFF", "DemoResponse", "demo_off_response",
           "demo_response"]
