"""Joining rooms: one document load per room for all simultaneous joiners.

When a hundred clients open the same large document at once, the process loads it from storage
and Redis once; every joiner shares that load and is answered with only what its own state
vector lacks (a fresh client: the whole document, encoded once and shared).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ysync.connection import websocket_frame
from ysync.docs import LoadedDoc, load_doc
from ysync.metrics import Metrics
from ysync.protocol import encode_sync_step2
from ysync.storage.base import Storage
from ysync.streams import INDEX_DOC, Layout

log = logging.getLogger(__name__)


@dataclass(slots=True)
class JoinDoc:
    """A loaded document shared by the clients that joined while it was loading."""

    loaded: LoadedDoc
    _step2_cache: dict[bytes, bytes] = field(default_factory=dict)

    async def sync_step2(self, state_vector: bytes) -> bytes:
        """The sync step 2 frame answering ``state_vector``: only what that client lacks.

        Answers for the same state vector (typically the empty one of fresh clients) are
        encoded once and shared.
        """
        cached = self._step2_cache.get(state_vector)
        if cached is None:
            cached = websocket_frame(encode_sync_step2(await self.loaded.diff(state_vector)))
            if len(self._step2_cache) < 8:
                self._step2_cache[state_vector] = cached
        return cached


class _Flight:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: JoinDoc | None = None
        self.error: BaseException | None = None


class DocLoader:
    """Coalesces concurrent loads of the same room into one.

    Loads run in the server's task group, so a joiner that disconnects does not cancel the load
    the other joiners wait for.
    """

    def __init__(self, task_group: TaskGroup, client: Any, storage: Storage,
                 layout: Layout | str, metrics: Metrics | None = None) -> None:
        self._tg = task_group
        self._client = client
        self._storage = storage
        self._layout = layout
        self._flights: dict[str, _Flight] = {}
        self._metrics = metrics

    async def load(self, room: str) -> JoinDoc:
        flight = self._flights.get(room)
        if flight is None:
            flight = self._flights[room] = _Flight()
            self._tg.start_soon(self._run, room, flight)
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.result is not None
        return flight.result

    async def _run(self, room: str, flight: _Flight) -> None:
        try:
            started = time.perf_counter()
            loaded = await load_doc(self._client, self._storage, self._layout, room, INDEX_DOC)
            if self._metrics is not None:
                self._metrics.doc_loads.inc()
                self._metrics.doc_load_seconds.observe(time.perf_counter() - started)
            flight.result = JoinDoc(loaded)
        except Exception as exc:  # handed to every waiter, which logs it with its context
            flight.error = exc
        finally:
            del self._flights[room]
            flight.done.set()
