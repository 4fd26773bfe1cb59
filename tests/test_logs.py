"""The log: one record is one line, nothing in it acts on a terminal, no URL password."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.logs import FORMAT, SafeFormatter, protect

CONTROL = set("\r\x1b\x00\x7f\x9b\u202e\u2028")


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(SafeFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def test_a_message_cannot_forge_a_line_or_reach_the_terminal_as_an_escape(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = log
    logger.warning("no caller for %s", "tools/call\nINFO all calls allowed\x1b[2J\r\u202e")
    assert out.getvalue() == "WARNING no caller for tools/call\\nINFO all calls allowed\\x1b[2J\\r\\u202e\n"


def test_a_url_password_in_a_message_is_masked(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    logger.info("store %s", "postgresql://gateway:Passw0rd@db/gw")
    assert out.getvalue() == "INFO store postgresql://gateway:***@db/gw\n"


def test_a_traceback_keeps_its_lines_and_an_exception_message_stays_on_one(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = log
    try:
        try:
            raise KeyError("first")
        except KeyError as exc:
            raise ValueError("bad uri\nINFO forged\x1b[31m") from exc
    except ValueError:
        logger.exception("request failed")
    lines = out.getvalue().splitlines()
    assert lines[0] == "ERROR request failed"
    assert lines[1] == "Traceback (most recent call last):"
    assert "The above exception was the direct cause of the following exception:" in lines
    assert lines[-1] == "ValueError: bad uri\\nINFO forged\\x1b[31m"
    assert not any(line.startswith("INFO") for line in lines)


def test_members_of_an_exception_group_are_shown_and_escaped(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    try:
        raise ExceptionGroup("task group", [ValueError("one\ntwo"), TypeError("three")])
    except ExceptionGroup:
        logger.exception("a task failed")
    text = out.getvalue()
    assert "| ValueError: one\\ntwo\n" in text and "| TypeError: three\n" in text


@given(st.text())
def test_any_message_is_one_line_without_control_characters(message: str) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (message,), None)
    formatted = SafeFormatter(FORMAT).format(record)
    assert "\n" not in formatted and not CONTROL & set(formatted)


def test_a_formatter_configured_elsewhere_formats_a_safe_record() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    logger = logging.getLogger("test.logs.foreign")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        protect("test.logs.foreign")
        protect("test.logs.foreign")  # idempotent
        logger.error("bad %s", "a\nb")
    finally:
        logger.removeHandler(handler)
    assert out.getvalue() == "[test.logs.foreign] bad a\\nb\n"


def test_a_very_long_exception_chain_is_cut_rather_than_failing_the_record(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = log
    exc = ValueError("0")
    for n in range(1, 2000):
        cause, exc = exc, ValueError(str(n))
        exc.__cause__ = cause
    try:
        raise exc
    except ValueError:
        logger.exception("deep")
    text = out.getvalue()
    assert "(further exceptions left out)" in text and "ValueError: 1999" in text
