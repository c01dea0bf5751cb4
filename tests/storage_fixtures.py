"""Storage backends for the tests: a GCS emulator, an S3 server, a PostgreSQL database, and
helpers.

Import the fixtures into a test module with ``from storage_fixtures import *`` (the names listed
in ``__all__``). Every backend is real: the GCS tests talk to ``gcp-storage-emulator`` over HTTP,
the S3 tests to ``moto_server`` (moto's S3 API, on a free loopback port),
the Postgres tests to a PostgreSQL server (``$YSYNC_TEST_POSTGRES``, else 127.0.0.1:5432 database
``test``, else one started with ``initdb``/``pg_ctl`` if they are installed, else skipped).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ysync.config import Config, RedisConfig, StorageConfig, WorkerConfig
from ysync.storage.base import Storage

from conftest import seconds

__all__ = [
    "BACKENDS",
    "PERSISTENT_BACKENDS",
    "GcsEmulator",
    "MotoS3",
    "append_updates",
    "doc_json_of_v2",
    "edit_doc",
    "gcs_emulator",
    "make_config",
    "moto_s3",
    "node_merge",
    "postgres_url",
    "raw_snapshots",
    "redis_now_ms",
    "storage_config",
    "storage_env",
    "wait_past_ms",
    "wait_until",
]

BACKENDS = ["memory", "filesystem", "gcs", "postgres", "s3"]
PERSISTENT_BACKENDS = ["filesystem", "gcs", "postgres", "s3"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


async def wait_until(check: Callable[[], Awaitable[bool]], within: float, what: str,
                     interval: float = 0.02) -> None:
    """Wait (scaled ``within`` seconds) until ``check()`` is true, else fail naming ``what``."""
    import anyio

    deadline = time.monotonic() + seconds(within)
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds(within)} s waiting for {what}")
        await anyio.sleep(interval)


# --- GCS -----------------------------------------------------------------------------------------


class GcsEmulator:
    """A running ``gcp-storage-emulator``; ``STORAGE_EMULATOR_HOST`` points at it meanwhile."""

    def __init__(self, host: str) -> None:
        self.host = host

    def client(self) -> Any:
        from google.cloud import storage as gcs

        return gcs.Client(project="test")

    def new_bucket(self) -> str:
        name = f"ysync-test-{uuid.uuid4().hex[:12]}"
        client = self.client()
        try:
            client.create_bucket(name)
        finally:
            client.close()
        return name

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object of ``bucket``: name -> body."""
        client = self.client()
        try:
            # (a listed blob carries its generation, which the emulator mishandles in names
            # holding '%': read by name)
            handle = client.bucket(bucket)
            return {blob.name: handle.blob(blob.name).download_as_bytes()
                    for blob in client.list_blobs(bucket)}
        finally:
            client.close()


#: Servers started once per test run, however many test modules import the fixtures.
_SHARED: dict[str, Any] = {}


