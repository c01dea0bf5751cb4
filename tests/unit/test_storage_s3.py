"""The S3 backend against moto_server: y-redis's object names and bucket, v2 bodies, errors,
timeouts; its settings (y-redis's S3_* variables) and its storage identity."""

from __future__ import annotations

import logging
import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import pycrdt
import pytest

from ysync.config import S3_OVER_POSTGRES_WARNING, load_config
from ysync.errors import ConfigError, StorageError
from ysync.storage.factory import open_storage
from ysync.storage.fingerprint import storage_identity
from ysync.storage.names import MAX_OBJECT_NAME_BYTES, object_folder
from ysync.storage.s3 import S3Storage, _client
from ysync.updates import v1_to_v2, v2_to_v1

from storage_fixtures import MotoS3, make_config
from storage_fixtures import moto_s3 as moto_s3  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
REDIS = "redis://127.0.0.1:1"  # never reached


def snapshot(text: str, client_id: int = 7) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    doc["t"] = pycrdt.Text(text)
    return v1_to_v2(doc.get_update())


async def open_store(s3: MotoS3, bucket: str) -> S3Storage:
    return await S3Storage.open(s3.endpoint_url, bucket, access_key=s3.access_key,
                                secret_key=s3.secret_key, call_timeout=10)


@pytest.mark.parametrize(("room", "encoded"), [
    ("my room é", "my%20room%20%C3%A9"), (".", "."), ("..", ".."), ("a%b", "a%25b"),
    ("x/y", "x%2Fy"), ("(it's)*~!", "(it's)*~!"),
])
async def test_object_names_are_y_redis_names(moto_s3: MotoS3, room: str, encoded: str) -> None:
    bucket = moto_s3.new_bucket()
    store = await open_store(moto_s3, bucket)
    try:
        await store.persist_doc(room, "index", snapshot("x"))
        objects = moto_s3.objects(bucket)
        [name] = objects
        assert re.fullmatch(rf"{re.escape(encoded)}/index/{UUID}", name)
        assert objects[name] == snapshot("x")
        head = moto_s3.client().head_object(Bucket=bucket, Key=name)
        assert head["ContentType"] == "application/octet-stream"
        stored = await store.retrieve_doc(room, "index")
        assert stored is not None and stored.references == (name,)
    finally:
        await store.aclose()


async def test_objects_y_redis_wrote_are_read_and_deleted(moto_s3: MotoS3) -> None:
    """What y-redis's persistDoc puts (any uuid name in the folder) is merged and deletable."""
    bucket = moto_s3.new_bucket()
    client = moto_s3.client()
    for i, text in enumerate(["one", "two"]):
        client.put_object(Bucket=bucket, Key=f"r%C3%A9/index/{uuid.uuid4()}",
                          Body=snapshot(text, client_id=i + 1))
    client.put_object(Bucket=bucket, Key=f"r%C3%A9/other/{uuid.uuid4()}", Body=snapshot("no"))
    store = await open_store(moto_s3, bucket)
    try:
        stored = await store.retrieve_doc("ré", "index")
        assert stored is not None and len(stored.references) == 2
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(v2_to_v1(stored.update_v2))
        assert str(doc.get("t", type=pycrdt.Text)) in ("onetwo", "twoone")
        await store.delete_references("ré", "index", stored.references)
        assert await store.retrieve_doc("ré", "index") is None
        assert len(moto_s3.objects(bucket)) == 1  # the other doc's
    finally:
        await store.aclose()


