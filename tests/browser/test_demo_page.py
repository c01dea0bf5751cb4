"""The page ``ysync serve`` answers at ``GET /`` (ysync/demo, setting ``server.demo``).

A newcomer runs ``ysync serve`` (the embedded default), opens http://127.0.0.1:3002/ twice and
sees the two converge: two headless Chromium pages (``drive.mjs``, each its own browser) load
the page and its bundled script from ysync itself, connect back to the page's own host, and
edit one room. Beside it, over plain HTTP: what is served when the page is on, and that it is
off with ``server.demo=no`` and with an external Redis (``auto``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from ysync.demo import CONTENT_SECURITY_POLICY, DEMO_OFF

import nodeenv
from conftest import seconds
from harness import REPO, ServerProcess, running_server
from pages import browser_node_dir, two_people_edit

pytestmark = [pytest.mark.anyio]

__all__ = ["browser_node_dir"]  # the fixture, from pages.py


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """``ysync serve`` with nothing configured: embedded Redis, data under ``data_dir``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS", "POSTGRES") and not k.startswith("YSYNC_")}
    return {**env, "YSYNC_DATA_DIR": str(data_dir), "LOG": "info", **extra}


@pytest.fixture
async def embedded_server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with running_server(embedded_env(tmp_path / "data")) as running:
        yield running


def http_client() -> httpx.AsyncClient:
    # websockets closes the connection after each HTTP answer without saying so (no
    # "Connection: close"): a kept-alive connection would race its close
    return httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0),
                             timeout=seconds(10))


def http_url(server: ServerProcess, path: str = "/") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


@pytest.mark.browser
async def test_two_pages_of_the_built_in_editor_converge(
    browser_node_dir: Path, embedded_server: ServerProcess, tmp_path: Path
) -> None:
    room = f"demo-{uuid.uuid4().hex[:8]}"

    def address(who: str) -> str:
        return http_url(embedded_server, "/?" + urlencode({"room": room, "name": who}))

    await two_people_edit(browser_node_dir, address, tmp_path)


async def test_the_embedded_default_serves_the_page_and_its_script(
    embedded_server: ServerProcess,
) -> None:
    async with http_client() as client:
        page = await client.get(http_url(embedded_server, "/"))
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-cache"
        assert 'src="static/editor.js?v=' in page.text
        assert (await client.get(http_url(embedded_server, "/?room=x"))).text == page.text

        script = await client.get(http_url(embedded_server, "/static/editor.js?v=1"))
        assert script.status_code == 200
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert script.text.startswith("/*! ysync demo editor; bundles ")

        for path in ("/static/../__init__.py", "/src/editor.js", "/favicon.ico"):
            missing = await client.get(http_url(embedded_server, path))
            assert missing.status_code == 404, path
            assert missing.text == "not found\n"
        assert (await client.get(http_url(embedded_server, "/healthz"))).text == "ok\n"


@pytest.mark.node
def test_the_committed_bundle_is_built_from_its_sources() -> None:
    """scripts/build_demo rebuilds ysync/demo/static/editor.js byte for byte (same lockfile,
    same esbuild); the packages are installed once into the Node cache folder."""
    if not nodeenv.node_available():
        pytest.fail("node and npm are required to rebuild the demo bundle")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "build_demo"), "--check"],
                            capture_output=True, text=True, timeout=seconds(600))
    assert result.returncode == 0, result.stdout + result.stderr


async def test_server_demo_no_turns_the_page_off(tmp_path: Path) -> None:
    env = embedded_env(tmp_path / "data", YSYNC_SERVER_DEMO="no")
    async with running_server(env) as server, http_client() as client:
        await assert_page_off(client, server)


async def test_the_page_is_off_with_an_external_redis_unless_asked_for(
    redis_url: str, prefix: str
) -> None:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no"}
    async with http_client() as client:
        async with running_server(env) as server:
            await assert_page_off(client, server)
        async with running_server({**env, "YSYNC_SERVER_DEMO": "yes"}) as server:
            assert (await client.get(http_url(server, "/"))).status_code == 200


async def assert_page_off(client: httpx.AsyncClient, server: ServerProcess) -> None:
    root = await client.get(http_url(server, "/"))
    assert root.status_code == 404
    assert root.text == DEMO_OFF  # says where the WebSocket is and which setting
    assert (await client.get(http_url(server, "/static/editor.js"))).status_code == 404
