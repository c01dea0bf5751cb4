"""Which storage a process uses, announced in Redis so that the processes of a prefix agree.

A server reads snapshots from its storage and a worker writes them to its own. When the two are
different storages, the worker trims what it persisted from the stream and the server's clients
get documents without it: lost for them. So ``ysync serve`` and ``ysync-worker`` announce their
storage identity (:class:`StorageIdentity`: the kind plus bucket and prefix, S3 endpoint and
bucket, PostgreSQL host, port and database, or the filesystem folder's id; never a password, a
key or a user's secret) in the hash ``<prefix>:ysync:storage``, one field per process, and a
process refuses to start when a live process of its prefix uses another storage
(docs/storage.md, "One storage per prefix"):

- first come, first served: a starting process is checked against the entries already there,
  in one Redis transaction (two processes starting at once are checked one after the other);
- a worker (``ysync-worker``, or ``ysync serve`` running the worker in-process) must use the
  same storage as every live process; a server that only reads needs the same storage as every
  live worker (two such servers on different storages lose nothing until a worker comes, and
  that worker is refused);
- memory storage belongs to one process: its identity never equals another process's;
- an entry is live for :data:`ANNOUNCE_TTL` seconds after it was last refreshed (every
  :data:`ANNOUNCE_INTERVAL` seconds; Redis's clock, so hosts' clocks do not matter); a clean
  stop deletes it, a crashed process's entry expires and is deleted by the next announcement;
  the key itself expires with its last live entry.

y-redis neither reads nor writes this key. :func:`storage_identity`, :func:`split_live`,
:func:`find_conflict` and :func:`conflict_message` are pure; :func:`announce` and
:func:`announced_storage` are the thin Redis part.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote

import anyio
import anyio.to_thread
import redis.exceptions as redis_errors

from ysync.config import Config, redact_url
from ysync.errors import BusError, ConfigError, StorageError
from ysync.redis_clients import RedisClient, any_redis_client

log = logging.getLogger(__name__)

#: Seconds an announcement stays live after its process last refreshed it.
ANNOUNCE_TTL = 30.0
#: Seconds between two refreshes of a process's announcement.
ANNOUNCE_INTERVAL = 10.0

ROLE_SERVER = "server"
ROLE_WORKER = "worker"
ROLE_SERVER_AND_WORKER = "server+worker"

#: The id file of a filesystem storage, in its root. encodeURIComponent never writes a ``%``
#: that two hex digits do not follow, so no room's folder can have this name.
FOLDER_ID_NAME = "%ysync-storage-id"

_TRANSACTION_ATTEMPTS = 10


def server_role(config: Config) -> str:
    """The role of ``ysync serve`` with ``config``: a worker too when it runs one in-process."""
    return ROLE_SERVER_AND_WORKER if config.run_worker else ROLE_SERVER


def announce_key(prefix: str) -> str:
    """The hash of the prefix's storage announcements (one field per process)."""
    return f"{prefix}:ysync:storage"


@dataclass(frozen=True, slots=True)
class StorageIdentity:
    """``key``: equal for two processes exactly when they use the same storage.
    ``shown``: the storage for people (in messages), without secrets."""

    key: str
    shown: str


@dataclass(frozen=True, slots=True)
class Announcement:
    """One process's entry: who it is, what it does (``role``), which storage it uses."""

    process: str
    role: str
    storage: StorageIdentity
    host: str
    pid: int
    seen_ms: int = 0  #: when it was last refreshed (Redis's clock, ms)
    expires_ms: int = 0  #: when it stops being live unless refreshed again

    @property
    def writes(self) -> bool:
        """True for a worker (it persists snapshots and trims streams)."""
        return self.role != ROLE_SERVER

    def describe(self) -> str:
        return f"{self.role} (pid {self.pid} on {self.host})"

    def to_json(self, seen_ms: int, ttl_ms: int) -> str:
        return json.dumps({"role": self.role, "storage": self.storage.key,
                           "shown": self.storage.shown, "host": self.host, "pid": self.pid,
                           "seen": seen_ms, "expires": seen_ms + ttl_ms}, ensure_ascii=False)

    @classmethod
    def from_json(cls, process: str, raw: str | bytes) -> Announcement | None:
        """The entry of field ``process``; ``None`` when it is not one (it is then dropped)."""
        try:
            value = json.loads(raw)
            return cls(process, str(value["role"]),
                       StorageIdentity(str(value["storage"]), str(value["shown"])),
                       str(value["host"]), int(value["pid"]), int(value["seen"]),
                       int(value["expires"]))
        except (ValueError, TypeError, KeyError):
            return None


