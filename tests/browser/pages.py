"""Headless Chromium pages of the demo editor (ysync/demo), shared by the browser tests.

``drive.mjs`` drives Debian's Chromium with playwright-core: each page is its own browser with
its own profile, and the page turns off y-websocket's BroadcastChannel, so the server is the
only path between two pages. (Not a ``conftest.py``: the tests import ``tests/conftest.py`` by
that module name.)
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nodeenv
from conftest import seconds
from harness import NodeDriver, wait_until

BROWSER_DIR = Path(__file__).parent
CHROMIUM = Path(os.environ.get("YSYNC_CHROMIUM", "/usr/bin/chromium"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def browser_node_dir() -> Path:
    """The cache folder with playwright-core and ``drive.mjs``."""
    if not CHROMIUM.exists():
        pytest.fail(f"the browser test needs Debian's Chromium at {CHROMIUM}: "
                    "apt-get install -y chromium (scripts/install does it when run as root)")
    if not nodeenv.node_available():
        pytest.fail("node and npm are required for the browser test (apt-get install nodejs npm)")
    return nodeenv.install(BROWSER_DIR)


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


async def two_people_edit(node_dir: Path, address: Callable[[str], str], tmp_path: Path) -> None:
    """Alice and Bob open ``address(name)`` in two Chromiums and edit one room: each sees the
    other's typing (carets moving along), both converge and count two people online, the page
    renders, and neither page logs an error (a script or socket the CSP refused would be one)."""
    async with BrowserPages(node_dir) as pages:
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