def _start_gcs_emulator() -> tuple[GcsEmulator, Callable[[], None]]:
    executable = shutil.which("gcp-storage-emulator") or str(
        Path(sys.executable).parent / "gcp-storage-emulator")
    if not Path(executable).exists():
        pytest.fail("gcp-storage-emulator is not installed (pip install gcp-storage-emulator)")
    port = free_port()
    proc = subprocess.Popen(
        [executable, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + seconds(20)
    while not _port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("gcp-storage-emulator did not start")
        time.sleep(0.05)
    host = f"http://127.0.0.1:{port}"
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = host

    def stop() -> None:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return GcsEmulator(host), stop


@pytest.fixture(scope="session")
def gcs_emulator(request: pytest.FixtureRequest) -> GcsEmulator:
    """A ``gcp-storage-emulator`` for the whole run; ``STORAGE_EMULATOR_HOST`` points at it."""
    if "gcs" not in _SHARED:
        _SHARED["gcs"], stop = _start_gcs_emulator()
        request.addfinalizer(stop)
    emulator: GcsEmulator = _SHARED["gcs"]
    return emulator


# --- S3 ------------------------------------------------------------------------------------------


class MotoS3:
    """A running ``moto_server`` (an S3 API) at ``127.0.0.1:<port>``, with keys it takes."""

    access_key = "ysync-test-access"
    secret_key = "ysync-test-secret"

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._client: Any = None

    def client(self) -> Any:
        """A boto3 client of this server (made once: boto3 clients are thread-safe)."""
        if self._client is None:
            import boto3

            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)
        return self._client

    def config(self, bucket: str, port: int | None = None) -> StorageConfig:
        """Settings of ysync's s3 storage on ``bucket`` of this server (or of a proxy's
        ``port`` in front of it)."""
        return StorageConfig(kind="s3", s3_endpoint="127.0.0.1", s3_port=port or self.port,
                             s3_access_key=self.access_key, s3_secret_key=self.secret_key,
                             s3_bucket=bucket)

    def new_bucket(self) -> str:
        name = f"ysync-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object of ``bucket`` under ``prefix``: name -> body (one that vanished
        meanwhile is left out)."""
        client = self.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                     Prefix=prefix):
            for item in page.get("Contents", ()):
                try:
                    found[item["Key"]] = client.get_object(Bucket=bucket,
                                                           Key=item["Key"])["Body"].read()
                except client.exceptions.NoSuchKey:
                    pass
        return found


def start_moto_server(port: int) -> subprocess.Popen[bytes]:
    """``moto_server`` on 127.0.0.1:``port``, listening when this returns."""
    executable = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(executable).exists():
        pytest.fail("moto_server is not installed (pip install 'moto[server]')")
    shown = None if os.environ.get("YSYNC_TEST_SHOW_SERVER_LOG") else subprocess.DEVNULL
    proc = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=shown, stderr=shown)
    deadline = time.monotonic() + seconds(30)
    while not _port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"moto_server did not start on port {port}")
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="session")
def moto_s3(request: pytest.FixtureRequest) -> MotoS3:
    """A ``moto_server`` for the whole run; a test takes a bucket of its own (``new_bucket``)."""
    if "s3" not in _SHARED:
        port = free_port()
        proc = start_moto_server(port)

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        _SHARED["s3"] = MotoS3(port)
        request.addfinalizer(stop)
    server: MotoS3 = _SHARED["s3"]
    return server


# --- PostgreSQL ----------------------------------------------------------------------------------


def _pg_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _start_own_postgres() -> tuple[str, Callable[[], None]]:
    """initdb + pg_ctl start in a fresh folder; returns (admin URL, stop and clean up)."""
    import tempfile

    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no PostgreSQL reachable at 127.0.0.1:5432 and no initdb/pg_ctl to start one "
                    "(set YSYNC_TEST_POSTGRES to a server's URL)")
    # not under pytest's tmp_path: its parents are private to us, the server may run as another
    workdir = Path(tempfile.mkdtemp(prefix="ysync-test-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root: run the server as the unprivileged user 'postgres'
        if shutil.which("runuser") is None:
            pytest.skip("PostgreSQL: running as root and runuser is missing")
        try:
            import pwd

            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL: running as root and there is no user 'postgres'")
        workdir.chmod(0o777)
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = workdir / "data"
    port = free_port()
    subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-w", "-l", str(workdir / "log"), "-o",
                    f"-p {port} -k {workdir} -h 127.0.0.1", "start"],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)

    def stop() -> None:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       check=False, stdout=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)

    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


def _create_database() -> tuple[str, Callable[[], None]]:
    import psycopg
    from psycopg import sql

    admin = os.environ.get("YSYNC_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
    stop: Callable[[], None] | None = None
    if not _pg_answers(admin):
        admin, stop = _start_own_postgres()
    name = f"ysync_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(admin)
    host = info.get("host", "127.0.0.1")
    user = info.get("user")
    port = info.get("port", 5432)
    url = f"postgresql://{user + '@' if user else ''}{host}:{port}/{name}"

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
        if stop is not None:
            stop()

    return url, drop


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database for this test run (dropped afterwards): ``$YSYNC_TEST_POSTGRES``
    or 127.0.0.1:5432 database ``test`` as the admin connection, else a server of our own."""
    if "postgres" not in _SHARED:
        _SHARED["postgres"], drop = _create_database()
        request.addfinalizer(drop)
    url: str = _SHARED["postgres"]
    return url