# --- pure -----------------------------------------------------------------------------------


def storage_identity(config: Config, *, host: str, process: str,
                     folder_id: str | None = None,
                     environ: Mapping[str, str] | None = None) -> StorageIdentity:
    """The identity of ``config``'s storage as seen by process ``process`` on ``host``.

    ``folder_id``: the filesystem storage's id file content (:func:`read_folder_id`); without
    it a folder is known by host and absolute path. ``environ``: for the libpq defaults
    (``PGHOST``, ...) and ``STORAGE_EMULATOR_HOST``.
    """
    environ = os.environ if environ is None else environ
    kind = config.storage_kind
    if kind == "memory":
        return StorageIdentity(f"memory:{process}",
                               f"memory of process {process[:8]} on {host} (its own)")
    if kind == "filesystem":
        path = os.path.abspath(config.storage_path)
        shown = f"filesystem {path} on {host}"
        if folder_id:
            return StorageIdentity(f"filesystem:{folder_id}", f"{shown} (folder id {folder_id})")
        return StorageIdentity(f"filesystem:{host}:{path}", shown)
    if kind == "gcs":
        prefix = config.storage.gcs_prefix
        if prefix and not prefix.endswith("/"):
            prefix += "/"  # as GcsStorage uses it
        name = f"gcs://{config.storage.gcs_bucket}/{prefix}"
        emulator = environ.get("STORAGE_EMULATOR_HOST", "")
        if emulator:
            name += f" (emulator {redact_url(emulator)})"
        return StorageIdentity(name, name)
    if kind == "postgres":
        name = postgres_identity(config.storage.postgres, environ)
        return StorageIdentity(name, name)
    if kind == "s3":
        name = f"s3://{config.storage.s3_bucket} at {config.storage.s3_endpoint_url}"
        return StorageIdentity(name, name)  # the keys are never part of it
    raise ConfigError(f"setting storage.kind: unknown storage {kind!r}")


def postgres_identity(url: str, environ: Mapping[str, str]) -> str:
    """``postgres://host:port[,host:port]/dbname[?options=...]`` of a libpq URL: what names
    the database (user name and password left out), with libpq's defaults filled in."""
    rest = url.partition("://")[2].partition("#")[0]
    # the user part ends at the last "@" before the query, whatever a password holds
    at = rest.rfind("@", 0, rest.find("?") if "?" in rest else len(rest))
    userinfo, rest = (rest[:at], rest[at + 1:]) if at >= 0 else ("", rest)
    end = min([rest.index(c) for c in "/?" if c in rest] + [len(rest)])
    netloc, (path, _, query_text) = rest[:end], rest[end:].partition("?")
    query = {k: v[-1] for k, v in parse_qs(query_text).items()}
    user = unquote(userinfo.partition(":")[0])
    default_port = query.get("port") or environ.get("PGPORT") or "5432"
    hosts = []
    for item in (query.get("host") or unquote(netloc) or environ.get("PGHOST")
                 or "localhost").split(","):
        if item.startswith("["):
            name, _, after = item[1:].partition("]")
            name, port = f"[{name.lower()}]", after.removeprefix(":")
        elif item.startswith("/"):
            name, port = item, ""  # a Unix socket folder
        else:
            name, _, port = item.partition(":")
            name = name.lower() or "localhost"
        hosts.append(f"{name}:{port or default_port}")
    dbname = (query.get("dbname") or unquote(path.lstrip("/")) or environ.get("PGDATABASE")
              or user or environ.get("PGUSER", ""))
    name = f"postgres://{','.join(hosts)}/{dbname}"
    if query.get("options"):
        name += f"?options={query['options']}"  # e.g. -csearch_path=...: another table
    return name


