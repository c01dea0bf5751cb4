"""Snapshots as S3 objects, stored as y-redis 0.1.6 stores them (its ``src/storage/s3.js``).

A snapshot of (room, docid) is the object ``<encodeURIComponent(room)>/
<encodeURIComponent(docid)>/<uuid v4>`` in the bucket (y-redis's is always ``ydocs``); its body
is a v2 update and its reference is the whole object name. Reading lists the folder
(ListObjectsV2 with that prefix, as y-redis's ``listObjectsV2(bucket, prefix, true)``) and
merges every object; deleting is one multi-object delete (DeleteObjects, as y-redis's
``removeObjects``). A missing bucket is created when the storage is opened, as y-redis's server
and worker do at start. So y-redis's and ysync's servers and workers share one bucket.

S3 limits an object name to 1024 bytes: a name that would be longer has its room and doc id
parts shortened (:func:`ysync.storage.names.object_folder`); names that fit are y-redis's
exactly, whatever the room (``.`` and ``..`` included: no name is rewritten).

The client is boto3 (botocore): the most widely used S3 client, kept up by AWS, and it sends
every object name y-redis's ``minio`` client sends. (minio-py, the Python sibling of that
client, refuses names with a ``.`` or ``..`` segment - rooms y-redis stores - because its HTTP
layer would rewrite them.) It blocks, so every call runs in a worker thread under the storage's
timeout; botocore's own attempts (three, each with a third of the timeout to connect and to
wait for data) end at about the same time, so no abandoned thread lingers long.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import boto3  # type: ignore[import-untyped]
from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from ysync.errors import StorageError
from ysync.storage.names import object_folder
from ysync.storage.objects import SNAPSHOT_TYPE, ObjectStorage

__all__ = ["S3Storage"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_ERRORS = (BotoCoreError, ClientError, OSError, ValueError)
#: Parallel downloads of one document's snapshots.
_DOWNLOADS = 8
#: botocore's attempts at one request (its "standard" retry mode: throttling, 5xx, resets).
_ATTEMPTS = 3
#: Most keys of one DeleteObjects request (S3's limit).
_DELETE_BATCH = 1000
_MISSING_OBJECT = {"NoSuchKey", "404"}
_MISSING_BUCKET = {"NoSuchBucket", "404"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _client(endpoint_url: str, access_key: str, secret_key: str, region: str,
            timeout: float) -> Any:
    host = endpoint_url.partition("://")[2].rpartition(":")[0]
    config = BotoConfig(
        connect_timeout=timeout / _ATTEMPTS, read_timeout=timeout / _ATTEMPTS,
        retries={"total_max_attempts": _ATTEMPTS, "mode": "standard"},
        max_pool_connections=_DOWNLOADS + 2,
        # as y-redis's minio client: bucket in the path, except on AWS's own hosts
        s3={"addressing_style": "auto" if host.endswith(".amazonaws.com") else "path"},
        # plain requests that every S3-compatible server takes (botocore's CRC trailers are
        # not understood by all of them)
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="ysync")
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region,
                          aws_access_key_id=access_key or None,
                          aws_secret_access_key=secret_key or None, config=config)


class S3Storage(ObjectStorage):
    """Snapshots in an S3 bucket. Create it with :meth:`open`."""

    label = "s3 storage"
    errors = _ERRORS

    def __init__(self, client: Any, bucket: str, endpoint_url: str, *,
                 timeout: float = 30.0) -> None:
        self._client = client
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self._limiter = anyio.CapacityLimiter(_DOWNLOADS)

    @classmethod
    async def open(cls, endpoint_url: str, bucket: str, *, access_key: str = "",
                   secret_key: str = "", region: str = "us-east-1",
                   call_timeout: float = 30.0) -> S3Storage:
        """Create the client and the bucket if it is missing (as y-redis does).

        ``endpoint_url``: ``http(s)://host:port``. Without ``access_key`` and ``secret_key``
        boto3's default credentials are used (``AWS_ACCESS_KEY_ID``, ``~/.aws``, an instance
        role). ``call_timeout``: seconds for one storage call, kept for the storage's lifetime.
        """
        timeout = call_timeout
        try:
            with anyio.fail_after(timeout):
                client = await anyio.to_thread.run_sync(
                    partial(_client, endpoint_url, access_key, secret_key, region, timeout),
                    abandon_on_cancel=True)
        except TimeoutError as exc:
            raise StorageError(f"s3 storage: creating the client timed out after {timeout} s") \
                from exc
        except _ERRORS as exc:
            raise StorageError(f"s3 storage: cannot create a client: {exc}") from exc
        store = cls(client, bucket, endpoint_url, timeout=timeout)
        try:
            if not await store._bucket_exists():
                await store._create_bucket(region)
        except StorageError:
            await store.aclose()
            raise
        return store

    def where(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{name} at {self.endpoint_url}"

    async def _bucket_exists(self) -> bool:
        def head() -> bool:
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return True
            except ClientError as exc:
                if _code(exc) in _MISSING_BUCKET:
                    return False
                raise

        return await self._call(f"checking bucket {self.where()}", head)

    async def _create_bucket(self, region: str) -> None:
        def create() -> None:
            options: dict[str, Any] = {}
            if region != "us-east-1":  # S3 refuses us-east-1 as a location constraint
                options["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                self._client.create_bucket(Bucket=self.bucket, **options)
            except ClientError as exc:
                if _code(exc) != "BucketAlreadyOwnedByYou":  # another process was first
                    raise

        await self._call(f"creating bucket {self.where()}", create)
        log.warning("s3 storage: bucket %s did not exist and was created (as y-redis does)",
                    self.where())

    async def check(self) -> None:
        if not await self._bucket_exists():
            raise StorageError(f"s3 storage: bucket {self.where()} does not exist")

    def snapshot_folder(self, room: str, docid: str) -> str:
        return object_folder("", room, docid)

    async def names(self, prefix: str) -> list[str]:
        def list_names() -> list[str]:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            return sorted(str(item["Key"]) for page in pages for item in page.get("Contents", ()))

        return await self._call(f"listing {self.where(prefix)}", list_names)

    async def get(self, name: str) -> bytes | None:
        def download() -> bytes | None:
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _code(exc) in _MISSING_OBJECT:
                    return None
                raise
            with response["Body"] as body:
                return bytes(body.read())

        return await self._call(f"reading {self.where(name)}", download)

    async def put(self, name: str, data: bytes, content_type: str = SNAPSHOT_TYPE) -> None:
        def upload() -> None:
            # one PUT: the object appears whole or not at all; a retried PUT of this new name
            # writes the same bytes
            self._client.put_object(Bucket=self.bucket, Key=name, Body=data,
                                    ContentType=content_type)

        await self._call(f"writing {self.where(name)}", upload)

    async def remove(self, names: Sequence[str]) -> None:
        for start in range(0, len(names), _DELETE_BATCH):  # S3 takes 1000 keys per request
            await self._delete(names[start:start + _DELETE_BATCH])

    async def _delete(self, names: Sequence[str]) -> None:
        def remove() -> list[tuple[str, str]]:
            response = self._client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": name} for name in names], "Quiet": True})
            # a name already deleted (by a concurrent worker) is no error: the goal is reached
            return [(str(e.get("Key", "")), f"{e.get('Code', '')}: {e.get('Message', '')}")
                    for e in response.get("Errors", ()) if e.get("Code") not in _MISSING_OBJECT]

        failed = await self._call(f"deleting {len(names)} objects in {self.where()}", remove)
        if failed:
            name, why = failed[0]
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise StorageError(f"s3 storage: deleting {self.where(name)} failed: {why}{more}")

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._client.close)
