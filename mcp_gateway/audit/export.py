"""`audit export` and `audit tail`: rows as NDJSON or CSV.

NDJSON keeps every stored value exactly. CSV is for spreadsheets, which run a cell that
starts with `=`, `+`, `-` or `@` (or a tab or carriage return before one) as a formula:
a value chosen by a request (`=HYPERLINK(...)` as a resource URI) would become a live
link or worse on the operator's machine. Such cells get a leading `'`, as OWASP's CSV
injection guidance says: the spreadsheet shows the text, and a reader of the file can
strip the one character.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, TextIO

import orjson

from ..store.audit import COLUMNS

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def write_ndjson(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    count = 0
    for row in rows:
        out.write(orjson.dumps(row).decode() + "\n")
        count += 1
    return count


def neutralise(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class CsvWriter:
    def __init__(self, out: TextIO) -> None:
        self._writer = csv.DictWriter(out, fieldnames=list(COLUMNS), extrasaction="ignore")
        self._writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow({name: neutralise(value) for name, value in row.items()})