def split_live(entries: Mapping[str, Announcement | None],
               now_ms: int) -> tuple[list[Announcement], list[str]]:
    """The live announcements, and the fields to delete (expired, or not an announcement)."""
    live, stale = [], []
    for field, entry in entries.items():
        if entry is None or entry.expires_ms <= now_ms:
            stale.append(field)
        else:
            live.append(entry)
    return live, stale


def find_conflict(own: Announcement, others: Iterable[Announcement]) -> Announcement | None:
    """The first of ``others`` (live processes of the prefix) that ``own`` must not run beside:
    another process on another storage where at least one of the two is a worker."""
    for other in others:
        if other.process == own.process or other.storage.key == own.storage.key:
            continue
        if own.writes or other.writes:
            return other
    return None


def conflict_message(prefix: str, own: Announcement, other: Announcement, now_ms: int) -> str:
    """Why ``own`` is refused: both storages named, and what to do."""
    age = max(0, now_ms - other.seen_ms) / 1000
    left = max(0, other.expires_ms - now_ms) / 1000
    text = (
        f"storage mismatch on prefix {prefix!r}: this {own.describe()} uses "
        f"{own.storage.shown}, but a live {other.describe()}, announced {age:.0f} s ago, uses "
        f"{other.storage.shown}. Every server and worker of a prefix must use one storage "
        f"(setting storage.kind, YSYNC_STORAGE_KIND, and its storage.* settings): a worker "
        f"trims what it persisted from the streams, and a server reading another storage "
        f"would serve documents without it.")
    if own.storage.key.startswith("memory:") or other.storage.key.startswith("memory:"):
        text += (" Memory storage is each process's own, shared with no other process: "
                 "choose filesystem, gcs, postgres or s3 (or run the worker inside the one "
                 "server: worker.enabled = yes).")
    return text + (f" If that process has stopped, its announcement expires in {left:.0f} s "
                   f"(key {announce_key(prefix)}).")


# --- Redis ----------------------------------------------------------------------------------


def read_folder_id(root: Path) -> str | None:
    """The id of the filesystem storage at ``root`` (a UUID in :data:`FOLDER_ID_NAME`, created
    on first use), so that processes that see one folder under different paths or hosts (a
    shared volume, NFS) agree. ``None`` when it can be neither read nor created (blocking)."""
    marker = root / FOLDER_ID_NAME
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            temp = root / f".tmp-{uuid.uuid4()}"
            temp.write_text(f"{uuid.uuid4()}\n")
            try:
                os.link(temp, marker)  # fails if another process created it first
            except FileExistsError:
                pass
            finally:
                temp.unlink(missing_ok=True)
        value = marker.read_text().strip()
    except OSError as exc:
        log.warning("storage id file %s: %s; this storage is known by host and path", marker,
                    exc)
        return None
    return value or None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


async def announce(client: RedisClient, prefix: str, own: Announcement, *,
                   ttl: float = ANNOUNCE_TTL) -> str | None:
    """Add or refresh ``own``'s entry unless a live entry conflicts with it (then nothing is
    written and the conflict's message is returned). Expired entries are deleted on the way.
    Raises BusError when Redis fails."""
    key = announce_key(prefix)
    ttl_ms = int(ttl * 1000)
    try:
        for _ in range(_TRANSACTION_ATTEMPTS):
            # Redis's clock, read apart: a cluster runs no keyless command in a transaction
            seconds, micros = await client.time()
            async with client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hgetall(key)
                    now_ms = int(seconds) * 1000 + int(micros) // 1000
                    entries = {_text(f): Announcement.from_json(_text(f), v)
                               for f, v in raw.items()}
                    live, stale = split_live(entries, now_ms)
                    other = find_conflict(own, live)
                    if other is not None:
                        return conflict_message(prefix, own, other, now_ms)
                    # the key outlives its longest-lived entry, and no longer
                    key_ttl = max([now_ms + ttl_ms] + [e.expires_ms for e in live]) - now_ms
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(key, own.process, own.to_json(now_ms, ttl_ms))
                    if stale:
                        pipe.hdel(key, *stale)
                    pipe.pexpire(key, key_ttl)
                    await pipe.execute()
                    return None
                except redis_errors.WatchError:
                    continue  # another process announced meanwhile: look again
    except (redis_errors.RedisError, OSError) as exc:
        raise BusError(f"announcing the storage in Redis ({key}) failed: {exc}") from exc
    raise BusError(f"announcing the storage in {key}: {_TRANSACTION_ATTEMPTS} attempts lost "
                   f"to concurrent announcements")


