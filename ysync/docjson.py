"""A document's shared types as JSON, as ``JSON.stringify`` of their ``toJSON()`` in Yjs.

Read from a :class:`~ysync.doctree.DocTree`, so content is never re-encoded on the way: a JSON
object a client wrote keeps its key order, numbers are written as JavaScript writes them
(:func:`ysync.updates.jsvalues.json_stringify`), and a ``Y.Map`` lists its keys in the order a
Y.Doc loading the document meets them. What each type becomes is what its ``toJSON`` returns in
Yjs 13.6: a ``Y.Map`` an object, a ``Y.Array`` a list, a ``Y.Text`` its string (formatting and
embeds left out), XML types their XML string.

A Yjs update does not say which type a root is; it is told from its content: a map if it has
keys, else an XML fragment if all its children are XML elements, texts or hooks, else a text if
it holds characters, formatting or embeds, else an array. A root with nothing alive in it is
``null`` (its type cannot be known).

What JSON cannot hold raises :class:`~ysync.errors.DocumentError` naming where it is
(``map.k[2]``): binary values (``Uint8Array``, ``ContentBinary``), ``undefined``, BigInts,
``NaN`` and infinities, subdocuments, XML hooks; such documents are read as Yjs updates instead.
"""

from __future__ import annotations

import math
from typing import Any

from ysync.doctree import DocTree, Node, TypeKey
from ysync.errors import DocumentError
from ysync.updates.jsvalues import (
    UNDEFINED,
    BigInt,
    js_number_to_string,
    js_object,
    json_parse,
    read_any,
)
from ysync.updates.jsvalues import json_stringify as _stringify
from ysync.updates.lib0 import js_to_str
from ysync.updates.structs import (
    ANY,
    BINARY,
    DOC,
    EMBED,
    FORMAT,
    JSON,
    STRING,
    TYPE,
)

# type references of ContentType (Yjs typeRefs)
Y_ARRAY, Y_MAP, Y_TEXT, Y_XML_ELEMENT, Y_XML_FRAGMENT, Y_XML_HOOK, Y_XML_TEXT = range(7)
_XML_CHILDREN = frozenset((Y_XML_ELEMENT, Y_XML_HOOK, Y_XML_TEXT))
_TEXTUAL = frozenset((STRING, FORMAT, EMBED))
_ADVICE = "; read the document as a Yjs update instead (format=v1 or v2)"


def document_json(tree: DocTree) -> dict[str, Any]:
    """Every root type of ``tree`` as a JSON value, by root name (see the module docstring)."""
    return js_object([(key, _root(tree, key)) for key in tree.types if isinstance(key, str)],
                     False)


def dumps(value: Any) -> str:
    """``JSON.stringify`` of a value :func:`document_json` returned."""
    text = _stringify(value)
    assert text is not None
    return text


def _root(tree: DocTree, name: str) -> Any:
    state = tree.types[name]
    if state.entries:
        return _map(tree, name, name)
    children = tree.children(name)
    if not children:
        return None
    if all(n.ref == TYPE and n.struct[6][0] in _XML_CHILDREN for n in children):
        return _fragment(tree, name, name)
    if any(n.ref in _TEXTUAL for n in children):
        return _text(tree, name)
    return _array(tree, name, name)


def _values(node: Node, where: str) -> list[Any]:
    """The values an item holds (several for ContentAny and ContentJSON)."""
    ref, content = node.ref, node.struct[6]
    if ref == ANY:
        values, pos = [], 0
        for _ in range(node.length):
            value, pos = read_any(content, pos)
            values.append(value)
        return values
    if ref == JSON:
        return [UNDEFINED if text == b"undefined" else json_parse(text.decode("utf-8"))
                for text in content]
    if ref == STRING:
        return list(js_to_str(content))
    if ref == EMBED:
        return [content]
    if ref == BINARY:
        raise DocumentError(f"{where}: a binary value (Uint8Array) cannot be shown as JSON"
                            + _ADVICE)
    if ref == DOC:
        raise DocumentError(f"{where}: a subdocument cannot be shown as JSON" + _ADVICE)
    raise DocumentError(f"{where}: content {ref} cannot be shown as JSON" + _ADVICE)


def _plain(value: Any, where: str) -> Any:
    """``value`` checked for what JSON can hold (whole floats as integers, as JSON writes)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise DocumentError(f"{where}: {js_number_to_string(value)} cannot be shown as JSON"
                                + _ADVICE)
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if kind is list:
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is dict:
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if value is UNDEFINED:
        raise DocumentError(f"{where}: undefined cannot be shown as JSON" + _ADVICE)
    if kind is BigInt:
        raise DocumentError(f"{where}: a BigInt cannot be shown as JSON" + _ADVICE)
    if kind is bytes:
        raise DocumentError(f"{where}: a binary value (Uint8Array) cannot be shown as JSON"
                            + _ADVICE)
    raise DocumentError(f"{where}: a {kind.__name__} cannot be shown as JSON" + _ADVICE)


def _value(tree: DocTree, node: Node, index: int, where: str) -> Any:
    """The JSON of the ``index``-th value of ``node``: a nested type's toJSON, or the value."""
    if node.ref == TYPE:
        return _nested(tree, node, where)
    return _plain(_values(node, where)[index], where)


