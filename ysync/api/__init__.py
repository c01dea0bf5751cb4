"""The document API: documents read, written, listed by version and rolled back over HTTP.

``GET /api/v1/rooms/<room>`` and friends (docs/api.md), on a listener of their own
(``api.host``, ``api.port``) inside ``ysync serve``: :func:`serve_api`. Modules:
:mod:`~ysync.api.http` (a bounded HTTP/1.1 server on h11), :mod:`~ysync.api.access` (tokens,
the permission callback, the backend secret), :mod:`~ysync.api.routes` (the endpoints).
"""

from ysync.api.routes import DocumentApi, serve_api

__all__ = ["DocumentApi", "serve_api"]
