"""Retention: prune each chain's rows older than a time, export them first, keep every
chain verifiable.

`prune` reads the rows to go chain by chain, oldest first, checking each link and hash
on the way (a prune never deletes evidence of tampering: a chain that does not verify is
not pruned at all) and writing them to the export file; only once that file is complete
and synced are rows deleted, each chain's oldest first, a batch at a time, with its
checkpoint moved in the same transaction (see `store.retention`). The rows of a chain
that go are those before its first row at or after the time: a chain is cut at one point,
and no row at or after the time is pruned.

`retain` is the `audit_retention` setting's loop: every `audit_prune_interval` a replica
prunes what is older than the retention; on PostgreSQL an advisory lock lets one replica
at a time do it (the others find it held and wait for their next turn).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.lowlevel
import orjson
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import AuditUnavailable
from ..store import audit as store
from ..store import retention
from .chain import GENESIS, row_hash
from .writer import AuditWriter

log = logging.getLogger(__name__)


class PruneRefused(Exception):
    """Nothing was pruned; the message (one line) says why."""


class ExportFailed(PruneRefused):
    """The export could not be written (a path that exists, a missing directory, a full
    disk): nothing was pruned."""


@dataclass
class Pruned:
    before: float
    chains: dict[str, int] = field(default_factory=dict)
    """Rows deleted, by chain."""
    exported: int = 0
    raced: list[str] = field(default_factory=list)
    """Chains another prune cut meanwhile: this one left them from there (they stay verifiable)."""

    @property
    def rows(self) -> int:
        return sum(self.chains.values())


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _open_export(path: Path) -> IO[bytes]:
    try:
        return path.open("xb")
    except FileExistsError:
        raise ExportFailed(f"{path} exists: an export is never overwritten; nothing was pruned") from None
    except OSError as exc:
        raise ExportFailed(f"cannot write the export {path}: {exc.strerror or exc}; nothing was pruned") from None


def _sync_close(out: IO[bytes]) -> None:
    """The export on disk before any row is deleted."""
    out.flush()
    os.fsync(out.fileno())
    out.close()


async def _plan(
    engine: AsyncEngine, before: float, checkpoints: dict[str, dict[str, Any]], out: IO[bytes] | None
) -> tuple[dict[str, dict[str, Any]], int]:
    """Each chain's last row to prune, after checking (and exporting) every row up to it."""
    plan: dict[str, dict[str, Any]] = {}
    exported = 0
    for chain in await store.chains(engine):
        checkpoint = checkpoints.get(chain)
        position = int(checkpoint["chain_seq"]) if checkpoint is not None else 0
        prev = str(checkpoint["hash"]) if checkpoint is not None else GENESIS
        async with aclosing(retention.oldest(engine, chain, after=position)) as rows:
            async for row in rows:
                if row["ts"] >= before:
                    break
                if row["chain_seq"] != position + 1 or row["prev_hash"] != prev or row_hash(row) != row["hash"]:
                    raise PruneRefused(
                        f"chain {chain} does not verify at row seq={row['seq']} (#{row['chain_seq']}): nothing was "
                        "pruned (`mcp-gateway audit verify` names the problem)"
                    )
                if out is not None:
                    out.write(orjson.dumps(row) + b"\n")
                    exported += 1
                position, prev = row["chain_seq"], row["hash"]
                plan[chain] = row
                if position % 256 == 0:
                    await anyio.lowlevel.checkpoint()  # the gateway's calls go on between slices of hashing
    return plan, exported


async def prune(engine: AsyncEngine, before: float, *, export: Path | None = None, actor: str) -> Pruned:
    """Delete every chain's rows before `before` (export them to `export` first, as JSON
    lines); `PruneRefused` if nothing could be pruned safely."""
    holder = await retention.pg_lock(engine)
    if holder is None:
        raise PruneRefused("another prune is running (on another replica or command); nothing was pruned")
    try:
        checkpoints = await store.checkpoints(engine)
        out = _open_export(export) if export is not None else None
        try:
            plan, exported = await _plan(engine, before, checkpoints, out)
            if out is not None:
                await anyio.to_thread.run_sync(_sync_close, out)
        except BaseException as exc:
            if out is not None:
                out.close()
                assert export is not None
                await anyio.Path(export).unlink(missing_ok=True)
                if isinstance(exc, OSError):
                    raise ExportFailed(
                        f"cannot write the export {export}: {exc.strerror or exc}; nothing was pruned"
                    ) from None
            raise
        result = Pruned(before, exported=exported)
        for chain, last in plan.items():
            try:
                result.chains[chain] = await retention.cut(engine, chain, last, checkpoints.get(chain), actor)
            except retention.CheckpointMoved as moved:
                result.chains[chain] = moved.deleted
                result.raced.append(chain)
        return result
    finally:
        await retention.pg_unlock(holder)


async def retain(
    engine: AsyncEngine,
    writer: AuditWriter,
    audit_admin: Any,
    keep: float,
    interval: float,
    export_dir: Path | None = None,
) -> None:
    """Prune what is older than `keep` seconds every `interval` seconds, until cancelled."""
    while True:
        await anyio.sleep(interval)
        now = time.time()
        before = now - keep
        export = None
        if export_dir is not None:
            stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
            export = export_dir / f"audit-{stamp}-{writer.chain.replace('/', '_')[:64]}.jsonl"
        try:
            await audit_admin(
                "mcp-gateway (retention)", "audit.prune", f"before={_when(before)} export={export or '-'}"
            )
            result = await prune(engine, before, export=export, actor=f"retention ({writer.chain})")
        except PruneRefused as exc:
            log.warning("audit retention: %s", exc)
            continue
        except AuditUnavailable:
            log.warning("audit retention: not pruned this time: the prune could not be audited")
            continue
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            # What was done is consistent (each batch commits with its checkpoint); the rest waits.
            log.warning("audit retention: the store failed during the prune (%s); again next time", exc)
            continue
        if result.raced:
            log.warning(
                "audit retention: another prune cut chain(s) %s meanwhile; left to it from there",
                ", ".join(result.raced),
            )
        if export is not None and result.exported == 0:
            await anyio.Path(export).unlink(missing_ok=True)
        if result.rows:
            log.info(
                "audit retention: pruned %d row(s) before %s from %d chain(s)",
                result.rows,
                _when(before),
                len(result.chains),
            )
