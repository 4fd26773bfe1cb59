"""Resumable SSE streams for handshake-era sessions (2025-11-25, SEP-1699).

Every event the gateway writes on a session's POST or GET stream gets an id and is kept in
that session's `Replay` for a while. A stream opens with a priming event (an id, the `retry`
field, no data), so a client that loses the connection, or that the gateway let go of
(`sse_poll_after`), can come back with `GET` and `Last-Event-ID` and receive what it missed:
the later events of the same stream, and, if the call behind a POST stream is still running,
the rest of it as it comes.

Bounds: per session at most `events` events and `bytes` bytes are kept (besides the newest
event, whatever its size), none older than `seconds`; the oldest go first. An id that was
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

    @property
    def enabled(self) -> bool:
        return self.events > 0 and self.bytes > 0


class Replay:
    """One session's recent SSE events, by stream, for `Last-Event-ID`."""

    def __init__(self, limits: ReplayLimits) -> None:
        self.limits = limits
        self._prefix = secrets.token_urlsafe(9) + "."
        self._seq = itertools.count()
        self._streams = itertools.count(1)
        self._events: deque[tuple[int, str, bytes, float]] = deque()
        self._bytes = 0
        self._running: set[str] = set()
        self._changed = anyio.Event()

    def open_stream(self) -> str:
        """A key for a new POST stream, running until `finish`."""
        key = str(next(self._streams))
        self._running.add(key)
        return key

    def finish(self, stream: str) -> None:
        self._running.discard(stream)
        self._wake()

    def record(self, stream: str, message: Message | None) -> bytes:
        """Keep `message` (None: the priming event) as the stream's next event; returns its frame."""
        seq = next(self._seq)
        event_id = f"{self._prefix}{seq}".encode()
        if message is None:
            chunk = b"id: " + event_id + b"\nretry: " + str(self.limits.retry_ms).encode() + b"\ndata: \n\n"
        else:
            chunk = b"id: " + event_id + b"\nevent: message\ndata: " + jsonrpc.dumps(message) + b"\n\n"
        now = time.monotonic()
        self._events.append((seq, stream, chunk, now))
        self._bytes += len(chunk)
        self._evict(now)
        self._wake()
        return chunk

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
            self._bytes -= len(events.popleft()[2])
