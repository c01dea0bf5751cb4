"""Shared fixtures: the Node packages, a real Redis, time scaling."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import nodeenv  # noqa: E402

#: Multiply every deadline in the tests by this (a slow machine sets YSYNC_TEST_TIME_SCALE=3).
TIME_SCALE = float(os.environ.get("YSYNC_TEST_TIME_SCALE", "1"))


def seconds(value: float) -> float:
    """A test deadline, scaled by ``YSYNC_TEST_TIME_SCALE``."""
    return value * TIME_SCALE


@pytest.fixture(scope="session")
def node_dir() -> Path:
    """The folder with the real npm yjs / y-websocket / lib0 and the scripts of tests/node."""
    if not nodeenv.node_available():
        pytest.fail("node and npm are required for the interop tests (apt-get install nodejs npm)")
    return nodeenv.install()