async def test_a_snapshot_deleted_between_list_and_read_is_listed_again(
    moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = moto_s3.new_bucket()
    store = await open_store(moto_s3, bucket)
    try:
        await store.persist_doc("r", "index", snapshot("one", client_id=1))
        await store.persist_doc("r", "index", snapshot("two", client_id=2))
        victim = sorted(moto_s3.objects(bucket))[0]
        client = store._client
        real_get = client.get_object

        def deleted_first(**kwargs: Any) -> Any:
            if kwargs["Key"] == victim:
                # a worker deleted it right after our listing: the next listing lacks it
                client.delete_object(Bucket=bucket, Key=victim)
            return real_get(**kwargs)

        monkeypatch.setattr(client, "get_object", deleted_first)
        stored = await store.retrieve_doc("r", "index")
        assert stored is not None
        assert len(stored.references) == 1 and victim not in stored.references
    finally:
        await store.aclose()


async def test_deleting_references_twice_and_foreign_ones_is_fine(moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    store = await open_store(moto_s3, bucket)
    try:
        await store.persist_doc("r", "index", snapshot("x"))
        await store.persist_doc("r2", "index", snapshot("y"))
        stored = await store.retrieve_doc("r", "index")
        assert stored is not None
        await store.delete_references("r", "index", stored.references)
        await store.delete_references("r", "index", stored.references)
        other = await store.retrieve_doc("r2", "index")
        assert other is not None
        await store.delete_references("r", "index", other.references)  # not r's: ignored
        assert await store.retrieve_doc("r", "index") is None
        assert await store.retrieve_doc("r2", "index") is not None
    finally:
        await store.aclose()


async def test_many_references_are_deleted_in_batches(moto_s3: MotoS3,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import ysync.storage.s3

    monkeypatch.setattr(ysync.storage.s3, "_DELETE_BATCH", 2)  # S3's is 1000
    bucket = moto_s3.new_bucket()
    store = await open_store(moto_s3, bucket)
    client = moto_s3.client()
    names = [f"many/index/{uuid.uuid4()}" for _ in range(5)]
    for name in names:
        client.put_object(Bucket=bucket, Key=name, Body=b"")
    try:
        await store.delete_references("many", "index", names)
        assert moto_s3.objects(bucket) == {}
    finally:
        await store.aclose()


async def test_a_missing_bucket_is_created_as_y_redis_does(
    moto_s3: MotoS3, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = f"ysync-test-new-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="ysync.storage.s3"):
        store = await open_store(moto_s3, bucket)
    try:
        assert any("was created" in r.getMessage() and bucket in r.getMessage()
                   for r in caplog.records)
        await store.check()
        caplog.clear()
        again = await open_store(moto_s3, bucket)
        await again.aclose()
        assert not caplog.records
        # deleted under a running storage: /readyz's check says so
        moto_s3.client().delete_bucket(Bucket=bucket)
        with pytest.raises(StorageError, match=f"bucket s3://{bucket}/ .* does not exist"):
            await store.check()
        with pytest.raises(StorageError, match=f"s3://{bucket}/r/index/"):
            await store.persist_doc("r", "index", snapshot("x"))
    finally:
        await store.aclose()


async def test_an_unreachable_endpoint_is_a_storage_error_without_secrets() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: refuses connections
    with pytest.raises(StorageError) as caught:
        await S3Storage.open(f"http://127.0.0.1:{port}", "ydocs", access_key="AKIDSECRETISH",
                             secret_key="the-secret-key", call_timeout=3)
    text = str(caught.value)
    assert "s3://ydocs/" in text and f"127.0.0.1:{port}" in text
    assert "the-secret-key" not in text and "AKIDSECRETISH" not in text


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


async def test_a_server_that_does_not_answer_times_out(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}"
    client = await anyio.to_thread.run_sync(_client, url, "k", "s", "us-east-1", 0.5)
    silent = S3Storage(client, "ydocs", url, timeout=0.5)
    try:
        for call in (silent.check(), silent.retrieve_doc("r", "index"),
                     silent.persist_doc("r", "index", snapshot("x")),
                     silent.delete_references("r", "index", [f"r/index/{uuid.uuid4()}"])):
            started = time.monotonic()
            with pytest.raises(StorageError, match=r"s3://ydocs/.* timed out after 0.5 s"):
                await call
            assert time.monotonic() - started < 2
    finally:
        await silent.aclose()


def test_names_that_fit_s3_are_y_redis_names_and_longer_ones_are_shortened() -> None:
    room = "%25" * 85  # 425 bytes once encoded: too long for a file, not for an S3 key
    assert object_folder("", room, "index") == f"{'%2525' * 85}/index/"
    folder = object_folder("", room, "d" * 700)
    assert len(folder.encode()) + 36 <= MAX_OBJECT_NAME_BYTES and "%~" in folder


# --- settings and identity ----------------------------------------------------------------------


Y_REDIS_ENV = {"REDIS": REDIS, "S3_ENDPOINT": "minio.local", "S3_PORT": "9000",
               "S3_ACCESS_KEY": "minioadmin", "S3_SECRET_KEY": "very-secret"}


@pytest.mark.parametrize(("extra", "url"), [
    ({}, "http://minio.local:9000"),
    ({"S3_SSL": "true"}, "https://minio.local:9000"),
    ({"S3_PORT": "", "S3_SSL": "1"}, "https://minio.local:443"),
    ({"S3_PORT": "", "S3_SSL": "false"}, "http://minio.local:80"),
    ({"S3_ENDPOINT": "MinIO.Local"}, "http://minio.local:9000"),
    ({"S3_ENDPOINT": "::1"}, "http://[::1]:9000"),
])
def test_y_redis_variables_select_s3(extra: dict[str, str], url: str) -> None:
    config = load_config(None, {**Y_REDIS_ENV, **extra})
    assert config.storage_kind == "s3"
    assert config.storage.s3_endpoint_url == url


def test_s3_wins_over_postgres_as_in_y_redis_and_says_so() -> None:
    config = load_config(None, {**Y_REDIS_ENV, "POSTGRES": "postgres://u@db/x"})
    assert config.storage_kind == "s3"
    assert config.warnings == (S3_OVER_POSTGRES_WARNING,)
    named = load_config(None, {**Y_REDIS_ENV, "POSTGRES": "postgres://u@db/x",
                               "YSYNC_STORAGE_KIND": "postgres"})
    assert named.storage_kind == "postgres" and named.warnings == ()


@pytest.mark.parametrize(("extra", "expected"), [
    ({"YSYNC_STORAGE_GCS_BUCKET": "b"}, ["s3_endpoint", "gcs_bucket", "choose one"]),
    ({"S3_ENDPOINT": "http://minio.local"}, ["S3_ENDPOINT", "host name", "'http://minio.local'"]),
    ({"S3_ENDPOINT": "minio.local:9000"}, ["S3_ENDPOINT", "S3_PORT"]),
    ({"S3_SECRET_KEY": ""}, ["S3_ACCESS_KEY", "S3_SECRET_KEY", "both"]),
    ({"S3_PORT": "99999"}, ["storage.s3_port", "65535"]),
])
def test_bad_s3_settings_are_refused(extra: dict[str, str], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {**Y_REDIS_ENV, **extra})
    text = str(caught.value)
    for part in expected:
        assert part in text, (part, text)
    assert "very-secret" not in text


def test_s3_named_without_an_endpoint_or_a_bucket_is_refused() -> None:
    with pytest.raises(ConfigError, match="S3_ENDPOINT"):
        load_config(None, {"REDIS": REDIS, "YSYNC_STORAGE_KIND": "s3"})
    with pytest.raises(ConfigError, match="s3_bucket"):
        load_config(None, Y_REDIS_ENV, {"storage.s3_bucket": ""})


def test_the_identity_is_endpoint_and_bucket_never_the_keys() -> None:
    config = load_config(None, Y_REDIS_ENV)
    own = storage_identity(config, host="h1", process="p1")
    assert own.key == own.shown == "s3://ydocs at http://minio.local:9000"
    assert "minioadmin" not in own.key and "very-secret" not in own.key
    other_keys = load_config(None, {**Y_REDIS_ENV, "S3_ACCESS_KEY": "x", "S3_SECRET_KEY": "y"})
    assert storage_identity(other_keys, host="h2", process="p2").key == own.key
    other_bucket = load_config(None, {**Y_REDIS_ENV, "YSYNC_STORAGE_S3_BUCKET": "other"})
    assert storage_identity(other_bucket, host="h1", process="p1").key != own.key


async def test_the_factory_opens_it(moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    async with open_storage(make_config(storage=moto_s3.config(bucket))) as storage:
        assert isinstance(storage, S3Storage) and storage.bucket == bucket
        await storage.check()
