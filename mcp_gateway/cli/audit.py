"""audit tail | export | verify | anchor | prune."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from ..audit import anchor as anchors
from ..audit.export import CsvWriter, write_ndjson
from ..audit.retention import ExportFailed, PruneRefused, prune
from ..audit.verify import Report, verify
from ..errors import ConfigError, Problem
from ..sensitive import mask_urls
from ..settings import Settings
from ..store import audit as audit_store
from ..store import current_revision
from ..store.engine import HEAD
from ..text import escape
from ..when import DURATION_FORMS, FORMS, parse_before, parse_time
from .common import add_config, load_all, run_with_store, store

DECISIONS = ("allow", "deny")
KINDS = ("decision", "completion", "admin", "auth", "end")
"""The audit row kinds: a call's decision, its completion, an administrative action, an
identity the gateway refused (OAuth), the last row of a chain closed by a clean stop."""


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


def _before(value: str) -> float:
    now = time.time()
    try:
        before = parse_before(value, now)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if before > now:
        # Every row lies before a time to come, the ones being written now among them: a
        # slip (epoch milliseconds for seconds, a year mistyped) would empty the audit.
        raise argparse.ArgumentTypeError(f"{value!r} is in the future: a prune takes rows older than now")
    return before


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
    check = audit_sub.add_parser(
        "verify", help="check the hash chains; names the first bad row and prints each chain's head"
    )
    add_config(check)
    check.add_argument(
        "--expect",
        type=Path,
        metavar="FILE",
        help="an anchor (`audit anchor`): fail if a chain is shorter than it, or its row there differs",
    )
    check.add_argument(
        "--from-anchor",
        dest="from_anchor",
        type=Path,
        metavar="FILE",
        help="an anchor: check only the rows from it on (and, as --expect, that each chain still reaches it)",
    )
    check.add_argument(
        "--save-anchor",
        dest="save_anchor",
        type=Path,
        metavar="FILE",
        help="when every chain verifies, write their heads to FILE as an anchor (replaced atomically)",
    )
    check.set_defaults(run=run_verify)
    anchor = audit_sub.add_parser("anchor", help="write each chain's head (position and hash) as a JSON anchor")
    add_config(anchor)
    anchor.add_argument("--out", type=Path, metavar="FILE", help="write to FILE (replaced atomically); default stdout")
    anchor.set_defaults(run=run_anchor)
    prune = audit_sub.add_parser(
        "prune", help="delete rows older than a time, keeping each chain verifiable from a checkpoint"
    )
    add_config(prune)
    prune.add_argument(
        "--before",
        required=True,
        type=_before,
        metavar="WHEN",
        help=f"prune rows before WHEN: {FORMS}, or {DURATION_FORMS} back from now",
    )
    prune.add_argument(
        "--export",
        type=Path,
        metavar="FILE",
        help="first write the rows to prune to FILE (JSON lines, a new file); nothing is pruned if that fails",
    )
    prune.set_defaults(run=run_prune)


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


def _write_atomically(path: Path, data: bytes) -> None:
    """`path` holds either its old content or all of `data`, never a part (a cron job's
    anchor may be the next run's `--from-anchor`)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise anchors.AnchorError(f"{path}: cannot write the anchor: {exc.strerror or exc}") from None


async def _current(engine: AsyncEngine, settings: Settings) -> None:
    """Checkpoints and end rows came with schema 0004: an older store is to be upgraded first."""
    if await current_revision(engine) != HEAD:
        where = mask_urls(str(settings.database_url))
        raise ConfigError([Problem(where, None, "the store's schema is not current: run `mcp-gateway db upgrade`")])


def _fail(message: str, code: int) -> int:
    print(f"error: {escape(message)}", file=sys.stderr)
    return code


def run_verify(args: argparse.Namespace) -> int:
    _, settings = load_all(args)
    try:
        expect = anchors.read(args.expect) if args.expect is not None else None
        start_at = anchors.read(args.from_anchor) if args.from_anchor is not None else None
    except anchors.AnchorError as exc:
        return _fail(str(exc), 2)

    async def main() -> Report:
        async with store(settings, migrate=False) as engine:
            await _current(engine, settings)
            return await verify(engine, expect=expect, start_at=start_at)

    report = run_with_store(settings, main)
    if report.ok:
        print(f"ok: {report.rows} row(s) in {report.chains} chain(s) verified", flush=True)
    for head in report.heads:
        print(escape(str(head)))
    for note in report.notes:
        print(f"note: {escape(note)}")
    if not report.ok:
        first = report.first
        assert first is not None
        lead = "first bad row: " if first.seq is not None else ""
        print(f"FAILED: {lead}{escape(str(first))}", file=sys.stderr)
        for problem in report.problems:
            if problem is not first:
                print(f"  also: {escape(str(problem))}", file=sys.stderr)
        return 1
    if args.save_anchor is not None:
        heads = {h.chain: {"chain_seq": h.last_seq, "hash": h.last_hash, "kind": h.kind} for h in report.heads}
        try:
            _write_atomically(args.save_anchor, anchors.dumps(anchors.document(heads, time.time())))
        except anchors.AnchorError as exc:
            return _fail(str(exc), 2)
    return 0


def run_anchor(args: argparse.Namespace) -> int:
    _, settings = load_all(args)

    async def main() -> dict[str, dict[str, Any]]:
        async with store(settings, migrate=False) as engine:
            await _current(engine, settings)
            return await audit_store.heads(engine)

    heads = run_with_store(settings, main)
    data = anchors.dumps(anchors.document(heads, time.time()))
    if args.out is None:
        sys.stdout.write(data.decode())
        sys.stdout.flush()
    else:
        try:
            _write_atomically(args.out, data)
        except anchors.AnchorError as exc:
            return _fail(str(exc), 2)
        print(f"anchored {len(heads)} chain(s) in {args.out}", file=sys.stderr)
    return 0


def run_prune(args: argparse.Namespace) -> int:
    _, settings = load_all(args)
    actor = f"cli ({os.environ.get('USER') or os.environ.get('USERNAME') or 'unknown'})"

    async def main() -> Any:
        async with store(settings, migrate=False) as engine:
            await _current(engine, settings)
            return await prune(engine, args.before, export=args.export, actor=actor)

    try:
        result = run_with_store(settings, main)
    except ExportFailed as exc:
        return _fail(str(exc), 2)
    except PruneRefused as exc:
        return _fail(str(exc), 1)
    when = datetime.fromtimestamp(args.before, UTC).isoformat(timespec="seconds")
    print(f"pruned {result.rows} row(s) before {when} from {len(result.chains)} chain(s)")
    for chain, rows in sorted(result.chains.items()):
        print(f"  chain {escape(chain)}: {rows} row(s)")
    for chain in result.raced:
        print(f"  chain {escape(chain)}: another prune cut it meanwhile; left to that one from there")
    if args.export is not None:
        print(f"exported {result.exported} row(s) to {args.export}")
    return 0