# --- configurations ------------------------------------------------------------------------------


def make_config(*, redis_url: str = "redis://127.0.0.1:6379/0", prefix: str = "y",
                storage: StorageConfig | None = None, task_debounce: int = 0,
                min_message_lifetime: int = 0, **worker: Any) -> Config:
    """A Config for tests (no file, no environment)."""
    return Config(
        redis=RedisConfig(url=redis_url, prefix=prefix, task_debounce=task_debounce,
                          min_message_lifetime=min_message_lifetime, timeout=10.0),
        storage=storage or StorageConfig(kind="memory"),
        worker=WorkerConfig(idle_wait=0.05, **worker),
    )


def storage_config(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    """A StorageConfig of ``kind`` that is this test's own (fresh folder, bucket, prefix)."""
    if kind == "memory":
        return StorageConfig(kind="memory")
    if kind == "filesystem":
        return StorageConfig(kind="filesystem", path=str(tmp_path / "storage"))
    if kind == "gcs":
        emulator: GcsEmulator = request.getfixturevalue("gcs_emulator")
        return StorageConfig(kind="gcs", gcs_bucket=emulator.new_bucket(),
                             gcs_prefix=f"p-{uuid.uuid4().hex[:8]}")
    if kind == "postgres":
        return StorageConfig(kind="postgres", postgres=request.getfixturevalue("postgres_url"))
    if kind == "s3":
        s3: MotoS3 = request.getfixturevalue("moto_s3")
        return s3.config(s3.new_bucket())
    raise ValueError(kind)


# --- documents, streams and snapshots ------------------------------------------------------------


def storage_env(config: StorageConfig) -> dict[str, str]:
    """Environment variables that select ``config``'s backend in a child process."""
    env = {"YSYNC_STORAGE_KIND": config.kind}
    if config.kind == "filesystem":
        env["YSYNC_STORAGE_PATH"] = config.path
    elif config.kind == "gcs":
        env["YSYNC_STORAGE_GCS_BUCKET"] = config.gcs_bucket
        env["YSYNC_STORAGE_GCS_PREFIX"] = config.gcs_prefix
        env["STORAGE_EMULATOR_HOST"] = os.environ["STORAGE_EMULATOR_HOST"]
    elif config.kind == "postgres":
        env["POSTGRES"] = config.postgres
    elif config.kind == "s3":  # y-redis's names, but for the bucket (y-redis's is ydocs)
        env.update({"S3_ENDPOINT": config.s3_endpoint, "S3_PORT": str(config.s3_port),
                    "S3_SSL": "true" if config.s3_ssl else "false",
                    "S3_ACCESS_KEY": config.s3_access_key,
                    "S3_SECRET_KEY": config.s3_secret_key,
                    "YSYNC_STORAGE_S3_BUCKET": config.s3_bucket})
    return env


def edit_doc(client_id: int, rounds: int = 3, tag: str = "") -> tuple[list[bytes], dict[str, Any]]:
    """The v1 updates of a pycrdt client editing a map, a text and an array, one per
    transaction, and the JSON of the document they make."""
    import pycrdt

    from ysync.ops import doc_to_json

    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(bytes(event.update)))
    data = doc.get("map", type=pycrdt.Map)
    text = doc.get("text", type=pycrdt.Text)
    items = doc.get("array", type=pycrdt.Array)
    for i in range(rounds):
        data[f"{tag}k{i}"] = f"v{i}"
        text += f"{tag}{i};"
        items.append(i)
        if i % 2 == 1:
            with doc.transaction():
                del data[f"{tag}k{i - 1}"]
                del items[0]
    return updates, doc_to_json(doc)


