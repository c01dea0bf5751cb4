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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["REDACTED", "SafeLogFilter", "basic_config", "escape", "install", "redact", "safe"]

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


def basic_config(**kwargs: Any) -> None:
    """``logging.basicConfig(**kwargs)`` with a :class:`SafeLogFilter` on the handler it adds.

    Like ``basicConfig``, it does nothing to a root logger that has handlers already: those
    belong to whoever embeds ysync (a test runner's capture, for one), and the filter rewrites
    the records it sees, for every handler after it.
    """
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(**kwargs)
    install([handler for handler in root.handlers if handler not in before])
