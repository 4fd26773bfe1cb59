"""PostgreSQL LISTEN: hear other replicas' changes within milliseconds.

One dedicated connection per process listens on the state channel; each notification
pokes the snapshot refresher. If the connection drops it is re-established with backoff,
and the refresher's polling covers anything missed meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg
from sqlalchemy.engine import make_url

from . import bounds
from .state import CHANNEL

log = logging.getLogger(__name__)


def connect_args(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    return {
        "host": parsed.host,
        "port": parsed.port or 5432,
        "user": parsed.username,
        "password": parsed.password,
        "database": parsed.database,
    }


async def listen(url: str, poke: Callable[[], None], timeout: float = bounds.STORE_TIMEOUT) -> None:
    """Listen until cancelled, reconnecting as needed. Connecting and each liveness probe
    are bounded by `timeout`; a connection that fails is abandoned, not closed politely."""
    delay = 0.5
    while True:
        connection = None
        try:
            connection = await asyncpg.connect(**connect_args(url), **bounds.connect_options(timeout))
            bounds.harden(connection, timeout)
            lost = anyio.Event()
            connection.add_termination_listener(lambda _, lost=lost: lost.set())
            await connection.add_listener(CHANNEL, lambda *_: poke())
            log.info("listening for state changes on %s", CHANNEL)
            delay = 0.5
            poke()  # anything that changed while we were not listening
            while not lost.is_set() and not connection.is_closed():
                with anyio.move_on_after(5):
                    await lost.wait()
                if not lost.is_set():
                    # A silent network failure leaves the socket open: prove it is alive.
                    with anyio.fail_after(timeout):
                        await connection.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("state listener lost (%s); retrying in %.1fs, polling meanwhile", exc, delay)
            bounds.abandon(connection)
        finally:
            if connection is not None and not connection.is_closed():
                try:
                    with anyio.CancelScope(shield=True), anyio.fail_after(2):
                        await connection.close()
                except (Exception, TimeoutError):
                    bounds.abandon(connection)
        await anyio.sleep(delay)
        delay = min(delay * 2, 30.0)
