"""The demo page's fixed file table (ysync/demo): files, headers, and nothing else."""

from __future__ import annotations

import hashlib
import json
from http import HTTPStatus
from pathlib import Path

import pytest

from ysync.demo import CONTENT_SECURITY_POLICY, DEMO_OFF, demo_off_response, demo_response

DEMO = Path(__file__).resolve().parents[2] / "ysync" / "demo"


def headers_of(path: str) -> dict[str, str]:
    response = demo_response(path)
    assert response is not None, path
    return dict(response.headers)


@pytest.mark.parametrize(("path", "kind"), [
    ("/", "text/html; charset=utf-8"),
    ("/index.html", "text/html; charset=utf-8"),
    ("/static/editor.js", "text/javascript; charset=utf-8"),
    ("/static/editor.css", "text/css; charset=utf-8"),
])
def test_each_file_is_served_with_its_type_and_strict_headers(path: str, kind: str) -> None:
    response = demo_response(path)
    assert response is not None
    assert response.status == HTTPStatus.OK
    headers = dict(response.headers)
    assert len(headers) == len(response.headers), "no header twice"
    assert headers["Content-Type"] == kind
    assert headers["Content-Length"] == str(len(response.body))
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "Cache-Control" in headers


def test_the_policy_allows_only_the_page_s_own_script_and_style_and_a_socket() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"  # no inline script, no eval, no CDN
    assert directives["style-src"] == "'self'"
    # CSP 3: 'self' matches ws: and wss: of the page's own host and port; ?server= may name
    # a WebSocket anywhere else
    assert directives["connect-src"] == "'self' ws: wss:"
    assert directives["frame-ancestors"] == "'none'"


def test_the_page_links_its_script_and_style_by_content_hash() -> None:
    page = demo_response("/")
    assert page is not None and page == demo_response("/index.html")
    html = page.body.decode()
    for asset in ("static/editor.js", "static/editor.css"):
        served = demo_response(f"/{asset}")
        assert served is not None
        tag = hashlib.sha256(served.body).hexdigest()[:16]
        assert html.count(f'"{asset}?v={tag}"') == 1, html
    # relative links: the page also works below a proxy's path prefix
    assert "<style" not in html and "<script>" not in html, "inline code would need the CSP"
    assert headers_of("/")["Cache-Control"] == "no-cache"
    assert "immutable" in headers_of("/static/editor.js")["Cache-Control"]
    assert (DEMO / "index.html").read_text().count('src="static/editor.js"') == 1


def test_the_bundle_names_its_packages_and_their_licenses() -> None:
    bundle = demo_response("/static/editor.js")
    assert bundle is not None
    first_line = bundle.body.split(b"\n", 1)[0].decode()
    lock = json.loads((DEMO / "src" / "package-lock.json").read_text())["packages"]
    notice = (DEMO / "LICENSES" / "THIRD-PARTY").read_text()
    for name in ("yjs", "y-websocket", "lib0", "y-protocols"):
        version = lock[f"node_modules/{name}"]["version"]
        assert f"{name} {version}" in first_line
        assert f"\n{name} {version}\n" in notice
    assert notice.count("Permission is hereby granted, free of charge") == 4  # MIT, each
    assert len(bundle.body) < 150_000, "the bundle is minified"
    # the pinned versions are the exact ones of package.json
    manifest = json.loads((DEMO / "src" / "package.json").read_text())
    for name, version in manifest["dependencies"].items():
        assert version == lock[f"node_modules/{name}"]["version"]


@pytest.mark.parametrize("path", [
    "", "/favicon.ico", "/static/", "/static", "/index.htm", "/INDEX.HTML", "//",
    "/static/editor.js/", "/src/editor.js", "/src/package.json", "/__init__.py",
    "/LICENSES/THIRD-PARTY", "/../index.html", "/static/../index.html", "/./index.html",
    "/static/..%2findex.html", "/%2e%2e/__init__.py", "/static/%2e%2e/__init__.py",
    "/static/editor.js%00", "/static\\editor.js", "/etc/passwd", "/static//editor.js",
    "/demo", "/room/index.html", "/static/editor.js?v=1",
])
def test_any_other_path_is_not_a_demo_file(path: str) -> None:
    assert demo_response(path) is None


def test_while_off_the_root_says_where_the_websocket_is() -> None:
    for path in ("/", "/index.html"):
        response = demo_off_response(path)
        assert response is not None
        assert response.status == HTTPStatus.NOT_FOUND
        assert response.body == DEMO_OFF.encode()
        assert b"ws://" in response.body and b"server.demo" in response.body
        assert dict(response.headers)["Content-Type"] == "text/plain; charset=utf-8"
    assert demo_off_response("/static/editor.js") is None
    assert demo_off_response("/other") is None