def _nested(tree: DocTree, node: Node, where: str) -> Any:
    type_ref = node.struct[6][0]
    key = node.id
    if type_ref == Y_MAP:
        return _map(tree, key, where)
    if type_ref == Y_ARRAY:
        return _array(tree, key, where)
    if type_ref == Y_TEXT:
        return _text(tree, key)
    if type_ref in (Y_XML_ELEMENT, Y_XML_FRAGMENT, Y_XML_TEXT):
        return _xml(tree, node, where)
    raise DocumentError(f"{where}: an XML hook cannot be shown as JSON" + _ADVICE)


def _map(tree: DocTree, key: TypeKey, where: str) -> dict[str, Any]:
    # a plain JavaScript object: integer-like keys come first, in ascending order
    return js_object([(k, _value(tree, n, n.length - 1, f"{where}.{k}"))
                      for k, n in tree.entries(key).items()], False)


def _array(tree: DocTree, key: TypeKey, where: str) -> list[Any]:
    out: list[Any] = []
    for node in tree.children(key):
        for i in range(node.length):
            out.append(_value(tree, node, i, f"{where}[{len(out)}]"))
    return out


def _text(tree: DocTree, key: TypeKey) -> str:
    """``Y.Text.toString()``: the characters, formatting and embeds left out."""
    return "".join(js_to_str(n.struct[6]) for n in tree.children(key) if n.ref == STRING)


# --- XML: toString() of Yjs's XML types ----------------------------------------------------


def _js_string(value: Any, where: str) -> str:
    """JavaScript's ``String(value)`` for the values XML attributes hold."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, BigInt):
        return js_number_to_string(value)
    raise DocumentError(f"{where}: an XML attribute holding a {type(value).__name__} cannot be "
                        "shown as JSON" + _ADVICE)


def _attributes(tree: DocTree, key: TypeKey, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, node in tree.entries(key).items():
        if node.ref == TYPE:
            raise DocumentError(f"{where}: an XML attribute holding a shared type cannot be "
                                "shown as JSON" + _ADVICE)
        out[name] = _values(node, where)[-1]
    return out


def _xml(tree: DocTree, node: Node, where: str) -> str:
    type_ref = node.struct[6][0]
    key = node.id
    if type_ref == Y_XML_TEXT:
        return _xml_text(tree, key, where)
    if type_ref == Y_XML_FRAGMENT:
        return _fragment(tree, key, where)
    attrs = _attributes(tree, key, where)
    pairs = [f'{k}="{_js_string(attrs[k], where)}"' for k in sorted(attrs)]
    name = js_to_str(node.struct[6][1] or b"").lower()
    joined = (" " + " ".join(pairs)) if pairs else ""
    return f"<{name}{joined}>{_fragment(tree, key, where)}</{name}>"


def _fragment(tree: DocTree, key: TypeKey, where: str) -> str:
    parts = []
    for i, child in enumerate(tree.children(key)):
        inner = f"{where}[{i}]"
        if child.ref != TYPE or child.struct[6][0] not in (Y_XML_ELEMENT, Y_XML_TEXT):
            raise DocumentError(f"{inner}: only XML elements and texts can be shown in an XML "
                                "string" + _ADVICE)
        parts.append(_xml(tree, child, inner))
    return "".join(parts)


def _for_in(value: Any) -> list[tuple[str, Any]]:
    """What ``for (const key in value)`` visits, with ``value[key]``."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, str | list):
        return [(str(i), v) for i, v in enumerate(value)]
    return []


def _xml_text(tree: DocTree, key: TypeKey, where: str) -> str:
    """``Y.XmlText.toString()``: each run of its delta wrapped in one tag per attribute."""
    runs: list[tuple[str, dict[str, Any]]] = []
    current: dict[str, Any] = {}
    pending = ""
    for node in tree.children(key):
        if node.ref == STRING:
            pending += js_to_str(node.struct[6])
        elif node.ref == FORMAT:
            if pending:
                runs.append((pending, dict(current)))
                pending = ""
            name, value = js_to_str(node.struct[6][0]), node.struct[6][1]
            if value is None:
                current.pop(name, None)
            else:
                current[name] = value
        else:
            raise DocumentError(f"{where}: an embed in an XML text cannot be shown as JSON"
                                + _ADVICE)
    if pending:
        runs.append((pending, dict(current)))
    out = []
    for text, attributes in runs:
        opening, closing = "", ""
        for name in sorted(attributes):
            pairs = sorted(_for_in(attributes[name]), key=lambda pair: pair[0])
            attrs = "".join(f' {k}="{_js_string(v, where)}"' for k, v in pairs)
            opening += f"<{name}{attrs}>"
            closing = f"</{name}>" + closing
        out.append(opening + text + closing)
    return "".join(out)


__all__ = ["document_json", "dumps"]
