"""Safe logs: tokens redacted, control characters escaped, in messages, arguments and tracebacks."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from ysync.auth import generate_keypair, load_private_key, mint_token
from ysync.logs import REDACTED, SafeLogFilter, basic_config, escape, install, redact, safe


@pytest.fixture(scope="module")
def token() -> str:
    return mint_token(load_private_key(generate_keypair()[1]), "alice", 600)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through a filtered handler into a string, as the CLI sets it up."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    install([handler])
    logger = logging.getLogger("test.safe_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_query_tokens_are_redacted(token: str) -> None:
    assert redact(f"GET /room?yauth={token} HTTP/1.1") == f"GET /room?yauth={REDACTED} HTTP/1.1"
    assert redact(f"/r?a=1&yauth={token}&b=2") == f"/r?a=1&yauth={REDACTED}&b=2"
    assert redact("/r?YAUTH=anything-at-all") == f"/r?YAUTH={REDACTED}"


def test_subprotocol_tokens_are_redacted(token: str) -> None:
    header = f"Sec-WebSocket-Protocol: yauth-{token}, other"
    assert redact(header) == f"Sec-WebSocket-Protocol: yauth-{REDACTED}, other"
    assert redact("yauth-not-even-a-jwt") == f"yauth-{REDACTED}"


def test_jwts_anywhere_and_credential_headers_are_redacted(token: str) -> None:
    assert redact(f"token {token} refused") == f"token {REDACTED} refused"
    assert token.rsplit(".", 1)[1] not in redact(f"[{token}]")
    assert redact("Authorization: Bearer abc.def") == f"Authorization: {REDACTED}"
    assert redact("< Cookie: session=42") == f"< Cookie: {REDACTED}"


def test_ordinary_text_is_left_alone() -> None:
    for text in ("ysync listening on ws://127.0.0.1:3002/<room> (redis redis://h:6379/0)",
                 "persisted my%20room/index/0b3c (12 bytes)", "room a.b.c: 3 clients",
                 "version 1.2.3"):
        assert redact(text) == text
        assert escape(text) == text


def test_control_characters_are_escaped() -> None:
    assert escape("/a\x1b[31mb\rc\nd\x00e\tf") == "/a\\x1b[31mb\\rc\\nd\\x00e\\tf"
    assert escape("x\x85y\x9bz") == "x\\x85y\\x9bz"  # C1 controls (NEL, CSI)
    assert escape("\u202eevil\u2028line") == "\\u202eevil\\u2028line"  # bidi override, LS
    assert escape("caf\u00e9 \u6587") == "caf\u00e9 \u6587"  # printable text stays
    assert escape(escape("a\x1bb")) == escape("a\x1bb")
    assert escape("line 1\nline 2\x1b", keep_newlines=True) == "line 1\nline 2\\x1b"
    assert safe(f"/\x1b?yauth=x{chr(0)}y") == f"/\\x1b?yauth={REDACTED}"


def test_filter_rewrites_the_formatted_message(
    captured: tuple[logging.Logger, io.StringIO], token: str
) -> None:
    logger, out = captured
    # websockets' own trace lines, arguments included
    logger.debug("< %s %s %s", "GET", f"/r\x1b[2J\r?yauth={token}", "HTTP/1.1")
    logger.debug("> %s: %s", "Sec-WebSocket-Protocol", f"yauth-{token}")
    logger.info("refused %s: %s", "/a\x00b\nFAKE ERROR line", "invalid character")
    text = out.getvalue()
    assert token not in text
    assert "\x1b" not in text and "\r" not in text and "\x00" not in text
    assert text.count("\n") == 3  # one line per record: no forged line
    assert f"< GET /r\\x1b[2J\\r?yauth={REDACTED} HTTP/1.1" in text
    assert f"> Sec-WebSocket-Protocol: yauth-{REDACTED}" in text
    assert "refused /a\\x00b\\nFAKE ERROR line: invalid character" in text


def test_filter_cleans_tracebacks(captured: tuple[logging.Logger, io.StringIO],
                                  token: str) -> None:
    logger, out = captured
    try:
        raise ValueError(f"invalid HTTP header value: a\x1bb yauth={token}")
    except ValueError:
        logger.debug("! invalid handshake", exc_info=True)
    text = out.getvalue()
    assert "Traceback (most recent call last):\n" in text  # still several lines
    assert token not in text and "\x1b" not in text
    assert f"invalid HTTP header value: a\\x1bb yauth={REDACTED}" in text


def test_filter_reports_unformattable_messages_without_their_secrets(
    captured: tuple[logging.Logger, io.StringIO], token: str
) -> None:
    logger, out = captured
    logger.info("%s and %s", f"yauth={token}")  # one argument short
    text = out.getvalue()
    assert "unformattable log message" in text
    assert token not in text


def test_a_record_is_rewritten_once_for_several_handlers() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("a\x1bb",), None)
    first, second = SafeLogFilter(), SafeLogFilter()
    assert first.filter(record) and second.filter(record)
    assert record.getMessage() == "a\\x1bb"


def test_install_is_idempotent() -> None:
    handler = logging.StreamHandler(io.StringIO())
    install([handler])
    install([handler])
    assert sum(isinstance(f, SafeLogFilter) for f in handler.filters) == 1


def test_basic_config_filters_the_handler_it_adds_and_no_other() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        root.handlers = []
        basic_config(stream=out, format="%(message)s", level=logging.INFO)
        [handler] = root.handlers
        assert any(isinstance(f, SafeLogFilter) for f in handler.filters)
        logging.getLogger("test.basic_config").info("a\x1bb")
        assert out.getvalue() == "a\\x1bb\n"
        # a root logger with handlers (a test runner's) is left as it is, as basicConfig does
        basic_config(stream=io.StringIO())
        assert root.handlers == [handler]
    finally:
        root.handlers = saved
        root.setLevel(level)
