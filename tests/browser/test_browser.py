"""Two people edit one room through ysync in the demo page, served from elsewhere (``?server=``).

The page is the one ``ysync serve`` ships (ysync/demo, bytes and headers of
``ysync.demo.demo_response``), answered here by a small HTTP server of the test on its own
port and pointed with ``?server=`` at a ysync on an external Redis (demo page off): the
WebSocket goes to another origin than the page's, which its Content-Security-Policy must allow.
Two headless Chromium pages (``pages.py``) edit one room through that server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from ysync.demo import demo_response

from harness import ServerProcess, running_server, serving_http
from pages import browser_node_dir, two_people_edit

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

__all__ = ["browser_node_dir"]  # the fixture, from pages.py


class DemoPageFiles(BaseHTTPRequestHandler):
    """Answers the demo page's files as ``ysync serve`` does, and 404 to anything else."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        response = demo_response(self.path.split("?", 1)[0])
        if response is None:
            self.send_error(404)
            return
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # one line per request on stderr is noise; failures show in the page's console


@pytest.fixture
def page_url() -> Iterator[str]:
    """``http://127.0.0.1:<port>`` answering the demo page's files."""
    with serving_http(DemoPageFiles) as url:
        yield url


@pytest.fixture
async def server(redis_url: str, prefix: str) -> AsyncIterator[ServerProcess]:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no", "LOG": "info"}
    async with running_server(env) as running:
        yield running


async def test_two_browsers_edit_one_room(
    browser_node_dir: Path, page_url: str, server: ServerProcess, tmp_path: Path
) -> None:
    room = "browser demo"

    def address(who: str) -> str:
        return f"{page_url}/index.html?" + urlencode({"server": server.url, "room": room,
                                                      "name": who})

    await two_people_edit(browser_node_dir, address, tmp_path)
