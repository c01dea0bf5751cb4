"""What an update holds beyond a state vector, as Yjs's ``diffUpdateV2`` computes it.

:func:`diff_v2` and :func:`diff_v1` follow ``Y.diffUpdateV2`` / ``Y.diffUpdate`` struct by
struct, so that their output is the same bytes: per client, structs up to the clock of the
state vector are left out (Skips before the first struct kept are dropped, later ones kept),
the first struct that reaches beyond it is cut at that clock (written as Yjs writes an
``Item`` with an offset: its origin the unit before, a cut surrogate pair left as a lone
half), everything after it from the same client is kept, and the delete set is kept whole.
"""

from __future__ import annotations

from ysync.errors import UpdateFormatError
from ysync.updates.lib0 import BytesLike, read_varuint
from ysync.updates.merge import slice_block
from ysync.updates.structs import SKIP, Section, Struct, Update, gc_paused
from ysync.updates.v1 import decode_v1, encode_v1
from ysync.updates.v2 import decode_v2, encode_v2

__all__ = ["decode_state_vector", "diff_v1", "diff_v2"]


def decode_state_vector(state_vector: BytesLike) -> dict[int, int]:
    """Read a (v1-encoded) state vector as ``Y.decodeStateVector``: client -> next clock.

    A client listed twice keeps its last clock and bytes after the entries are ignored, as
    in Yjs. Raises :class:`~ysync.errors.UpdateFormatError` if the entries are cut short.
    """
    data = bytes(state_vector)
    clocks: dict[int, int] = {}
    try:
        count, pos = read_varuint(data, 0)
        if count * 2 > len(data) - pos:
            raise UpdateFormatError("state vector: count exceeds the remaining data")
        for _ in range(count):
            client, pos = read_varuint(data, pos)
            clocks[client], pos = read_varuint(data, pos)
    except IndexError as exc:
        raise UpdateFormatError("state vector: unexpected end of data") from exc
    return clocks


def _diff_sections(sections: list[Section], clocks: dict[int, int]) -> list[Section]:
    """The loop of ``diffUpdateV2`` over the structs (in reading order) of ``sections``."""
    kept: list[Section] = []
    writing = -1  # the client whose structs are all kept, until another client's come
    for client, clock, structs in sections:
        if not structs:
            continue  # Yjs's reader yields nothing for it: a run of one client goes on
        if client == writing:
            kept.append((client, clock, structs))
            continue
        writing = -1
        known = clocks.get(client, 0)
        for i, struct in enumerate(structs):
            length = struct[1]
            if struct[0] != SKIP and clock + length > known:
                first: Struct = struct
                offset = known - clock
                if offset > 0:
                    first = slice_block([client, clock, length, struct], offset, mend=False)[3]
                else:
                    offset = 0
                kept.append((client, clock + offset, [first, *structs[i + 1 :]]))
                writing = client
                break
            clock += length
    return kept


def diff_v2(update: BytesLike, state_vector: BytesLike) -> bytes:
    """The part of a v2 update not covered by ``state_vector``, as ``Y.diffUpdateV2``.

    ``state_vector`` is v1-encoded (``Y.encodeStateVector``, :func:`state_vector_from_v2`).
    The result is a v2 update that, applied to a document at that state, gives the document
    of ``update``; it keeps the whole delete set. Raises
    :class:`~ysync.errors.UpdateFormatError` if either argument is malformed.
    """
    clocks = decode_state_vector(state_vector)
    with gc_paused():
        decoded = decode_v2(bytes(update))
        return encode_v2(Update(_diff_sections(decoded.sections, clocks), decoded.delete_set))


def diff_v1(update: BytesLike, state_vector: BytesLike) -> bytes:
    """The part of a v1 update not covered by ``state_vector``, as ``Y.diffUpdate``.

    Like :func:`diff_v2`, for v1 updates.
    """
    clocks = decode_state_vector(state_vector)
    with gc_paused():
        decoded = decode_v1(bytes(update))
        return encode_v1(Update(_diff_sections(decoded.sections, clocks), decoded.delete_set))
