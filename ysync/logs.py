"""Logs that are safe to read: no tokens, and nothing from a request that can forge a line.

Two rules hold for every log line ysync writes, at every level, the websockets library's
handshake traces at ``LOG=debug`` included:

- **No credentials.** ``yauth=<token>`` query values, ``yauth-<token>`` subprotocols,
  ``Authorization``/``Cookie`` header values and anything shaped like a JWT (``eyJ...`` and two
  more base64url segments) are replaced by ``[redacted]``.
- **No control characters from outside.** A request path or header may hold ESC, CR, LF, NUL or
  other characters that are not printable (C0/C1 controls, bidi overrides, line separators);
  they are written as Python escapes (``\\x1b``, ``\\r``, ``\\u202e``), so a request cannot
  colour a terminal, end a line early or hide text.

:func:`safe` applies both to one value; call it where request data goes into a message.
:class:`SafeLogFilter` applies them to the whole formatted message (arguments included), the
traceback and the stack of every record a handler emits: the net under every call site, the
libraries' included. :func:`basic_config` (what the commands use) configures logging with it.

Two formats (``log.format``): ``text``, one line per record (``time LEVEL logger: message``),
and ``json``, one JSON object per line (:class:`JsonFormatter`): ``time`` (ISO 8601, UTC, ms),
``level``, ``logger``, ``message``, ``exception`` and ``stack`` when the record has them, and
``room``, ``connection`` and ``user`` where known: from :func:`set_log_context` or
:func:`log_context` (the server sets them for each connection; the tasks it starts inherit
them) or from ``extra={"room": ...}`` on a call, which wins. The rules above hold for JSON too:
the message, the traceback and every field are redacted and escaped as in text, so both formats
carry the same characters (JSON's own escaping then only meets printable text). The text
format does not show the fields: its messages name the room themselves (``room <room>: ...``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ysync.config import Config

__all__ = ["CONTEXT_FIELDS", "REDACTED", "TEXT_FORMAT", "JsonFormatter", "SafeLogFilter",
           "basic_config", "configure", "escape", "install", "log_context", "redact",
           "reset_log_context", "safe", "set_log_context"]

REDACTED = "[redacted]"

_TOKEN_PATTERNS = (
    # ?yauth=<token> (up to the next parameter, or the end of the URL or word)
    re.compile(r"(yauth=)[^&\s#\"'<>]+", re.IGNORECASE),
    # Sec-WebSocket-Protocol: yauth-<token>[, other]
    re.compile(r"(yauth-)[^\s,;\"'<>]+", re.IGNORECASE),
    # credentials in headers: everything after the colon
    re.compile(r"((?:proxy-)?authorization: *|(?:set-)?cookie: *)[^\r\n]+", re.IGNORECASE),
    # a JWT anywhere: a base64url JSON header ({" is eyJ), a payload and a signature
    re.compile(r"()eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"),
)
#: A text without any of these holds nothing to redact (checked first: most messages).
_TOKEN_WORDS = ("yauth", "eyj", "authorization", "cookie")


def redact(text: str) -> str:
    """``text`` with tokens and credential header values replaced by ``[redacted]``."""
    lowered = text.lower()
    if not any(word in lowered for word in _TOKEN_WORDS):
        return text
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(rf"\g<1>{REDACTED}", text)
    return text


def _escaped(ch: str) -> str:
    return repr(ch)[1:-1]  # '\x1b' -> \x1b, '\u202e' -> \u202e, '\n' -> \n


def escape(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every character that is not printable written as an escape.

    Printable non-ASCII text (``é``, ``文``) stays as it is. Escaping twice changes nothing.
    ``keep_newlines``: leave LF as it is (for tracebacks, which are several lines by design).
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or (keep_newlines and ch == "\n") else _escaped(ch)
                   for ch in text)


def safe(value: object) -> str:
    """``str(value)`` redacted and escaped: fit for a log message."""
    return escape(redact(str(value)))


class SafeLogFilter(logging.Filter):
    """Rewrites every record it sees so that its formatted text is :func:`safe`.

    The message is formatted once with its arguments, redacted and escaped, and stored as the
    record's ``msg`` with no arguments; an exception or stack is formatted into the record's
    ``exc_text``/``stack_info`` the same way. A record passes through it only once, however many
    handlers carry the filter. Nothing is dropped.
    """

    _DONE = "_ysync_safe"
    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, self._DONE, False):
            return True
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format or argument: logging's own report would
            # print the arguments raw, so say it here, without them
            template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
            message = f"unformattable log message {template!r}: {type(exc).__name__}: {exc}"
        record.msg = escape(redact(message))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = escape(redact(record.exc_text), keep_newlines=True)
        if record.stack_info:
            record.stack_info = escape(redact(record.stack_info), keep_newlines=True)
        setattr(record, self._DONE, True)
        return True


def install(handlers: Iterable[logging.Handler] | None = None) -> None:
    """Put a :class:`SafeLogFilter` on ``handlers`` (default: the root logger's), once each."""
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(f, SafeLogFilter) for f in handler.filters):
            handler.addFilter(SafeLogFilter())


