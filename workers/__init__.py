"""ysync's compaction worker: moves room streams into storage snapshots (docs/protocol.md).

:class:`workers.compactor.Worker` is the loop (also run inside ``ysync serve`` when embedded);
:mod:`workers.cli` is the ``ysync-worker`` command.
"""
