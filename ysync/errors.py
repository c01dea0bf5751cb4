"""The exceptions ysync raises.

Every error ysync raises on purpose derives from :class:`YsyncError`::

    YsyncError
    ├── ConfigError            a setting is missing or has a bad value (names the setting)
    ├── ProtocolError          bytes that are not a valid y-websocket message
    │   └── MessageTooLarge    a frame above the configured size limit
    ├── UpdateFormatError      bytes that are not a valid Yjs v1/v2 update
    ├── DocumentError          a document cannot be shown or changed as asked (JSON of a
    │                          binary value, a rollback to a version of another document)
    ├── AuthError              a token or permission check failed (becomes HTTP 401)
    ├── StorageError           a storage backend failed (translated from its client library)
    ├── BusError               Redis failed or answered unexpectedly (translated from redis-py)
    └── EmbeddedRedisError     the embedded redis-server could not be started

Third-party errors are translated at the module that talks to the library and chained with
``raise ... from exc``.
"""

from __future__ import annotations


class YsyncError(Exception):
    """Root of every error ysync raises on purpose."""


class ConfigError(YsyncError):
    """A setting is missing or invalid; the message names the setting and the bad value."""


class ProtocolError(YsyncError):
    """Bytes received on a WebSocket are not a valid y-websocket message."""


class MessageTooLarge(ProtocolError):
    """A message is larger than the configured limit."""


class UpdateFormatError(YsyncError):
    """Bytes are not a valid Yjs update in the expected encoding."""


class DocumentError(YsyncError):
    """A document cannot be shown or changed as asked; the message says why (safe to show)."""


class AuthError(YsyncError):
    """Authentication or authorization failed. ``reason`` is safe to show to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StorageError(YsyncError):
    """A storage backend failed to read, write or delete."""


class BusError(YsyncError):
    """Redis failed or answered with something unexpected."""


class EmbeddedRedisError(YsyncError):
    """The embedded redis-server could not be started or stopped cleanly."""
