"""audit tail | export | verify."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import anyio

from ..audit.export import CsvWriter, write_ndjson
from ..audit.verify import verify
from ..store import audit as audit_store
from ..text import escape
from ..when import FORMS, parse_time
from .common import add_config, load_all, run_with_store, store

DECISIONS = ("allow", "deny")
KINDS = ("decision", "completion", "admin", "auth")
"""The audit row kinds: a call's decision, its completion, an administrative action."""


def _time(value: str) -> float:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=_time, metavar="TIME", help=f"rows at or after TIME: {FORMS}")
    p.add_argument("--until", type=_time, metavar="TIME", help="rows before TIME (same forms as --since)")
    p.add_argument("--team", help="rows of this team")
    p.add_argument("--principal", help="rows of this principal (TEAM/NAME)")
    p.add_argument("--server", help="rows about this upstream server")
    p.add_argument("--tool", help="rows about this tool, prompt or resource (as the upstream names it)")
    p.add_argument("--decision", choices=DECISIONS, help="rows with this decision: %(choices)s")
    p.add_argument("--kind", choices=KINDS, help="rows of this kind: %(choices)s")


def _count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of rows (1 or more)")
    return count


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="read and check the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="COMMAND")
    tail = audit_sub.add_parser("tail", help="the latest rows")
    add_config(tail)
    _filters(tail)
    tail.add_argument("-n", type=_count, default=20, metavar="N", help="how many of the latest rows (default 20)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new rows")
    tail.set_defaults(run=run_tail)
    export = audit_sub.add_parser("export", help="rows as NDJSON or CSV, oldest first")
    add_config(export)
    _filters(export)
    export.add_argument("--format", choices=["ndjson", "csv"], default="ndjson", help="%(choices)s (default ndjson)")
    export.set_defaults(run=run_export)
    check = audit_sub.add_parser("verify", help="check the hash chains; names the first bad row")
    add_config(check)
    check.set_defaults(run=run_verify)


def _filter_values(args: argparse.Namespace) -> audit_store.Filters:
    return audit_store.Filters(
        since=args.since,
        until=args.until,
        team=args.team,
        principal=args.principal,
        server=args.server,
        tool=args.tool,
        decision=args.decision,
        kind=args.kind,
    )


def _line(row: dict[str, Any]) -> str:
    """One row as one line: every stored value escaped, since requests chose many of them
    (a resource URI is kept as asked) and a newline or a terminal escape in one must stay text."""
    row = {k: escape(v) if isinstance(v, str) else v for k, v in row.items()}
    when = datetime.fromtimestamp(row["ts"], UTC).isoformat(timespec="milliseconds")
    if row["server"]:
        what = f"{row['server']}/{row['tool'] or '-'}"
    elif row["tool"]:  # a name nothing serves (a probe): the method, and what it named
        what = f"{row['method'] or '-'} {row['tool']}"
    else:
        what = row["method"] or "-"
    fields = [when, row["kind"], row["principal_id"] or "-", what, row["decision"] or "-"]
    if row["outcome"]:
        fields.append(row["outcome"])
    if row["latency_ms"] is not None:
        fields.append(f"{row['latency_ms']:.1f}ms")
    if row["kind"] == "decision" and row["reason"]:
        fields.append(f"({row['reason']})")
    if row["shadow"]:
        fields.append(f"[shadow: {row['shadow']} by {row['shadow_rule_id']}]")
    return "  ".join(fields)


def run_tail(args: argparse.Namespace) -> int:
    _, settings = load_all(args)
    filters = _filter_values(args)

    async def main() -> None:
        async with store(settings, migrate=False) as engine:
            rows = await audit_store.query(engine, filters, limit=args.n)
            for row in reversed(rows):
                print(_line(row), flush=True)
            last = rows[0]["seq"] if rows else 0
            while args.follow:
                await anyio.sleep(1)
                async for row in audit_store.ascending(engine, filters, after=last):
                    print(_line(row), flush=True)
                    last = row["seq"]

    run_with_store(settings, main)
    return 0


def run_export(args: argparse.Namespace) -> int:
    _, settings = load_all(args)
    filters = _filter_values(args)

    async def main() -> int:
        count = 0
        async with store(settings, migrate=False) as engine:
            writer = CsvWriter(sys.stdout) if args.format == "csv" else None
            async for row in audit_store.ascending(engine, filters):
                if writer is not None:
                    writer.write(row)
                else:
                    write_ndjson([row], sys.stdout)
                count += 1
        return count

    count = run_with_store(settings, main)
    print(f"exported {count} row(s)", file=sys.stderr)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    _, settings = load_all(args)

    async def main() -> Any:
        async with store(settings, migrate=False) as engine:
            return await verify(engine)

    report = run_with_store(settings, main)
    if report.ok:
        print(f"ok: {report.rows} row(s) in {report.chains} chain(s) verified")
        return 0
    print(f"FAILED: first bad row: {escape(str(report.first))}", file=sys.stderr)
    for problem in report.problems:
        if problem is not report.first:
            print(f"  also: {escape(str(problem))}", file=sys.stderr)
    return 1