def doc_json_of_v2(update_v2: bytes) -> dict[str, Any]:
    import pycrdt

    from ysync.ops import doc_to_json
    from ysync.updates import v2_to_v1

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(v2_to_v1(update_v2))
    return doc_to_json(doc)


async def append_updates(client: Any, prefix: str, key: str, updates: list[bytes]) -> None:
    """Append updates to a room stream as the server does (``00 02 <update>``); the worker
    group is created first, as the server does at start-up."""
    from ysync.protocol import encode_sync_update
    from ysync.streams import Layout, Scripts, ensure_worker_group, worker_stream_key

    await ensure_worker_group(client, worker_stream_key(prefix))
    scripts = Scripts(client, Layout(prefix))
    for update in updates:
        await scripts.append(key, encode_sync_update(update))


async def redis_now_ms(client: Any) -> int:
    seconds_, micros = await client.time()
    return int(seconds_) * 1000 + int(micros) // 1000


async def wait_past_ms(client: Any, ms: int) -> None:
    """Wait until Redis's clock is past millisecond ``ms`` (new stream ids will be larger)."""
    async def past() -> bool:
        return await redis_now_ms(client) > ms

    await wait_until(past, 2, f"the Redis clock to pass {ms}", interval=0.001)


def raw_snapshots(config: StorageConfig, room: str, docid: str,
                  emulator: GcsEmulator | None = None) -> list[bytes]:
    """The stored bodies of (room, docid), read straight from the backend (not via ysync)."""
    from ysync.storage.filesystem import folder_name
    from ysync.streams import encode_uri_component

    if config.kind == "filesystem":
        folder = Path(config.path) / folder_name(room) / folder_name(docid)
        return [p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    if config.kind == "gcs":
        assert emulator is not None
        prefix = config.gcs_prefix.rstrip("/") + "/" if config.gcs_prefix else ""
        prefix += f"{encode_uri_component(room)}/{encode_uri_component(docid)}/"
        return [body for name, body in sorted(emulator.objects(config.gcs_bucket).items())
                if name.startswith(prefix)]
    if config.kind == "postgres":
        import psycopg

        with psycopg.connect(config.postgres) as conn:
            rows = conn.execute("SELECT update FROM yredis_docs_v1 WHERE room = %s AND doc = %s "
                                "ORDER BY r", (room, docid)).fetchall()
        return [bytes(update) for (update,) in rows]
    if config.kind == "s3":
        prefix = f"{encode_uri_component(room)}/{encode_uri_component(docid)}/"
        objects = MotoS3(config.s3_port).objects(config.s3_bucket, prefix)
        return [body for _name, body in sorted(objects.items())]
    raise ValueError(config.kind)


def node_merge(node_dir: Path, snapshots: list[bytes], roots: dict[str, str]) -> dict[str, Any]:
    """Merge v2 snapshots with real Yjs (tests/node/worker_merge_v2.mjs)."""
    import json

    proc = subprocess.run(
        ["node", "worker_merge_v2.mjs"], cwd=node_dir, capture_output=True, timeout=seconds(30),
        input=json.dumps({"updates": [s.hex() for s in snapshots], "roots": roots}).encode())
    assert proc.returncode == 0, proc.stderr.decode()
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(params=BACKENDS)
async def any_storage(request: pytest.FixtureRequest,
                      tmp_path: Path) -> AsyncIterator[Storage]:
    """Each storage backend in turn, opened as the server opens it (``open_storage``)."""
    from ysync.storage.factory import open_storage

    config = make_config(storage=storage_config(request.param, request, tmp_path))
    async with open_storage(config) as opened:
        yield opened


def unique_room() -> str:
    """A room name of its own, with the characters that storages must encode."""
    return f"room {uuid.uuid4().hex[:8]} é/%:."
