"""The update callback (``YDOC_UPDATE_CALLBACK``): tell an application a document changed.

Like y-redis's ``bin/worker.js``: an HTTP ``PUT <url>/<room>`` with a multipart form whose field
``ydoc`` is the whole document as a v2 update, sent as a file named ``blob`` of type
``application/octet-stream`` (what a JavaScript ``FormData`` makes of a ``Blob``). The room is
appended as the URL parser of JavaScript would: characters a path cannot hold are percent-encoded,
existing ``%XX`` escapes are kept.

A failure (error status, refused connection, timeout) is logged and never stops the worker from
persisting the document.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import anyio
import httpx

log = logging.getLogger(__name__)

# Characters kept as they are: the usual path characters and '%' (so escapes survive); '?' and '#'
# are encoded too, so that a room cannot turn into a query or a fragment.
_PATH_SAFE = "!$%&'()*+,-./:;=@_~"


def callback_url(base: str, room: str) -> str:
    """``<base>/<room>`` as y-redis builds it (``new URL(room, base + '/')``)."""
    if not base.endswith("/"):
        base += "/"
    return base + quote(room, safe=_PATH_SAFE)


async def send_update(url: str, room: str, update_v2: bytes, *, call_timeout: float,
                      transport: httpx.AsyncBaseTransport | None = None) -> bool:
    """PUT the document to the callback. True if it answered 2xx; failures are logged."""
    target = callback_url(url, room)
    files = {"ydoc": ("blob", update_v2, "application/octet-stream")}
    try:
        with anyio.fail_after(call_timeout):
            async with httpx.AsyncClient(timeout=call_timeout, transport=transport) as http:
                response = await http.put(target, files=files)
    except TimeoutError:
        log.error("update callback %s: no answer within %s s", target, call_timeout)
        return False
    except httpx.HTTPError as exc:
        log.error("update callback %s failed: %s", target, exc)
        return False
    if not response.is_success:
        log.error('Issue sending data to YDOC_UPDATE_CALLBACK. status="%d" statusText="%s" '
                  "url=%s", response.status_code, response.reason_phrase, target)
        return False
    log.debug("update callback %s: %d", target, response.status_code)
    return True
