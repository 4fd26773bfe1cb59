"""The gateway's log: one record is one line (a traceback's own lines aside), and nothing
in it acts on the terminal that shows it.

Log messages carry text clients and upstreams chose (method and tool names, URIs, an
upstream's stderr, its error messages). `SafeFormatter` escapes the control characters of
every record's message (`text.escape`) and masks URL credentials in it
(`sensitive.mask_urls`), wherever the message came from, so a line a future change adds is
covered too. A traceback keeps its line structure: its frames' lines are escaped one by
one, and each exception's message is escaped whole, so a newline in it cannot start a line.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
import traceback
from typing import Any, Literal

import orjson

from .sensitive import mask_urls
from .text import escape, escape_lines

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"


def shown(text: str) -> str:
    """`text` as the log shows it: credentials masked, control characters escaped."""
    return escape(mask_urls(text))


_MAX_EXCEPTIONS = 100


def _traceback(exc: BaseException, seen: set[int], indent: str = "") -> list[str]:
    if id(exc) in seen:
        return []
    if len(seen) >= _MAX_EXCEPTIONS:  # a chain or group this large is not read, and would recurse too deep
        return [f"{indent}(further exceptions left out)"]
    seen.add(id(exc))
    lines: list[str] = []
    if exc.__cause__ is not None:
        lines += [*_traceback(exc.__cause__, seen, indent), indent, indent + _CAUSE, indent]
    elif exc.__context__ is not None and not exc.__suppress_context__:
        lines += [*_traceback(exc.__context__, seen, indent), indent, indent + _CONTEXT, indent]
    if exc.__traceback__ is not None:
        lines.append(f"{indent}Traceback (most recent call last):")
        for frame in traceback.format_tb(exc.__traceback__):
            lines += [indent + shown(line) for line in frame.rstrip("\n").split("\n")]
    lines += [indent + shown(part.rstrip("\n")) for part in traceback.format_exception_only(type(exc), exc)]
    if isinstance(exc, BaseExceptionGroup):
        for number, inner in enumerate(exc.exceptions, 1):
            lines.append(f"{indent}+---- {number} of {len(exc.exceptions)} ----")
            lines += _traceback(inner, seen, indent + "| ")
    return lines


def format_exception(exc: BaseException) -> str:
    """`exc`'s traceback, its chain and group members included, each line escaped."""
    return "\n".join(_traceback(exc, set()))


class SafeFormatter(logging.Formatter):
    """Formats a record with its message and traceback made safe, then hands it to `inner`
    (uvicorn's formatter, for its loggers) or formats it itself."""

    def __init__(self, fmt: str | None = FORMAT, inner: logging.Formatter | None = None) -> None:
        super().__init__(fmt)
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        safe = copy.copy(record)
        safe.msg, safe.args = shown(record.getMessage()), None
        if record.exc_info and record.exc_info[1] is not None:
            safe.exc_text = format_exception(record.exc_info[1])
        elif record.exc_text:
            safe.exc_text = escape_lines(mask_urls(record.exc_text))
        safe.exc_info = None
        if record.stack_info:
            safe.stack_info = escape_lines(record.stack_info)
        if self._inner is not None:
            return self._inner.format(safe)
        return super().format(safe)


REQUEST_FIELDS = ("principal", "team", "method", "target", "decision", "outcome", "latency_ms", "trace_id")
"""What a request's records carry (the access line), as JSON keys of their own."""

Format = Literal["text", "json"]


class JsonFormatter(logging.Formatter):
    """One JSON object a line: `time` (UTC, ISO 8601), `level`, `logger`, `message`, a
    request's fields when the record has them, and `exception` (the escaped traceback).
    JSON escapes control characters itself; URL credentials are masked as in text."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": mask_urls(record.getMessage()),
        }
        for name in REQUEST_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = mask_urls(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = format_exception(record.exc_info[1])
        elif record.exc_text:
            entry["exception"] = mask_urls(record.exc_text)
        return orjson.dumps(entry, default=str).decode()


_format: Format = "text"


def formatter(inner: logging.Formatter | None = None) -> logging.Formatter:
    """The formatter of the configured format (`inner`: a text formatter to wrap)."""
    return JsonFormatter() if _format == "json" else SafeFormatter(inner=inner)


def setup(level: str, format: Format = "text", access: bool = False) -> None:
    """The process's log: stderr, `FORMAT` or JSON lines, every record made safe. The
    access log (`mcp_gateway.access`, one line per request at INFO) is on with `access`;
    off, its level is WARNING, so the request path does not even build its record."""
    global _format
    _format = format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(quiet)
    logging.getLogger("mcp_gateway.access").setLevel(logging.INFO if access else logging.WARNING)


QUIET = {
    "httpx2": logging.WARNING,  # one line per upstream HTTP request would drown everything else
    "alembic": logging.WARNING,  # ten INFO lines at every start (plugins, "Context impl"), a line per migration
    "aiosqlite": logging.WARNING,  # a DEBUG line per query and per result
}
"""Libraries whose routine lines stay out of the gateway's log, whatever its level; their
warnings and errors still show."""


def protect(*names: str) -> None:
    """Make safe the records of loggers that other code configured (uvicorn's): each of
    their handlers formats through a `SafeFormatter` around the formatter it had (or, for
    JSON logs, the JSON formatter)."""
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler.formatter, SafeFormatter | JsonFormatter):
                handler.setFormatter(formatter(inner=handler.formatter or logging.Formatter()))
