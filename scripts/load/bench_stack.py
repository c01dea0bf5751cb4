"""What the servers of one run share: one key pair and the clients' tokens, one permission
endpoint, a PostgreSQL database per server run, and where the y-redis peer is installed.

- **Auth**: ``ysync.auth.generate_keypair`` (what ``ysync keys generate`` prints: lib0's JWK
  format, which y-redis reads too) signs one token per client (user ``bench-<n>``); both servers
  get ``AUTH_PUBLIC_KEY``, ``AUTH_PRIVATE_KEY`` and ``AUTH_PERM_CALLBACK``, the URL of one
  ``scripts/perm_server.py`` (read-write for everyone) that both ask.
- **Storage**: y-redis's ``POSTGRES`` for both servers and both workers, a fresh database per
  server run (both use the table ``yredis_docs_v1`` and room names repeat across runs), dropped
  afterwards.
- **y-redis**: ``tests/yredis_peer.py`` finds it (``$YSYNC_YREDIS_PEER`` or the setup script in
  ``../shared/peers/y-redis-0.1.6``); when it is absent the run goes on without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench_servers import stop_process

REPO = Path(__file__).resolve().parents[2]
PERM_SERVER = REPO / "scripts" / "perm_server.py"
#: PostgreSQL tried when --postgres is not given (trust auth on loopback, as the tests use)
POSTGRES_CANDIDATES = ("postgresql://postgres@127.0.0.1:5432/postgres",
                       "postgresql://root@127.0.0.1:5432/postgres")
TOKEN_TTL_S = 24 * 3600


class Auth:
    """A key pair, a file of client tokens and a running permission endpoint (``with``)."""

    def __init__(self, workdir: Path, users: int) -> None:
        from ysync.auth import generate_keypair, load_private_key, mint_token

        self.public_jwk, self.private_jwk = generate_keypair()
        key = load_private_key(self.private_jwk)
        self.tokens_file = workdir / "tokens.json"
        self.tokens_file.write_text(json.dumps(
            [mint_token(key, f"bench-{n}", TOKEN_TTL_S) for n in range(max(1, users))]))
        self.perm_url = ""
        self._log = workdir / "perm-server.log"
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Auth:
        env = {k: v for k, v in os.environ.items() if k != "AUTH_PRIVATE_KEY"}
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, str(PERM_SERVER), "--port", "0",
                 "--quiet"], env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True)
        self.perm_url = _perm_callback(self._proc, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            stop_process(self._proc)

    @property
    def perm_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def settings(self) -> dict[str, str]:
        """The environment variables that turn auth on, for ysync and y-redis alike."""
        return {"AUTH_PUBLIC_KEY": self.public_jwk, "AUTH_PRIVATE_KEY": self.private_jwk,
                "AUTH_PERM_CALLBACK": self.perm_url}


def _perm_callback(proc: subprocess.Popen[str], timeout: float) -> str:
    """The ``AUTH_PERM_CALLBACK=...`` perm_server.py prints when it listens."""
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "AUTH_PERM_CALLBACK=" in line:
            found.append(line.split("AUTH_PERM_CALLBACK=", 1)[1].strip().rstrip(")"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        stop_process(proc)
        raise RuntimeError(f"{PERM_SERVER.name} did not print its callback URL in {timeout} s")
    return found[0]


def find_postgres(named: str | None) -> tuple[str | None, str]:
    """An admin URL of a PostgreSQL that answers (``named``, else the candidates), or why not."""
    try:
        import psycopg
    except ImportError as exc:
        return None, f"psycopg is not installed ({exc})"
    errors = []
    for url in [named] if named else POSTGRES_CANDIDATES:
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return url, ""
        except psycopg.Error as exc:
            errors.append(f"{url}: {str(exc).strip()}")
    return None, "; ".join(errors)


@contextlib.contextmanager
def fresh_database(admin_url: str, label: str) -> Iterator[str]:
    """A new database (dropped afterwards); its URL names the user, as y-redis's client needs."""
    import psycopg
    from psycopg import sql

    name = f"ysync_bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    user = info.get("user") or "postgres"
    try:
        yield f"postgres://{user}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def locate_yredis(setup: Path | None = None) -> tuple[Path | None, str]:
    """The y-redis 0.1.6 install folder (installed by its setup script on first use), or None
    and why not; ``setup``: another setup script (tests)."""
    try:
        import yredis_peer  # tests/yredis_peer.py (tests/ is on sys.path: bench_servers)
    except ImportError as exc:
        return None, f"tests/yredis_peer.py cannot be imported: {exc}"
    try:
        folder = (yredis_peer.locate() if setup is None else yredis_peer.locate(setup))
    except yredis_peer.PeerSetupError as exc:
        return None, f"it cannot be used: {str(exc)[-1500:]}"
    if folder is None:
        return None, (f"set ${yredis_peer.ENV_VAR} to its install folder, or provide "
                      f"{setup or yredis_peer.SETUP}")
    return folder, ""
