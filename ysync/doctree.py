"""A document's items in the order Yjs gives them, computed from an update (read only).

:mod:`ysync.updates` moves and merges structs without knowing where an item stands among its
siblings; the document API needs that order to show a document as JSON and to write the inverse
change of a rollback (:mod:`ysync.rollback`). :class:`DocTree` integrates every item of a decoded
update as ``Item.integrate`` in Yjs 13.6 does (YATA: the conflict loop over items with the same
origin, map entries whose newest item wins, items whose parent or neighbour was collected
becoming GC) into linked lists, one per shared type and map key, without creating a Y.Doc and
without touching content: every node holds the struct tuple it was decoded as.

Items are cut first, so that every id an origin, a right origin or a delete-set range names is
the end or the start of a node (Yjs cuts them lazily, with the same result); two trees built
with the same :func:`cut_points` cut every id range they share the same way, so their nodes can
be compared by id. Items are integrated client by client (highest client first, as
``integrateStructs``), each after what it depends on; an item whose dependency is missing stays
pending, as in Yjs, and is in no list.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator

from ysync.updates.gc import head
from ysync.updates.lib0 import js_to_str
from ysync.updates.merge import slice_block
from ysync.updates.structs import DELETED, GC, ID, SKIP, TYPE, Struct, Update

#: A shared type: a root type's name, or the id of the item that holds a nested type.
TypeKey = str | ID
#: Per client, the clocks at which a node must start.
Cuts = dict[int, set[int]]

# node states
_WAITING = 0
_ACTIVE = 1  # its dependencies are being integrated (on the stack)
_DONE = 2  # in its type's list (or map key chain)
_PENDING = 3  # a dependency is missing: in no list, as Yjs keeps pending structs
_COLLECTED = 4  # a GC struct, or an item Yjs turns into one (parent or neighbour collected)


class Node:
    """One struct of the document, cut so that references fall on its ends."""

    __slots__ = ("client", "clock", "struct", "source", "left", "right", "parent", "parent_sub",
                 "deleted", "state")

    def __init__(self, client: int, clock: int, struct: Struct,
                 source: tuple[int, Struct] | None = None) -> None:
        self.client = client
        self.clock = clock
        self.struct = struct
        #: the struct this node was cut from, and its first clock (None: not cut)
        self.source = source
        self.left: Node | None = None
        self.right: Node | None = None
        self.parent: TypeKey | None = None
        self.parent_sub: str | None = None
        self.deleted = struct[0] == DELETED
        self.state = _WAITING

    @property
    def id(self) -> ID:
        return (self.client, self.clock)

    @property
    def length(self) -> int:
        length: int = self.struct[1]
        return length

    @property
    def last_id(self) -> ID:
        return (self.client, self.clock + self.struct[1] - 1)

    @property
    def ref(self) -> int:
        """The content type (:mod:`ysync.updates.structs`), GC or SKIP."""
        ref: int = self.struct[0]
        return ref

    def same_source(self, other: Node) -> bool:
        """Whether ``other`` continues this node: the next clocks of one decoded struct."""
        return (self.source is not None and other.source is self.source
                and other.client == self.client
                and other.clock == self.clock + self.struct[1])

    @property
    def integrated(self) -> bool:
        """In a list: neither pending nor collected."""
        return self.state == _DONE

    def __repr__(self) -> str:
        return f"Node({self.client}, {self.clock}, ref={self.ref}, len={self.length})"


class TypeState:
    """A shared type's children: its sequence (``start``, then ``right`` links) and, per map
    key, the newest item of the key (``entries``, in the order keys first appeared)."""

    __slots__ = ("key", "start", "entries")

    def __init__(self, key: TypeKey) -> None:
        self.key = key
        self.start: Node | None = None
        self.entries: dict[str, Node] = {}

    def sequence(self) -> Iterator[Node]:
        """Every item of the sequence in document order, deleted ones included."""
        node = self.start
        while node is not None:
            yield node
            node = node.right


def cut_points(update: Update, into: Cuts) -> Cuts:
    """Add to ``into`` every clock where ``update`` starts or ends a struct, an origin or a
    right origin points, or a delete-set range starts or ends; return ``into``."""
    for client, clock, structs in update.sections:
        points = into.setdefault(client, set())
        for struct in structs:
            points.add(clock)
            if struct[0] != GC and struct[0] != SKIP:
                origin, right_origin = struct[2], struct[3]
                if origin is not None:
                    into.setdefault(origin[0], set()).add(origin[1] + 1)
                if right_origin is not None:
                    into.setdefault(right_origin[0], set()).add(right_origin[1])
            clock += struct[1]
            points.add(clock)
    for client, ranges in update.delete_set.items():
        points = into.setdefault(client, set())
        for i in range(0, len(ranges), 2):
            points.add(ranges[i])
            points.add(ranges[i] + ranges[i + 1])
    return into


def content_of(first: Node, end: int) -> Struct:
    """The struct for the clocks from ``first`` up to ``end`` (nodes of one source), cut from
    their source only at those two clocks: content that the cuts of another document split
    (a surrogate pair) comes out whole, as it was written."""
    if first.source is None:
        return first.struct
    clock, struct = first.source
    for start, piece in cut(struct, first.client, clock, [first.clock, end]):
        if start == first.clock:
            return piece
    raise ValueError("the clocks are not in the node's source")


def cut(struct: Struct, client: int, clock: int, points: list[int]) -> list[tuple[int, Struct]]:
    """``struct`` at ``(client, clock)`` cut at every clock of sorted ``points`` inside it."""
    length: int = struct[1]
    end = clock + length
    i = bisect_right(points, clock)
    if length == 1 or i == len(points) or points[i] >= end:
        return [(clock, struct)]
    pieces: list[tuple[int, Struct]] = []
    start, rest = clock, struct
    while i < len(points) and points[i] < end:
        n = points[i] - start
        pieces.append((start, head(rest, client, start, n)))
        rest = slice_block([client, start, rest[1], rest], n)[3]
        start = points[i]
        i += 1
    pieces.append((start, rest))
    return pieces


class _Client:
    __slots__ = ("clocks", "nodes")

    def __init__(self) -> None:
        self.clocks: list[int] = []
        self.nodes: list[Node] = []


class DocTree:
    """Every item of ``update`` integrated as Yjs would (module docstring).

    ``cuts``: clocks where nodes must start besides those of ``update`` itself (another
    document's :func:`cut_points`, to compare the two node by node).
    """

    def __init__(self, update: Update, cuts: Cuts | None = None) -> None:
        points = cut_points(update, {} if cuts is None else {c: set(p) for c, p in cuts.items()})
        self._clients: dict[int, _Client] = {}
        for client, clock, structs in update.sections:
            entry = self._clients.get(client)
            if entry is None:
                entry = self._clients[client] = _Client()
            sorted_points = sorted(points.get(client, ()))
            for struct in structs:
                pieces = cut(struct, client, clock, sorted_points)
                source = None if len(pieces) == 1 else (clock, struct)
                for start, piece in pieces:
                    entry.clocks.append(start)
                    entry.nodes.append(Node(client, start, piece, source))
                clock += struct[1]
        # every id a reference names is a node's first or last unit (cut so): found at once
        self._starts: dict[ID, Node] = {}
        self._ends: dict[ID, Node] = {}
        for entry in self._clients.values():
            for node in entry.nodes:
                self._starts[(node.client, node.clock)] = node
                self._ends[(node.client, node.clock + node.struct[1] - 1)] = node
        for client, ranges in update.delete_set.items():
            for i in range(0, len(ranges), 2):
                for node in self._range(client, ranges[i], ranges[i] + ranges[i + 1]):
                    node.deleted = True
        #: the shared types, by key: roots first seen first, as a Y.Doc's ``share``
        self.types: dict[TypeKey, TypeState] = {}
        self._alive: dict[ID, bool] = {}
        for client in sorted(self._clients, reverse=True):
            for node in self._clients[client].nodes:
                if node.state == _WAITING:
                    self._run(node)

    # --- lookups -----------------------------------------------------------------------------

    def find(self, ident: ID) -> Node | None:
        """The node holding ``ident``, or None."""
        found = self._ends.get(ident) or self._starts.get(ident)
        if found is not None:
            return found
        entry = self._clients.get(ident[0])
        if entry is None:
            return None
        i = bisect_right(entry.clocks, ident[1]) - 1
        if i < 0:
            return None
        node = entry.nodes[i]
        return node if ident[1] < node.clock + node.length else None

    def _range(self, client: int, start: int, end: int) -> Iterator[Node]:
        entry = self._clients.get(client)
        if entry is None:
            return
        i = max(0, bisect_right(entry.clocks, start) - 1)
        while i < len(entry.nodes) and entry.nodes[i].clock < end:
            node = entry.nodes[i]
            if node.clock >= start and node.clock + node.length <= end:
                yield node
            i += 1

    def nodes(self) -> Iterator[Node]:
        """Every node, by client and clock."""
        for entry in self._clients.values():
            yield from entry.nodes

    def alive(self, node: Node) -> bool:
        """Whether ``node`` is part of the document: integrated, not deleted (explicitly, or
        as the older value of a map key), inside a type that is alive itself."""
        if not node.integrated or node.deleted:
            return False
        parent = node.parent
        if not isinstance(parent, tuple):
            return True
        known = self._alive.get(parent)
        if known is None:
            holder = self.find(parent)
            known = holder is not None and self.alive(holder)
            self._alive[parent] = known
        return known

    def type_alive(self, key: TypeKey) -> bool:
        if not isinstance(key, tuple):
            return True
        holder = self.find(key)
        return holder is not None and self.alive(holder)

    def children(self, key: TypeKey) -> list[Node]:
        """The alive items of a type's sequence, in order."""
        state = self.types.get(key)
        return [] if state is None else [n for n in state.sequence() if self.alive(n)]

    def entries(self, key: TypeKey) -> dict[str, Node]:
        """The alive value of every key of a type's map, in the order keys appeared."""
        state = self.types.get(key)
        if state is None:
            return {}
        return {k: n for k, n in state.entries.items() if self.alive(n)}

    # --- integration -------------------------------------------------------------------------

    def _dependencies(self, node: Node) -> list[ID]:
        deps = [(node.client, node.clock - 1)] if node.clock > 0 else []
        struct = node.struct
        if struct[0] != GC:
            deps += [ident for ident in (struct[2], struct[3]) if ident is not None]
            if isinstance(struct[4], tuple):
                deps.append(struct[4])
        return deps

    def _run(self, first: Node) -> None:
        """Integrate ``first`` after everything it depends on (an explicit stack: documents
        can be long chains of dependencies)."""
        stack = [first]
        while stack:
            node = stack[-1]
            if node.state != _WAITING and node.state != _ACTIVE:
                stack.pop()
                continue
            if node.ref == SKIP:
                node.state = _PENDING
                stack.pop()
                continue
            node.state = _ACTIVE
            waiting: Node | None = None
            for ident in self._dependencies(node):
                dep = self.find(ident)
                if dep is None or dep.state == _PENDING or dep.state == _ACTIVE:
                    node.state = _PENDING  # missing, or a cycle (malformed): never integrated
                    break
                if dep.state == _WAITING:
                    waiting = dep
                    break
            if node.state == _PENDING:
                stack.pop()
            elif waiting is not None:
                stack.append(waiting)
            else:
                stack.pop()
                if node.ref == GC:
                    node.state = _COLLECTED
                else:
                    self._integrate(node)

    def _type(self, key: TypeKey) -> TypeState:
        state = self.types.get(key)
        if state is None:
            state = self.types[key] = TypeState(key)
        return state

    def _integrate(self, node: Node) -> None:
        """``Item.getMissing`` (parent resolution) and ``Item.integrate`` of Yjs 13.6."""
        struct = node.struct
        left = None if struct[2] is None else self.find(struct[2])
        right = None if struct[3] is None else self.find(struct[3])
        if (left is not None and left.state == _COLLECTED) or (
                right is not None and right.state == _COLLECTED):
            node.state = _COLLECTED
            return
        parent: TypeKey | None
        sub: str | None
        if struct[4] is None:
            source = left if left is not None else right
            if source is None:
                node.state = _COLLECTED  # no parent at all: Yjs integrates it as GC
                return
            parent, sub = source.parent, source.parent_sub
        elif isinstance(struct[4], tuple):
            holder = self.find(struct[4])
            if holder is None or holder.state == _COLLECTED or holder.ref != TYPE:
                # a deleted type (ContentDeleted, or collected): Yjs finds no type, so GC
                node.state = _COLLECTED
                return
            parent = holder.id
            sub = None if struct[5] is None else js_to_str(struct[5])
        else:
            parent = js_to_str(struct[4])
            sub = None if struct[5] is None else js_to_str(struct[5])
        if parent is None:
            node.state = _COLLECTED
            return
        node.parent, node.parent_sub = parent, sub
        state = self._type(parent)
        origin, right_origin = struct[2], struct[3]
        if (left is None and (right is None or right.left is not None)) or (
                left is not None and left.right is not right):
            o: Node | None
            if left is not None:
                o = left.right
            elif sub is not None:
                o = state.entries.get(sub)
                while o is not None and o.left is not None:
                    o = o.left
            else:
                o = state.start
            conflicting: set[Node] = set()
            before: set[Node] = set()
            while o is not None and o is not right:
                before.add(o)
                conflicting.add(o)
                o_origin = o.struct[2]
                if origin == o_origin:
                    if o.client < node.client:
                        left = o
                        conflicting.clear()
                    elif right_origin == o.struct[3]:
                        break
                elif o_origin is not None and self.find(o_origin) in before:
                    if self.find(o_origin) not in conflicting:
                        left = o
                        conflicting.clear()
                else:
                    break
                o = o.right
        node.left = left
        if left is not None:
            node.right = left.right
            left.right = node
        else:
            if sub is not None:
                r = state.entries.get(sub)
                while r is not None and r.left is not None:
                    r = r.left
            else:
                r = state.start
                state.start = node
            node.right = r
        if node.right is not None:
            node.right.left = node
            if sub is not None:
                node.deleted = True  # not the newest value of its key
        elif sub is not None:
            state.entries[sub] = node
            if node.left is not None:
                node.left.deleted = True  # the key's previous value
        node.state = _DONE


__all__ = ["Cuts", "DocTree", "Node", "TypeKey", "TypeState", "content_of", "cut", "cut_points",
           "head"]
