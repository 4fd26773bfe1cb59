"""Bounds on every PostgreSQL operation, so that a dead network fails it instead of hanging it.

A partition leaves sockets open and silent: nothing errors, every await waits. Each layer
gets a bound that holds without an answer from the server:

- the driver's own timeouts: `timeout` for connecting, `command_timeout` for each statement;
- the socket: TCP keepalive and `TCP_USER_TIMEOUT`, so the kernel gives up on a dead peer;
- the server: `idle_in_transaction_session_timeout` ends a session whose client went silent
  inside a transaction (its work is rolled back with it), `statement_timeout` bounds a
  statement that waits on a lock;
- a watchdog per operation that *abandons* the connection at its deadline: the socket is
  reset (SO_LINGER 0 discards what the kernel still holds unsent, so no COMMIT of ours can
  reach the server after the heal) and closed without the ROLLBACK that asyncpg would
  otherwise await on the dead connection. The server rolls back when the session ends.

What stays open: a COMMIT that reached the server before the deadline commits there and
then, though its answer may never come back (the operator is told the outcome is not
confirmed). Nothing is applied *after* the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any

log = logging.getLogger(__name__)

STORE_TIMEOUT = 3.0
"""Default bound on one store operation, in seconds (setting `store_timeout`)."""


def server_settings(timeout: float) -> dict[str, str]:
    """Session settings for the gateway's connections (sent in the startup packet)."""
    ms = str(max(1, round(timeout * 1000)))
    return {"idle_in_transaction_session_timeout": ms, "statement_timeout": ms}


def connect_options(timeout: float) -> dict[str, Any]:
    """asyncpg `connect` arguments bounding the connect and every statement."""
    return {"timeout": timeout, "command_timeout": timeout, "server_settings": server_settings(timeout)}


def _socket(conn: Any) -> Any:
    # asyncpg exposes no public handle on its socket; the transport is the only way to it.
    transport = getattr(conn, "_transport", None)
    return transport.get_extra_info("socket") if transport is not None else None


def harden(conn: Any, timeout: float) -> None:
    """Make the kernel give up on a silent peer within about `timeout` (TCP only; Linux
    options where the platform has them)."""
    sock = _socket(conn)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    seconds = max(1, round(timeout))
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), seconds),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), max(1, round(timeout * 1000))),
    ]
    for level, name, value in options:
        if name is None:
            continue
        try:
            sock.setsockopt(level, name, value)
        except OSError as exc:  # an option this kernel lacks: the other bounds still hold
            log.debug("store: socket option %s not set: %s", name, exc)


def abandon(conn: Any) -> None:
    """Drop a connection at once: reset, never a ROLLBACK awaited on a dead network."""
    if conn is None or conn.is_closed():
        return
    sock = _socket(conn)
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    conn.terminate()


class Watchdog:
    """Abandons `conn` if the operation is still running `timeout` seconds from now."""

    __slots__ = ("_conn", "_handle", "fired")

    def __init__(self, conn: Any, timeout: float) -> None:
        self._conn = conn
        self.fired = False
        self._handle = asyncio.get_running_loop().call_later(timeout, self._fire)

    def _fire(self) -> None:
        self.fired = True
        if not self._conn.is_closed():
            log.warning("store: an operation outlived its bound; its connection is abandoned")
        abandon(self._conn)

    def cancel(self) -> None:
        self._handle.cancel()
