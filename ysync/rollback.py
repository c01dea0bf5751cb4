"""The update that turns a document back into one of its earlier versions: a rollback.

Not a rewrite of history: like Yjs's ``UndoManager``, the rollback is one new update, by a new
client, that every replica applies as it applies any other, so clients that are online stay in
sync and nothing they hold leaves the log. Given the current document and a version of it (both
as updates; the version as ysync stored it), it

* deletes every item that is part of the document now but was not then (inserted since, or the
  newer value of a map key), by its id in the update's delete set;
* re-inserts what was part of the version and has been deleted since, as Yjs's ``redoItem``
  does: a new item with the deleted one's content (the exact struct content the version holds,
  never re-encoded), placed just before the deleted item (its origin the item left of it in the
  current document, its right origin the deleted item itself), or, for a map key, as the key's
  newest value (its origin the key's current newest item);
* re-creates a nested type that was deleted since (a ``Y.Map`` in a map, a ``Y.Text`` in an
  array, an XML element) as a new type holding the version's content, recursively.

Positions come from :class:`~ysync.doctree.DocTree`, which orders items as Yjs does. This works
for every shared type, since all are sequences and maps of items (text with formatting and
embeds, arrays, maps, XML elements with attributes, XML texts, hooks, subdocuments as items).
What it cannot do: restore content the current document does not hold at all (a version of
another document, or one newer than the document: :class:`~ysync.errors.DocumentError`), and
bring back a subdocument's own content, which lives in another document.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ysync.doctree import DocTree, Node, TypeKey, content_of, cut_points
from ysync.errors import DocumentError
from ysync.updates.merge import merge_delete_sets
from ysync.updates.structs import ID, TYPE, DeleteSet, Struct, Update
from ysync.updates.v1 import decode_v1, encode_v1
from ysync.updates.v2 import decode_v2

#: A v1 update that changes nothing.
EMPTY_UPDATE = b"\x00\x00"
#: Yjs client ids are unsigned 32-bit integers (``random.uint32()``).
_MAX_CLIENT = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Rollback:
    """The inverse change: ``update`` (v1; :data:`EMPTY_UPDATE` when the document already is
    the version), written by ``client``, deleting ``deleted`` items and re-inserting
    ``restored`` ones."""

    update: bytes
    client: int
    deleted: int
    restored: int


class _Writer:
    """The new client's items, clock after clock, and the delete set."""

    def __init__(self, client: int) -> None:
        self.client = client
        self.clock = 0
        self.structs: list[Struct] = []
        self.delete_set: DeleteSet = {}
        self.restored = 0

    def add(self, struct: Struct, origin: ID | None, right_origin: ID | None,
            parent: TypeKey | None = None, parent_sub: str | None = None) -> ID:
        """Append an item with ``struct``'s content; return the id of its last unit."""
        placed = origin is not None or right_origin is not None
        # with an origin or a right origin, Yjs takes parent and key from that neighbour
        self.structs.append((struct[0], struct[1], origin, right_origin,
                             None if placed else parent, None if placed else parent_sub,
                             struct[6]))
        first = self.clock
        self.clock += struct[1]
        self.restored += 1
        return (self.client, first + struct[1] - 1)

    def delete(self, node: Node) -> None:
        self.delete_set.setdefault(node.client, []).extend((node.clock, node.length))

    def update(self) -> bytes:
        sections = [(self.client, 0, self.structs)] if self.structs else []
        return encode_v1(Update(sections, merge_delete_sets([self.delete_set])))


