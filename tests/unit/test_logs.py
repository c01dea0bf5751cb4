"""Safe logs: tokens redacted, control characters escaped, in messages, arguments and tracebacks."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ysync.auth import generate_keypair, load_private_key, mint_token
from ysync.config import Config, LogConfig
from ysync.logs import (
    REDACTED,
    JsonFormatter,
    SafeLogFilter,
    basic_config,
    configure,
    escape,
    install,
    log_context,
    redact,
    reset_log_context,
    safe,
    set_log_context,
)


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


# --- JSON lines --------------------------------------------------------------------------------

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def json_lines() -> Iterator[tuple[logging.Logger, Callable[[], list[dict[str, Any]]]]]:
    """A logger writing JSON lines through a filtered handler, as ``log.format = json`` does;
    the second item parses what it wrote, one object per line (every line must parse)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    install([handler])
    logger = logging.getLogger("test.json_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def lines() -> list[dict[str, Any]]:
        text = out.getvalue()
        assert text.endswith("\n")
        # splitlines also splits at U+2028, U+0085, CR...: none may occur unescaped
        return [json.loads(line) for line in text.splitlines()]

    try:
        yield logger, lines
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_json_lines_have_time_level_logger_and_message(json_lines: Any) -> None:
    logger, lines = json_lines
    logger.info("room %s: %d clients", "r1", 3)
    logger.warning("caf\u00e9 \u6587")
    first, second = lines()
    assert set(first) == {"time", "level", "logger", "message"}  # no context: no such fields
    assert TIME.match(first["time"]), first["time"]
    assert (first["level"], first["logger"], first["message"]) == (
        "info", "test.json_logs", "room r1: 3 clients")
    assert (second["level"], second["message"]) == ("warning", "caf\u00e9 \u6587")


def test_json_time_is_utc_with_milliseconds() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.created, record.msecs = 0.25, 250.0
    assert json.loads(JsonFormatter().format(record))["time"] == "1970-01-01T00:00:00.250Z"


def test_json_fields_from_the_context_and_from_extra(json_lines: Any) -> None:
    logger, lines = json_lines
    with log_context(room="my%20room", connection="3f2a9c01"):
        logger.info("joined")
        with log_context(user="alice"):  # nested: adds to the outer fields
            logger.info("authenticated")
        logger.info("written", extra={"room": "other"})  # a call's extra wins
    logger.info("after")
    joined, authenticated, written, after = lines()
    assert (joined["room"], joined["connection"]) == ("my%20room", "3f2a9c01")
    assert "user" not in joined
    assert authenticated["user"] == "alice"
    assert authenticated["room"] == "my%20room"
    assert (written["room"], written["connection"]) == ("other", "3f2a9c01")
    assert not {"room", "connection", "user"} & set(after)  # the block ended


@pytest.mark.anyio
async def test_json_context_is_inherited_by_tasks_and_ends_with_its_task(json_lines: Any) -> None:
    logger, lines = json_lines

    async def connection_handler(room: str) -> None:
        set_log_context(room=room, connection="c1")  # a task of its own: no reset needed
        await asyncio.create_task(child())

    async def child() -> None:
        logger.info("from a task the handler started")

    await asyncio.create_task(connection_handler("r"))
    logger.info("outside")
    inside, outside = lines()
    assert (inside["room"], inside["connection"]) == ("r", "c1")
    assert "room" not in outside


def test_set_log_context_token_resets(json_lines: Any) -> None:
    logger, lines = json_lines
    token = set_log_context(user="bob")
    logger.info("in")
    reset_log_context(token)
    logger.info("out")
    inside, outside = lines()
    assert inside["user"] == "bob" and "user" not in outside


def test_json_redacts_tokens_in_the_message_and_the_fields(json_lines: Any, token: str) -> None:
    logger, lines = json_lines
    with log_context(room=f"r?yauth={token}", user=f"u {token}"):
        logger.debug("< GET %s HTTP/1.1", f"/r?yauth={token}")
        logger.info("refused", extra={"connection": f"yauth-{token}"})
    traced, refused = lines()
    assert token.rsplit(".", 1)[1] not in json.dumps([traced, refused])
    assert traced["message"] == f"< GET /r?yauth={REDACTED} HTTP/1.1"
    assert traced["room"] == f"r?yauth={REDACTED}"
    assert traced["user"] == f"u {REDACTED}"
    assert refused["connection"] == f"yauth-{REDACTED}"


def test_json_escapes_control_characters_as_text_does(json_lines: Any) -> None:
    logger, lines = json_lines
    with log_context(room="/a\x1b[31mb\r\n\u2028c"):
        logger.info("refused %s", "/a\x00b\nFAKE ERROR line\x85\u202e")
    [line] = lines()  # one record, one line: nothing forged
    assert line["message"] == "refused /a\\x00b\\nFAKE ERROR line\\x85\\u202e"
    assert line["room"] == "/a\\x1b[31mb\\r\\n\\u2028c"  # the same escapes as in text lines


def test_json_exception_text(json_lines: Any, token: str) -> None:
    logger, lines = json_lines
    try:
        raise ValueError(f"invalid header a\x1bb yauth={token}")
    except ValueError:
        logger.exception("handshake failed")
    [line] = lines()
    assert line["level"] == "error"
    assert line["message"] == "handshake failed"
    assert line["exception"].startswith("Traceback (most recent call last):\n")  # lines kept
    assert f"ValueError: invalid header a\\x1bb yauth={REDACTED}" in line["exception"]
    assert token not in line["exception"]


def test_json_formatter_is_safe_without_the_filter(token: str) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (f"\x1b yauth={token}",),
                               None)
    record.room = "a\rb"
    line = json.loads(JsonFormatter().format(record))
    assert (line["message"], line["room"]) == (f"\\x1b yauth={REDACTED}", "a\\rb")


def test_basic_config_json_format_and_configure_from_the_config() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        root.handlers = []
        config = dataclasses.replace(
            Config(log=LogConfig(level="warning", format="json")), warnings=("noted",))
        configure(config, stream=out)
        [handler] = root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        assert any(isinstance(f, SafeLogFilter) for f in handler.filters)
        assert root.level == logging.WARNING
        logging.getLogger("test.configure").warning("a\x1bb")
        logging.getLogger("test.configure").info("below the level")
        warned, logged = (json.loads(line) for line in out.getvalue().splitlines())
        assert (warned["logger"], warned["message"]) == ("ysync.config", "noted")
        assert logged["message"] == "a\\x1bb"
    finally:
        root.handlers = saved
        root.setLevel(level)


def test_configure_text_format_is_unchanged() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        root.handlers = []
        configure(Config(), stream=out)
        with log_context(room="r", connection="c"):
            logging.getLogger("test.configure").info("a\x1bb")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO test.configure: a\\x1bb\n",
                            out.getvalue()), out.getvalue()
    finally:
        root.handlers = saved
        root.setLevel(level)