async def withdraw(client: RedisClient, prefix: str, process: str) -> None:
    """Delete ``process``'s entry (a clean stop). Raises BusError when Redis fails."""
    try:
        await client.hdel(announce_key(prefix), process)
    except (redis_errors.RedisError, OSError) as exc:
        raise BusError(f"withdrawing the storage announcement failed: {exc}") from exc


class Announcer:
    """This process's announcement on one Redis: :meth:`keep_fresh` refreshes it until
    cancelled (run it in the owner's task group)."""

    def __init__(self, client: RedisClient, prefix: str, own: Announcement, *,
                 interval: float, ttl: float, call_timeout: float) -> None:
        self.client = client
        self.prefix = prefix
        self.own = own
        self.interval = interval
        self.ttl = ttl
        self.call_timeout = call_timeout
        self._lock = anyio.Lock()  # a refresh never lands after the withdrawal
        self._withdrawn = False

    async def keep_fresh(self) -> None:
        """Refresh every ``interval`` seconds until withdrawn; a failure is logged and retried,
        and a conflict found then (Redis lost the key, and another storage announced meanwhile)
        is logged as an error: the process already runs, so it reports rather than stops."""
        while True:
            await anyio.sleep(self.interval)
            async with self._lock:
                if self._withdrawn:
                    return
                try:
                    with anyio.fail_after(self.interval):
                        conflict = await announce(self.client, self.prefix, self.own,
                                                  ttl=self.ttl)
                except (BusError, TimeoutError) as exc:
                    log.warning("refreshing the storage announcement failed (retrying in "
                                "%.0f s): %s", self.interval, exc)
                    continue
            if conflict is not None:
                log.error("%s", conflict)

    async def withdraw(self) -> None:
        """Delete the entry (a clean stop); a failure is logged (the entry then expires)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.call_timeout):
            async with self._lock:
                self._withdrawn = True
                try:
                    await withdraw(self.client, self.prefix, self.own.process)
                except BusError as exc:
                    log.warning("%s (it expires in %.0f s)", exc, self.ttl)


@asynccontextmanager
async def announced_storage(config: Config, redis_url: str, role: str, *,
                            interval: float = ANNOUNCE_INTERVAL,
                            ttl: float = ANNOUNCE_TTL) -> AsyncIterator[Announcer]:
    """Announce this process's storage on ``redis_url`` for ``config.redis.prefix``; withdraw
    it on exit. Run the yielded :meth:`Announcer.keep_fresh` meanwhile.

    Raises ConfigError (both storages named) when a live process of the prefix conflicts
    (:func:`find_conflict`), BusError when Redis cannot be reached, StorageError when a
    filesystem storage's folder does not answer.
    """
    host = socket.gethostname()
    process = uuid.uuid4().hex
    folder_id: str | None = None
    if config.storage_kind == "filesystem":
        try:
            with anyio.fail_after(config.storage.timeout):
                folder_id = await anyio.to_thread.run_sync(read_folder_id, config.storage_path,
                                                           abandon_on_cancel=True)
        except TimeoutError as exc:
            raise StorageError(f"filesystem storage: reading its id file in "
                               f"{config.storage_path} timed out after "
                               f"{config.storage.timeout} s") from exc
    own = Announcement(process, role, storage_identity(config, host=host, process=process,
                                                       folder_id=folder_id),
                       host, os.getpid())
    prefix = config.redis.prefix
    client = any_redis_client(redis_url, config)
    try:
        try:
            with anyio.fail_after(config.redis.timeout):
                conflict = await announce(client, prefix, own, ttl=ttl)
        except TimeoutError as exc:
            raise BusError(f"announcing the storage: no answer from Redis within "
                           f"{config.redis.timeout} s") from exc
        if conflict is not None:
            raise ConfigError(conflict)
        log.info("storage announced for prefix %r: %s", prefix, own.storage.shown)
        announcer = Announcer(client, prefix, own, interval=interval, ttl=ttl,
                              call_timeout=config.redis.timeout)
        try:
            yield announcer
        finally:
            await announcer.withdraw()
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()
