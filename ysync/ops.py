"""Operator tasks behind ``ysync doc show`` and ``ysync redis clean``."""

from __future__ import annotations

import re
from typing import Any

import pycrdt
import redis.exceptions as redis_errors

from ysync.config import Config
from ysync.docs import load_doc
from ysync.errors import BusError, ConfigError, UpdateFormatError
from ysync.redis_clients import RedisClient, any_redis_client
from ysync.storage.base import Storage
from ysync.storage.factory import open_storage
from ysync.streams import INDEX_DOC

_SCAN_COUNT = 1000
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


async def show_doc(config: Config, room: str, docid: str = INDEX_DOC, *,
                   client: RedisClient | None = None,
                   storage: Storage | None = None) -> dict[str, Any]:
    """The document as the server would load it (stored snapshots + pending stream) as JSON.

    ``client`` and ``storage`` default to ones opened from ``config`` for this call (a Redis URL
    is then required). See :func:`doc_to_json` for the shape.
    """
    own_client = client is None
    if client is None:
        if not config.redis.url:
            raise ConfigError("setting redis.url (REDIS): required to read a document")
        client = any_redis_client(config.redis.url, config)
    try:
        if storage is not None:
            loaded = await load_doc(client, storage, config.layout, room, docid)
        else:
            async with open_storage(config) as opened:
                loaded = await load_doc(client, opened, config.layout, room, docid)
    finally:
        if own_client:
            await client.aclose()
    # pycrdt only reads here: what it shows is never written back anywhere
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    try:
        doc.apply_update(loaded.full_update)
    except ValueError as exc:
        raise UpdateFormatError(f"room {room!r} holds content pycrdt cannot read (a lone UTF-16 "
                                "surrogate in formatting JSON, an XML hook): it is served and "
                                "compacted, but cannot be shown as JSON") from exc
    return doc_to_json(doc)


def doc_to_json(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    """Every root type of ``doc`` as JSON values, by root name.

    A Yjs update does not say which type a root is, so it is guessed from the content: a map
    (keys), a text (characters), an array (values), or an XML fragment (elements, shown as an XML
    string). An empty root, whose type cannot be known, is ``null``. Numbers that are whole are
    shown as integers and binary values as lists of byte values (as Yjs's ``toJSON`` does).
    """
    out: dict[str, Any] = {}
    for name in list(doc.keys()):
        out[name] = _root_to_json(doc, name)
    return out


def _root_to_json(doc: pycrdt.Doc[Any], name: str) -> Any:
    as_map = doc.get(name, type=pycrdt.Map)
    if len(as_map) > 0:
        return _shared_to_json(as_map)
    as_text = str(doc.get(name, type=pycrdt.Text))
    if as_text:
        return as_text
    as_array = doc.get(name, type=pycrdt.Array)
    if len(as_array) > 0:
        try:
            return _plain(as_array.to_py())
        except ValueError:
            return str(doc.get(name, type=pycrdt.XmlFragment))
    return None


def _shared_to_json(value: pycrdt.Map[Any]) -> Any:
    try:
        return _plain(value.to_py())
    except ValueError:
        # holds XML types, which have no Python value: return each entry on its own
        out: dict[str, Any] = {}
        for key in value.keys():
            item = value[key]
            try:
                out[key] = _plain(item.to_py() if hasattr(item, "to_py") else item)
            except ValueError:
                out[key] = str(item)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return list(bytes(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, pycrdt.Doc):
        return {"guid": value.guid}  # a subdocument: its content lives elsewhere
    return value


async def clean_prefix(client: RedisClient, prefix: str) -> int:
    """Delete every key ``<prefix>:*`` (streams, the worker queue); return how many.

    Uses SCAN, so Redis stays responsive; keys written meanwhile may survive.
    """
    pattern = _GLOB_SPECIAL.sub(r"\\\1", prefix) + ":*"
    deleted = 0
    try:
        batch: list[bytes | str] = []
        async for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _SCAN_COUNT:
                deleted += int(await client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(await client.delete(*batch))
    except redis_errors.RedisError as exc:
        raise BusError(f"deleting the keys of prefix {prefix!r} failed: {exc}") from exc
    return deleted
