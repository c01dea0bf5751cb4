"""ysync: a horizontally scaled Yjs sync server on Redis Streams, wire-compatible with y-redis."""

__version__ = "0.1.0"