class _Rollback:
    def __init__(self, now: DocTree, then: DocTree, writer: _Writer) -> None:
        self.now = now
        self.then = then
        self.out = writer
        self.kept = {node.id for node in then.nodes() if then.alive(node)}

    def run(self) -> None:
        for node in self.now.nodes():
            if self.now.alive(node) and node.id not in self.kept:
                self.out.delete(node)
        for key in list(self.then.types):
            if isinstance(key, str):
                self.patch(key)

    def _counterpart(self, node: Node) -> Node:
        """The current document's node with ``node``'s ids (cut alike: see DocTree)."""
        found = self.now.find(node.id)
        if found is None or found.clock != node.clock or found.length != node.length:
            raise DocumentError(
                f"the version holds content the current document does not (client "
                f"{node.client}, clock {node.clock}): it is not an earlier state of this "
                f"document")
        return found

    def _version_node(self, now_node: Node) -> Node:
        node = self.then.find(now_node.id)
        assert node is not None and node.clock == now_node.clock
        return node

    def patch(self, key: TypeKey) -> None:
        """Bring a type alive in both documents back to the version's content."""
        for then_node in self.then.children(key):
            now_node = self._counterpart(then_node)
            if not now_node.integrated or now_node.parent != key:
                raise DocumentError(
                    f"the current document lost an item of the version (client "
                    f"{then_node.client}, clock {then_node.clock}): it cannot be put back in "
                    "its place")
        state = self.now.types.get(key)
        nodes = [] if state is None else list(state.sequence())
        i = 0
        while i < len(nodes):
            node = nodes[i]
            i += 1
            if node.id not in self.kept:
                continue
            if self.now.alive(node):
                if node.ref == TYPE:
                    self.patch(node.id)
                continue
            # a run of deleted items to restore as one copy, placed before the first: it may
            # pass over items the rollback deletes, never over one that stays
            first = last = self._version_node(node)
            j = i
            while j < len(nodes) and (nodes[j].id not in self.kept
                                      or not self.now.alive(nodes[j])):
                if nodes[j].id in self.kept:
                    following = self._version_node(nodes[j])
                    if not last.same_source(following):
                        break
                    last = following
                    i = j + 1
                j += 1
            left = node.left
            self.copy(first, last, left.last_id if left else None, node.id)
        for sub, then_node in self.then.entries(key).items():
            now_node = self._counterpart(then_node)
            if self.now.alive(now_node):
                if now_node.ref == TYPE:
                    self.patch(now_node.id)
                continue
            newest = None if state is None else state.entries.get(sub)
            if newest is None:
                raise DocumentError(f"key {sub!r} of the version is unknown to the current "
                                    "document: it is not an earlier state of this document")
            self.copy(then_node, then_node, newest.last_id, None)

    def copy(self, first: Node, last: Node, origin: ID | None, right_origin: ID | None,
             parent: TypeKey | None = None, parent_sub: str | None = None) -> ID:
        """Insert a copy of the version's nodes ``first`` to ``last`` (one source; a nested
        type with its whole content)."""
        struct = content_of(first, last.clock + last.length)
        new_last = self.out.add(struct, origin, right_origin, parent, parent_sub)
        if first.ref == TYPE:
            self.fill(first.id, new_last)
        return new_last

    def fill(self, version_key: TypeKey, new_key: ID) -> None:
        """Give the new type ``new_key`` the content the version's type ``version_key`` has."""
        children = self.then.children(version_key)
        previous: ID | None = None
        i = 0
        while i < len(children):
            first = last = children[i]
            i += 1
            while i < len(children) and last.same_source(children[i]):
                last = children[i]
                i += 1
            if previous is None:
                previous = self.copy(first, last, None, None, new_key)
            else:
                previous = self.copy(first, last, previous, None)
        for sub, child in self.then.entries(version_key).items():
            self.copy(child, child, None, None, new_key, sub)


def rollback(current_v1: bytes, version_v2: bytes, client: int | None = None) -> Rollback:
    """The update that makes the document ``current_v1`` (a v1 update of the whole document)
    what the version ``version_v2`` (a v2 snapshot of it) was (see the module docstring).

    ``client``: the new client id (default: a random one neither document has). Pure and
    CPU-bound. Raises UpdateFormatError for bytes that do not decode, DocumentError for a
    version that is not an earlier state of the document.
    """
    current = decode_v1(current_v1)
    version = decode_v2(version_v2)
    cuts = cut_points(version, cut_points(current, {}))
    now, then = DocTree(current, cuts), DocTree(version, cuts)
    if client is None:
        taken = {c for c, _, _ in current.sections} | {c for c, _, _ in version.sections}
        client = _fresh_client(taken)
    writer = _Writer(client)
    _Rollback(now, then, writer).run()
    deleted = sum(len(ranges) // 2 for ranges in writer.delete_set.values())
    if not writer.structs and not writer.delete_set:
        return Rollback(EMPTY_UPDATE, client, 0, 0)
    return Rollback(writer.update(), client, deleted, writer.restored)


def _fresh_client(taken: set[Any]) -> int:
    while True:
        candidate = random.randint(1, _MAX_CLIENT)
        if candidate not in taken:
            return candidate


__all__ = ["EMPTY_UPDATE", "Rollback", "rollback"]