#: The text format: ``2026-01-02 03:04:05,678 INFO ysync.server: message``.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Fields a record may carry besides its message, in the order JSON lines show them.
CONTEXT_FIELDS = ("room", "connection", "user")

_NO_FIELDS: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("ysync_log_context", default=_NO_FIELDS)


def _fields(room: str | None, connection: str | None, user: str | None) -> dict[str, str]:
    given = {"room": room, "connection": connection, "user": user}
    return {**_context.get(), **{k: v for k, v in given.items() if v}}


def set_log_context(*, room: str | None = None, connection: str | None = None,
                    user: str | None = None) -> Token[Mapping[str, str]]:
    """Add fields to every record logged from here on in the current context.

    The current context is the running task's (and the tasks it starts copy it): in a task of
    its own, such as a connection's handler, the fields end with the task, and nothing needs
    resetting. Elsewhere pass the returned token to ``reset_log_context``, or use
    :func:`log_context`. ``None`` or empty values leave a field as it was.
    """
    return _context.set(_fields(room, connection, user))


def reset_log_context(token: Token[Mapping[str, str]]) -> None:
    """Restore the fields as they were before the :func:`set_log_context` call that gave
    ``token``."""
    _context.reset(token)


@contextmanager
def log_context(*, room: str | None = None, connection: str | None = None,
                user: str | None = None) -> Iterator[None]:
    """Records logged inside the ``with`` block (and by tasks started in it) carry these fields
    (``None`` or empty: as they were); nested blocks add to the fields of outer ones."""
    token = set_log_context(room=room, connection=connection, user=user)
    try:
        yield
    finally:
        reset_log_context(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; see the module docstring for its fields.

    Safe on its own (it redacts and escapes what it writes, as :class:`SafeLogFilter` does,
    and doing so again changes nothing), so it needs no filter to keep the rules.
    """

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format or argument (the filter reports those too)
            message = f"unformattable log message: {type(exc).__name__}: {exc}"
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, str] = {
            "time": f"{created}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        context = _context.get()
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None) or context.get(name)
            if value:
                line[name] = safe(value)
        line["message"] = safe(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = escape(redact(record.exc_text), keep_newlines=True)
        if record.stack_info:
            line["stack"] = escape(redact(record.stack_info), keep_newlines=True)
        # non-ASCII text that is printable stays readable; JSON escapes the newlines
        return json.dumps(line, ensure_ascii=False)


def basic_config(*, log_format: str = "text", **kwargs: Any) -> None:
    """``logging.basicConfig(**kwargs)`` with a :class:`SafeLogFilter` on the handler it adds.

    ``log_format``: ``"json"`` gives that handler a :class:`JsonFormatter` (``format`` and
    ``datefmt`` are then unused). Like ``basicConfig``, it does nothing to a root logger that
    has handlers already: those belong to whoever embeds ysync (a test runner's capture, for
    one), and the filter rewrites the records it sees, for every handler after it.
    """
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(**kwargs)
    added = [handler for handler in root.handlers if handler not in before]
    install(added)
    if log_format == "json":
        for handler in added:
            handler.setFormatter(JsonFormatter())


def configure(config: Config, stream: TextIO | None = None) -> None:
    """Logging as the configuration asks (``log.level``, ``log.format``) on ``stream``
    (default stderr), then the configuration's warnings (``config.warnings``) logged: what the
    commands call once their configuration is loaded."""
    basic_config(level=config.log.level.upper(), format=TEXT_FORMAT,
                 stream=sys.stderr if stream is None else stream, log_format=config.log.format)
    for warning in config.warnings:
        logging.getLogger("ysync.config").warning("%s", warning)
