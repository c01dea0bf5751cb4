"""scripts/perm_server.py, started as a subprocess on a free port."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from ysync.auth import (
    Access,
    check_permission,
    current_time_ms,
    generate_keypair,
    load_public_key,
    verify_token,
)
from ysync.errors import AuthError

from conftest import seconds

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "perm_server.py"


class PermServer:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        environ = {k: v for k, v in os.environ.items() if k != "AUTH_PRIVATE_KEY"}
        environ.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--port", "0", "--quiet", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ,
        )
        line = self._first_line(seconds(15))
        assert line.startswith("perm_server listening on http://127.0.0.1:"), line
        self.base = line.split()[3]
        self.callback = f"{self.base}/auth/perm"

    def _first_line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.process.kill()
                pytest.fail(f"perm_server did not start within {timeout} s")
        return self.process.stdout.readline().strip()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(seconds(10))
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()
        return code


@pytest.fixture
def server() -> Iterator[PermServer]:
    running = PermServer("--read-only-users", "bob,carol x", "--deny-users", "eve")
    try:
        yield running
    finally:
        running.stop()


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=seconds(10))


def test_default_is_read_write(server: PermServer) -> None:
    response = get(f"{server.callback}/my%20room/alice")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"yroom": "my%20room", "yaccess": "rw", "yuserid": "alice"}


def test_read_only_users(server: PermServer) -> None:
    assert get(f"{server.callback}/room/bob").json()["yaccess"] == "r"
    answer = get(f"{server.callback}/room/carol%20x").json()
    assert answer == {"yroom": "room", "yaccess": "r", "yuserid": "carol%20x"}


def test_denied_users_get_403_without_json(server: PermServer) -> None:
    response = get(f"{server.callback}/room/eve")
    assert response.status_code == 403
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


@pytest.mark.parametrize("path", ["/auth/perm/onlyroom", "/auth/perm/r/u/extra", "/", "/x"])
def test_unknown_paths(server: PermServer, path: str) -> None:
    assert get(server.base + path).status_code == 404


def test_no_token_without_private_key(server: PermServer) -> None:
    response = get(f"{server.base}/auth/token")
    assert response.status_code == 404
    assert "AUTH_PRIVATE_KEY" in response.text


def test_ydoc_update_callback(server: PermServer) -> None:
    response = httpx.put(f"{server.base}/ydoc/room", content=b"\x00" * 100,
                         timeout=seconds(10))
    assert response.status_code == 200


def test_check_permission_against_it(server: PermServer) -> None:
    async def ask(user: str) -> Access:
        async with httpx.AsyncClient() as client:
            return await check_permission(client, server.callback, "room", user, seconds(10))

    assert anyio.run(ask, "alice") == Access(can_write=True, user_id="alice")
    assert anyio.run(ask, "carol x") == Access(can_write=False, user_id="carol%20x")
    with pytest.raises(AuthError, match="HTTP 403"):
        anyio.run(ask, "eve")


def test_tokens_with_private_key() -> None:
    public, private = generate_keypair()
    running = PermServer("--token-ttl", "60", env={"AUTH_PRIVATE_KEY": private})
    try:
        before = current_time_ms()
        default = get(f"{running.base}/auth/token")
        named = get(f"{running.base}/auth/token?yuserid=alice")
    finally:
        assert running.stop() == 0
    assert default.status_code == named.status_code == 200
    public_key = load_public_key(public)
    assert verify_token(default.text, public_key, before).user_id == "user1"
    claims = verify_token(named.text, public_key, before)
    assert claims.user_id == "alice"
    assert claims.exp_ms is not None and before + 60_000 <= claims.exp_ms
    assert claims.exp_ms <= current_time_ms() + 60_000


def test_bad_private_key_stops_it() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--port", "0"],
        env={**os.environ, "AUTH_PRIVATE_KEY": '{"kty":"EC","crv":"P-256"}'},
        capture_output=True, text=True, timeout=seconds(15),
    )
    assert done.returncode != 0
    assert "AUTH_PRIVATE_KEY" in done.stderr and "P-384" in done.stderr


def test_help() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                          text=True, timeout=seconds(15), check=True)
    for word in ("--read-only-users", "--deny-users", "--port", "AUTH_PERM_CALLBACK"):
        assert word in done.stdout


def test_sigterm_stops_it_cleanly(server: PermServer) -> None:
    assert get(f"{server.callback}/r/u").status_code == 200
    assert server.stop() == 0
