"""Resumable SSE streams for handshake-era sessions (2025-11-25, SEP-1699).

Every event the gateway writes on a session's POST or GET stream gets an id and is kept in
that session's `Replay` for a while. A stream opens with a priming event (an id, the `retry`
field, no data), so a client that loses the connection, or that the gateway let go of
(`sse_poll_after`), can come back with `GET` and `Last-Event-ID` and receive what it missed:
the later events of the same stream, and, if the call behind a POST stream is still running,
the rest of it as it comes.

Bounds: per session at most `events` events and `bytes` bytes are kept (besides the newest
event, whatever its size), none older than `seconds`; the oldest go first. A newest event
larger than `bytes` is counted on the response budget (`payload.Budget`, under the session's
principal's share) while it is kept, and not kept when that refuses it: otherwise each of a
principal's sessions could hold one answer-sized event outside every bound. An id that was
evicted, or that belongs to another session (ids carry a random per-session prefix),
replays nothing.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from .. import jsonrpc
from ..jsonrpc import Message
from ..proxy import payload

GET_STREAM = "get"
"""The key of a session's standalone (GET) stream; POST streams are numbered."""


@dataclass(frozen=True)
class ReplayLimits:
    events: int = 256
    """Events kept per session; 0 turns resumability off (no ids, no priming events)."""
    bytes: int = 64 * 1024
    """Bytes of events kept per session (the newest event is kept whatever its size)."""
    seconds: float = 60.0
    """How long an event stays available for replay."""
    retry_ms: int = 1000
    """The `retry` field of priming events: how long a client waits before reconnecting."""
    poll_after: float | None = None
    """Seconds after which the gateway ends a POST stream whose call is still running (the
    client resumes it with Last-Event-ID); None keeps streams open until the answer."""
    detached: int = 16
    """Calls one session may have running with no client connection (the client hung up, or
    the gateway let it go): past it a client hanging up cancels its call, as before
    resumability, and the gateway lets go of no more streams. Without this bound a client
    could start calls and hang up, with nothing holding it to what it started."""

    @property
    def enabled(self) -> bool:
        return self.events > 0 and self.bytes > 0


class Replay:
    """One session's recent SSE events, by stream, for `Last-Event-ID`."""

    def __init__(self, limits: ReplayLimits, owner: str = "", budget: payload.Budget | None = None) -> None:
        self.limits = limits
        self._lease = payload.Lease(budget, owner)
        """What an event larger than `limits.bytes` holds of the response budget while kept."""
        self._prefix = secrets.token_urlsafe(9) + "."
        self._seq = itertools.count()
        self._streams = itertools.count(1)
        self._events: deque[tuple[int, str, bytes, float]] = deque()
        self._bytes = 0
        self._running: set[str] = set()
        self._detached = 0
        self._changed = anyio.Event()

    def open_stream(self) -> str:
        """A key for a new POST stream, running until `finish`."""
        key = str(next(self._streams))
        self._running.add(key)
        return key

    def detach(self) -> bool:
        """Take one of the session's places for a call running with no client connection;
        False when they are all taken (then the call is not left running unattended)."""
        if self._detached >= self.limits.detached:
            return False
        self._detached += 1
        return True

    def reattach(self) -> None:
        """Give back a place taken by `detach` (the detached call has ended)."""
        self._detached = max(0, self._detached - 1)

    def finish(self, stream: str) -> None:
        self._running.discard(stream)
        self._wake()

    def record(self, stream: str, message: Message | bytes | None) -> bytes:
        """Keep `message` (already encoded, or None: the priming event) as the stream's next
        event; returns its frame."""
        seq = next(self._seq)
        event_id = f"{self._prefix}{seq}".encode()
        if message is None:
            chunk = b"id: " + event_id + b"\nretry: " + str(self.limits.retry_ms).encode() + b"\ndata: \n\n"
        else:
            encoded = message if isinstance(message, bytes) else jsonrpc.dumps(message)
            chunk = b"id: " + event_id + b"\nevent: message\ndata: " + encoded + b"\n\n"
        now = time.monotonic()
        if len(chunk) > self.limits.bytes:
            try:
                self._lease.grow(len(chunk), "sse replay")
            except payload.ResponseRefused:
                self._wake()
                return chunk  # written, not kept: a client that missed it asks again
        self._events.append((seq, stream, chunk, now))
        self._bytes += len(chunk)
        self._evict(now)
        self._wake()
        return chunk

    def close(self) -> None:
        """The session has ended: let go of what it held."""
        while self._events:
            self._drop_oldest()
        self._lease.release()

    def locate(self, last_event_id: str) -> tuple[str, int] | None:
        """The stream and sequence number of a kept event, or None (evicted, or not this session's)."""
        if not last_event_id.startswith(self._prefix):
            return None
        try:
            seq = int(last_event_id[len(self._prefix) :])
        except ValueError:
            return None
        self._evict(time.monotonic())
        for kept, stream, _, _ in self._events:
            if kept == seq:
                return stream, seq
        return None

    def after(self, stream: str, seq: int) -> list[tuple[int, bytes]]:
        return [(kept, chunk) for kept, key, chunk, _ in self._events if key == stream and kept > seq]

    def running(self, stream: str) -> bool:
        return stream in self._running

    async def follow(self, stream: str, seq: int, idle: float) -> AsyncIterator[bytes]:
        """The stream's events after `seq`, then its new ones until it finishes; a keepalive
        comment after `idle` seconds without one."""
        while True:
            changed = self._changed
            for kept, chunk in self.after(stream, seq):
                seq = kept
                yield chunk
            if not self.running(stream) and not self.after(stream, seq):
                return
            with anyio.move_on_after(idle) as waited:
                await changed.wait()
            if waited.cancelled_caught:
                yield b": keepalive\n\n"

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _evict(self, now: float) -> None:
        limits = self.limits
        cutoff = now - limits.seconds
        events = self._events
        # The newest event stays whatever its size (a large answer can still be resumed);
        # the time cap may drop everything.
        while events and (
            (len(events) > 1 and (len(events) > limits.events or self._bytes > limits.bytes)) or events[0][3] < cutoff
        ):
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        size = len(self._events.popleft()[2])
        self._bytes -= size
        if size > self.limits.bytes:
            self._lease.shrink(size)
