"""Two people edit one room in real headless Chromium pages (the demo editor) through ysync.

The page (``tests/browser/page``) is bundled with esbuild from the real npm ``yjs`` and
``y-websocket`` into a temporary folder and served from 127.0.0.1; ``drive.mjs`` drives Debian's
Chromium with playwright-core. Each page is its own browser with its own profile, and the page
turns off y-websocket's BroadcastChannel, so the server is the only path between them.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import struct
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

import nodeenv
from conftest import seconds
from harness import NodeDriver, ServerProcess, running_server, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

BROWSER_DIR = Path(__file__).parent
CHROMIUM = Path(os.environ.get("YSYNC_CHROMIUM", "/usr/bin/chromium"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def browser_node_dir() -> Path:
    """The cache folder with yjs, y-websocket, esbuild, playwright-core and ``drive.mjs``."""
    if not CHROMIUM.exists():
        pytest.fail(f"the browser test needs Debian's Chromium at {CHROMIUM}: "
                    "apt-get install -y chromium (scripts/install does it when run as root)")
    if not nodeenv.node_available():
        pytest.fail("node and npm are required for the browser test (apt-get install nodejs npm)")
    return nodeenv.install(BROWSER_DIR)


@pytest.fixture(scope="session")
def page_root(browser_node_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the demo page: ``index.html`` and ``main.js`` bundled with its packages."""
    root = tmp_path_factory.mktemp("page")
    shutil.copyfile(BROWSER_DIR / "page" / "index.html", root / "index.html")
    # The page's sources stay in the repository; NODE_PATH lets esbuild find the packages
    # installed in the cache folder.
    result = subprocess.run(
        [str(browser_node_dir / "node_modules" / ".bin" / "esbuild"),
         str(BROWSER_DIR / "page" / "main.js"), "--bundle", "--format=esm",
         "--target=es2020", "--log-level=warning", f"--outfile={root / 'main.js'}"],
        env={**os.environ, "NODE_PATH": str(browser_node_dir / "node_modules")},
        capture_output=True, text=True, timeout=seconds(60),
    )
    if result.returncode != 0:
        pytest.fail(f"esbuild could not bundle the page:\n{result.stderr}")
    return root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request on stderr is noise; failures show in the page's console


@pytest.fixture
def page_url(page_root: Path) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` serving ``page_root``."""
    handler = functools.partial(_QuietHandler, directory=str(page_root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="page-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
async def server(redis_url: str, prefix: str) -> AsyncIterator[ServerProcess]:
    env = {"REDIS": redis_url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "memory",
           "YSYNC_WORKER_ENABLED": "no", "LOG": "info"}
    async with running_server(env) as running:
        yield running


class BrowserPages(NodeDriver):
    """One ``node drive.mjs`` process hosting named Chromium pages of the demo editor."""

    def __init__(self, node_dir: Path) -> None:
        super().__init__(node_dir, "drive.mjs", env={"YSYNC_CHROMIUM": str(CHROMIUM)},
                         exit_within=20)

    async def open(self, name: str, url: str, profile: Path) -> None:
        """Open ``url`` in a new Chromium whose profile is the new folder ``profile``."""
        await self.call("open", name=name, url=url, profile=str(profile),
                        timeout=int(seconds(30) * 1000), wait=40)

    async def state(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("state", name=name)
        return result

    async def shows(self, names: list[str], what: str, **expect: Any) -> None:
        """Wait until every page's state has the values ``expect``."""
        async def check() -> bool:
            for name in names:
                state = await self.state(name)
                if any(state[key] != value for key, value in expect.items()):
                    return False
            return True

        await wait_until(check, 15, f"{what} ({names} to show {expect})")


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file; fails if it is not one."""
    data = path.read_bytes()
    assert len(data) > 0, f"{path} is empty"
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    assert data[12:16] == b"IHDR", f"{path} has no IHDR chunk first"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_two_browsers_edit_one_room(
    browser_node_dir: Path, page_url: str, server: ServerProcess, tmp_path: Path
) -> None:
    room = "browser demo"

    def address(who: str) -> str:
        return f"{page_url}/index.html?" + urlencode({"server": server.url, "room": room,
                                                      "name": who})

    async with BrowserPages(browser_node_dir) as pages:
        await pages.open("a", address("alice"), tmp_path / "profile-a")
        await pages.open("b", address("bob"), tmp_path / "profile-b")
        await pages.shows(["a", "b"], "both pages connected", status="connected", synced=True)

        await pages.call("type", name="a", text="Hello from A")
        await pages.shows(["b"], "A's typing at B", text="Hello from A", value="Hello from A")

        # B types at the start; A's caret, after its own text, must move along with it
        await pages.call("press", name="b", key="Control+Home")
        await pages.call("type", name="b", text="B: ")
        await pages.shows(["a"], "B's edit at A", text="B: Hello from A", value="B: Hello from A")
        await pages.call("type", name="a", text="!")
        final = "B: Hello from A!"
        await pages.shows(["a", "b"], "both pages to converge", text=final, value=final)

        await pages.shows(["a", "b"], "awareness of both people", online=2, onlineShown="2")

        screenshot = tmp_path / "page-a.png"
        await pages.call("screenshot", name="a", path=str(screenshot))
        assert png_size(screenshot) == (900, 560)

        for name in ("a", "b"):
            assert await pages.call("errors", name=name) == [], f"console errors on page {name}"
