"""The stdio transport to an upstream: a child process speaking JSON-RPC, one message per line.

The child gets a small allow-listed environment plus what its configuration names, so
the gateway's own secrets do not leak into every server it runs. Its stderr is relayed
to the gateway's log under the upstream's name. Shutdown closes stdin, then terminates,
then kills, each after a grace period.

The connection is over when the child exits, and also when its stdout ends or can no
longer be read (a line over `MAX_LINE`): the transport is then `broken`, the supervisor
takes the upstream down (calls fail at once), stops the child and starts a new one. A
child that is alive but does not answer is found by the supervisor's health check.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from .. import jsonrpc
from ..config import StdioUpstream, resolve
from ..errors import GatewayError, ProtocolError, UpstreamError
from ..jsonrpc import Message, RequestId
from .rpc import YIELD_EVERY

log = logging.getLogger(__name__)

INHERITED_ENV = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
MAX_LINE = 64 * 1024 * 1024
GRACE = 2.0

StdioFeed = Callable[[Message, RequestId | None, int], Awaitable[None]]
"""Takes a message, the request whose stream carried it (none here) and its size in bytes."""


def child_environment(config: StdioUpstream) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in INHERITED_ENV and not v.startswith("()")}
    env.update({k: resolve(v) for k, v in config.env.items()})
    return env


class StdioTransport:
    """Writes messages to the child's stdin; a reader task feeds its stdout to the connection."""

    def __init__(self, name: str, process: Process) -> None:
        self.name = name
        self.process = process
        self._lock = anyio.Lock()
        self.broken = asyncio.Event()
        self.broken_reason = ""
        self.suspect = asyncio.Event()
        """Set when a request timed out, which may mean the child hangs: check it now."""

    def break_(self, reason: str) -> None:
        """Give up on this child: its supervisor stops it and starts another."""
        if not self.broken.is_set():
            self.broken_reason = reason
            self.broken.set()

    async def send(self, message: Message, headers: dict[str, str] | None = None) -> None:
        stdin = self.process.stdin
        if stdin is None:
            raise UpstreamError(f"upstream {self.name!r}: stdin is closed", {"upstream": self.name})
        data = jsonrpc.dumps(message) + b"\n"
        try:
            async with self._lock:
                await stdin.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise UpstreamError(f"upstream {self.name!r} is gone: {exc}", {"upstream": self.name}) from None

    def abandon(self, request_id: RequestId) -> bool:
        return True

    async def read_stdout(self, feed: StdioFeed) -> None:
        """Feed each stdout line to the connection until the child closes it; then the
        transport is broken, whatever the reason."""
        try:
            await self._read_stdout(feed)
            # Most often stdout ends because the child exited: give it a moment to say how.
            with anyio.move_on_after(1):
                await self.process.wait()
            if self.process.returncode is not None:
                self.break_(f"process exited with status {self.process.returncode}")
        finally:
            self.break_("stdout closed")

    async def _read_stdout(self, feed: StdioFeed) -> None:
        assert self.process.stdout is not None
        buffered = BufferedByteReceiveStream(self.process.stdout)
        read = 0
        while True:
            read += 1
            if read % YIELD_EVERY == 0:
                # Lines already buffered would otherwise be fed without letting the loop run.
                await anyio.lowlevel.checkpoint()
            try:
                line = await buffered.receive_until(b"\n", MAX_LINE)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except anyio.DelimiterNotFound:
                log.error("%s: a stdout line exceeded %d bytes; closing the connection", self.name, MAX_LINE)
                self.break_(f"a stdout line exceeded {MAX_LINE} bytes")
                await self._discard_stdout()
                return
            if not line.strip():
                continue
            try:
                message = jsonrpc.parse_incoming(line)
            except ProtocolError as exc:
                log.warning("%s: ignoring a stdout line that is not JSON-RPC (%s): %.200r", self.name, exc, line)
                continue
            try:
                await feed(message, None, len(line))
            except GatewayError as exc:
                log.warning("%s: could not route a message: %s", self.name, exc)

    async def _discard_stdout(self) -> None:
        """Read on, throwing it away, while the child is being stopped: a child blocked on a
        full pipe could not exit, and a pipe nobody reads to its end is never closed."""
        assert self.process.stdout is not None
        try:
            while True:
                await self.process.stdout.receive(65536)
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        buffered = BufferedByteReceiveStream(self.process.stderr)
        while True:
            try:
                line = await buffered.receive_until(b"\n", 64 * 1024)
            except anyio.DelimiterNotFound:
                continue
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            log.info("%s: %s", self.name, line.decode("utf-8", "replace").rstrip())


async def _stop(process: Process) -> None:
    # A child blocked writing a line nobody reads any more ignores its stdin closing: the
    # signals after the grace period end it.
    if process.stdin is not None:
        with anyio.CancelScope(shield=True):
            try:
                await process.stdin.aclose()
            except (OSError, anyio.BrokenResourceError):
                pass
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(GRACE):
            await process.wait()
        if process.returncode is None:
            _signal_group(process, signal.SIGTERM)
            with anyio.move_on_after(GRACE):
                await process.wait()
        if process.returncode is None:
            _signal_group(process, signal.SIGKILL)
            with anyio.move_on_after(GRACE):
                await process.wait()


def _signal_group(process: Process, sig: int) -> None:
    # The child leads its own process group, so helpers it started go down with it.
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            process.send_signal(signal.Signals(sig))
        except ProcessLookupError:
            pass


@asynccontextmanager
async def open_stdio(name: str, config: StdioUpstream, tg: TaskGroup, feed: StdioFeed) -> AsyncIterator[StdioTransport]:
    """Spawn the child; on exit, stop it. The reader tasks run in `tg`."""
    command = sys.executable if config.command == "python" else shutil.which(config.command) or config.command
    try:
        process = await anyio.open_process(
            [command, *config.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_environment(config),
            cwd=config.cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise UpstreamError(f"upstream {name!r}: cannot start {config.command!r}: {exc.strerror or exc}") from None
    transport = StdioTransport(name, process)

    async def watch_exit() -> None:
        await process.wait()
        transport.break_(f"process exited with status {process.returncode}")

    tg.start_soon(transport.read_stdout, feed)
    tg.start_soon(watch_exit)
    tg.start_soon(transport.read_stderr)
    try:
        yield transport
    finally:
        await _stop(process)


def exited(transport: Any) -> int | None:
    """The child's exit status, if it has exited."""
    if isinstance(transport, StdioTransport):
        return transport.process.returncode
    return None
