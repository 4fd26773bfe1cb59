"""Large answers: what the gateway holds of them, and how it relays them without parsing them whole.

An upstream's answer is held by the gateway from its first byte until the client has
taken it. Two limits bound that:

- `max_response_bytes`: one answer (or one event of an answer's stream) may not be larger;
- `response_buffer_bytes`: all answers being held at once may not be larger, and the answers
  held for one principal may not take more than half of it (`OWNER_SHARE`; or one answer
  of `max_response_bytes`, if that is more): a principal that
  starts large calls and reads none of their answers cannot hold the whole budget and have
  every other principal's answers refused.

An answer that would exceed either is refused with `ResponseRefused` (a JSON-RPC error
naming the setting; the call is audited `upstream_error`) and its upstream connection is
dropped, so what it had sent stops costing anything. The bytes are counted on a `Lease`,
one per client request (in a context variable, because over HTTP the upstream exchange runs
in the client request's own task); the lease is given back once the answer is written, or
the client is gone.

Parsing a 50 MiB JSON answer holds the event loop for ~60 ms and costs several times its
size, so a `tools/call` result over `SPLICE_AT` is spliced: the envelope and the result's
top-level `isError`/`resultType` are read from the bytes (`splice`), the result itself is
relayed as it came, with only the id rewritten. Bodies are scanned as they arrive (`Scan`),
a chunk at a time, for what would make splicing unsound (a `resource` block whose URI the
gateway renames, `isError`/`resultType` anywhere but the result's end, a line break that
would cut an SSE event, an envelope name such as `"id"` that bytes closing the result early
would need to smuggle a member or a second message, a letter written as a `\\u` escape);
any of them and the answer is parsed as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import ctypes.util
import logging
import re
from typing import Any

from .. import jsonrpc
from ..errors import RESPONSE_REFUSED, UpstreamError

log = logging.getLogger(__name__)

SPLICE_AT = 256 * 1024
"""Answers at least this large are spliced when they can be (below it, parsing costs less
than a millisecond)."""
TRIM_AFTER = 64 * 1024 * 1024
"""Bytes given back since the allocator was last asked to return free memory to the system."""
TRIM_DELAY = 0.2
SETTLE_DELAY = 2.0
OWNER_SHARE = 2
"""One principal's answers may hold at most 1/OWNER_SHARE of `response_buffer_bytes`."""


class ResponseRefused(UpstreamError):
    """An upstream answer the gateway will not hold: too large, or too much held already."""

    code = RESPONSE_REFUSED


class Budget:
    """The response bytes held by the whole process."""

    def __init__(self, limit: int, per_response: int) -> None:
        self.limit = limit
        self.per_response = per_response
        self.in_use = 0
        self.refused = 0
        self.by_owner: dict[str, int] = {}
        """Bytes held per principal (leases with an owner)."""
        self._freed = 0
        self._trim: asyncio.TimerHandle | None = None
        self._settled = False

    @property
    def share(self) -> int:
        """What one principal's answers may hold: half the budget, or one largest answer if more."""
        return max(self.limit // OWNER_SHARE, min(self.per_response, self.limit))

    def free(self, size: int) -> None:
        self.in_use -= size
        self._freed += size
        if self._trim is None and (self._freed >= TRIM_AFTER or (self.in_use <= 0 and self._freed >= SPLICE_AT)):
            # Later, once whoever held the answers' buffers has dropped them.
            self._settled = False
            try:
                self._trim = asyncio.get_running_loop().call_later(TRIM_DELAY, self._give_back)
            except RuntimeError:  # no loop (a command, not the server): nothing to wait for
                _trim()

    def _give_back(self) -> None:
        self._trim = None
        self._freed = 0
        _trim()
        if self.in_use <= 0 and not self._settled:
            # Once more when things have settled: a connection's last buffers go with it.
            self._settled = True
            self._trim = asyncio.get_running_loop().call_later(SETTLE_DELAY, self._give_back)


BUDGET = Budget(128 * 1024 * 1024, 64 * 1024 * 1024)
"""The process's budget; `configure` sets its limits from the settings at start."""
WRITE_TIMEOUT = 60.0
"""Seconds a client may take none of its answer before its connection is dropped (and
what the gateway held for it let go)."""


def configure(response_buffer_bytes: int, max_response_bytes: int, write_timeout: float) -> None:
    global WRITE_TIMEOUT
    BUDGET.limit = response_buffer_bytes
    BUDGET.per_response = max_response_bytes
    WRITE_TIMEOUT = write_timeout
    if _libc is not None:
        # glibc raises its mmap threshold after freeing a large block (up to 32 MiB), so the
        # next answers' buffers land in the heap, which it cannot give back while anything
        # small sits above them (measured: +40 MB kept after 16 answers of 50 MiB). A fixed
        # threshold keeps large buffers in their own mappings, returned when freed.
        _libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


class Lease:
    """The response bytes held for one client request."""

    __slots__ = ("budget", "closed", "held", "owner", "splice", "upstream")

    def __init__(self, budget: Budget | None = None, owner: str = "") -> None:
        self.budget = budget or BUDGET
        self.owner = owner
        """The principal whose request this is ("": the gateway's own), for its share."""
        self.held = 0
        self.closed = False
        self.splice = False
        """Set by the router for the call whose answer the client's writer can take raw."""
        self.upstream = ""

    def grow(self, size: int, upstream: str) -> None:
        """Count `size` more bytes held; refuse past either limit."""
        budget = self.budget
        if self.held + size > budget.per_response:
            budget.refused += 1
            raise ResponseRefused(
                f"the answer from upstream {upstream!r} exceeds {budget.per_response} bytes (max_response_bytes)",
                {"upstream": upstream, "limit": "max_response_bytes", "value": budget.per_response},
            )
        if budget.in_use + size > budget.limit:
            budget.refused += 1
            raise ResponseRefused(
                f"the gateway is holding its limit of answers ({budget.limit} bytes, response_buffer_bytes);"
                " retry when fewer large answers are in flight",
                {"upstream": upstream, "limit": "response_buffer_bytes", "value": budget.limit},
            )
        share = budget.share
        if self.owner and budget.by_owner.get(self.owner, 0) + size > share:
            budget.refused += 1
            raise ResponseRefused(
                f"the answers held for this principal reach its share of response_buffer_bytes ({share} bytes);"
                " retry when fewer of its large answers are in flight",
                {"upstream": upstream, "limit": "response_buffer_bytes", "value": share},
            )
        self.adopt(size)

    def adopt(self, size: int) -> None:
        """Count bytes already held (no refusal: they are in memory either way)."""
        if not self.closed:
            self.held += size
            self.budget.in_use += size
            if self.owner:
                by_owner = self.budget.by_owner
                by_owner[self.owner] = by_owner.get(self.owner, 0) + size

    def shrink(self, size: int) -> None:
        if not self.closed:
            size = min(size, self.held)
            self.held -= size
            self._give(size)
            self.budget.free(size)

    def release(self) -> None:
        if not self.closed:
            self.closed = True
            held, self.held = self.held, 0
            self._give(held)
            self.budget.free(held)

    def _give(self, size: int) -> None:
        if self.owner and size:
            by_owner = self.budget.by_owner
            left = by_owner.get(self.owner, 0) - size
            if left > 0:
                by_owner[self.owner] = left
            else:
                by_owner.pop(self.owner, None)


_LEASE: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("lease", default=None)


def open_lease(owner: str = "") -> Lease:
    """The lease of the client request being served in this task (`owner`: its principal)."""
    lease = Lease(owner=owner)
    _LEASE.set(lease)
    return lease


def current() -> Lease | None:
    lease = _LEASE.get()
    return lease if lease is not None and not lease.closed else None


# -- splicing -------------------------------------------------------------------------------

_WATCH = (
    b'"isError"',
    b'"resultType"',
    b'"resource',
    b"\n",
    b"\r",
    # The envelope's names: the result is relayed unvalidated, so bytes that close it early
    # could add a top-level "id" (last one wins: the answer to another pending request, maybe
    # another upstream's), an "error", or a second message after it. None of them can be
    # written without one of these names.
    b'"id"',
    b'"error"',
    b'"result"',
    b'"jsonrpc"',
    b'"method"',
    # A letter written as an escape (`"\\u0069sError"`, `"\\u0072esource_link"`) is the same
    # name to a parser but not to `bytes.find` (non-ASCII escapes, `\\u00e9`, are not these).
    b"\\u004",
    b"\\u005",
    b"\\u006",
    b"\\u007",
)
_WATCH_BY_LEAD = tuple(
    (lead, tuple(token for token in _WATCH if token[:1] == lead)) for lead in dict.fromkeys(t[:1] for t in _WATCH)
)
"""The watched tokens grouped by their first byte."""
_OVERLAP = 11  # the longest watched token, less one
_HEAD = re.compile(rb'\s*\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*(-?\d{1,18})\s*,\s*"result"\s*:\s*(?=\{)')
_TAIL = re.compile(rb'((?:\s*,\s*"(?:isError|resultType)"\s*:\s*(?:true|false|"[A-Za-z_]{1,40}"))*)\s*\}\s*\}\s*\Z')
_MEMBER = re.compile(rb'"(isError|resultType)"\s*:\s*(true|false|"[A-Za-z_]{1,40}")')


class Scan:
    """Bytes of one body or SSE line as they arrive, scanned (once large) for what
    would make splicing unsound."""

    __slots__ = ("buffer", "hits", "scanned")

    MAX_HITS = 64

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.hits: list[int] = []
        self.scanned = 0

    def __len__(self) -> int:
        return len(self.buffer)

    def feed(self, chunk: bytes | memoryview) -> None:
        self.buffer += chunk
        if len(self.buffer) >= SPLICE_AT:
            self._scan()

    def _scan(self) -> None:
        buffer, scanned, hits = self.buffer, self.scanned, self.hits
        self.scanned = len(buffer)
        if len(hits) > self.MAX_HITS:
            return  # past the cap the answer is parsed whatever follows: nothing left to find
        start = max(scanned - _OVERLAP, 0)
        for lead, tokens in _WATCH_BY_LEAD:
            # One look for the byte a group's tokens begin with (memchr, ~50 GB/s): none
            # there, none of them there. A token's own look goes at a few GB/s, and
            # fourteen of those over every byte made scanning the costliest thing the
            # gateway did with a large answer (~4 ms a MiB). Most of a large answer is
            # one string, often a base64 blob or plain text, with no quote or backslash
            # in most reads; escaped JSON text has both and pays as before.
            if buffer.find(lead, start) < 0:
                continue
            for token in tokens:  # bytes.find, where a regex crawls (~40 MB/s)
                at = buffer.find(token, start)
                while at >= 0 and len(hits) <= self.MAX_HITS:
                    if at + len(token) > scanned:  # not found by the look before
                        hits.append(at)
                    at = buffer.find(token, at + 1)


class RawResult(dict[str, Any]):
    """A result relayed as the upstream sent it: `raw` is its JSON; the dict holds only the
    top-level members the gateway reads (`isError`, `resultType`)."""

    def __init__(self, raw: memoryview, members: dict[str, Any]) -> None:
        super().__init__(members)
        self.raw = raw

    def parsed(self) -> dict[str, Any]:
        value = jsonrpc.loads(self.raw)
        return value if isinstance(value, dict) else {}


def splice(scan: Scan, offset: int, request_id: int) -> RawResult | None:
    """The result of a JSON-RPC response in `scan.buffer[offset:]`, unparsed; None when it
    cannot be relayed that way (parse it)."""
    buffer = scan.buffer
    if len(buffer) - offset < SPLICE_AT:
        return None
    scan._scan()
    head = _HEAD.match(buffer, offset, offset + 256)
    if head is None or int(head.group(1)) != request_id:
        return None
    tail_from = max(len(buffer) - 512, head.end())
    tail = _TAIL.search(buffer, tail_from)
    if tail is None:
        return None
    # Every watched token must lie in the members the tail regex read: anywhere else, a
    # resource block, a nested isError or a line break means the result must be parsed.
    # (The head's own "jsonrpc", "id" and "result" are the envelope the regex read.)
    body = head.end()
    if len(scan.hits) > Scan.MAX_HITS or any(body <= hit < tail.start() or buffer[hit] in b"\r\n" for hit in scan.hits):
        return None
    members = {
        name.decode(): jsonrpc.loads(value) for name, value in _MEMBER.findall(buffer, tail.start(1), tail.end(1))
    }
    end = buffer.rindex(b"}", head.end(), buffer.rindex(b"}", head.end()))
    return RawResult(memoryview(buffer)[head.end() : end + 1], members)


def response_pieces(request_id: Any, result: RawResult) -> list[bytes | memoryview]:
    """The JSON-RPC response carrying `result` under the client's id."""
    return [b'{"jsonrpc":"2.0","id":' + jsonrpc.dumps(request_id) + b',"result":', result.raw, b"}"]


def materialize(result: dict[str, Any]) -> dict[str, Any]:
    """A result the gateway needs to read whole (a rare path: parsed on the loop)."""
    return result.parsed() if isinstance(result, RawResult) else result


# -- giving memory back -------------------------------------------------------------------------

_libc: Any = None
try:
    _name = ctypes.util.find_library("c")
    if _name:
        _libc = ctypes.CDLL(_name)
        _libc.malloc_trim  # noqa: B018  (glibc only)
except (OSError, AttributeError):
    _libc = None


_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def _trim() -> None:
    """Ask glibc to return free memory to the system: after large answers the heap keeps
    their pages (measured: ~300 MB kept after 16 answers of 50 MiB, without this)."""
    if _libc is not None:
        _libc.malloc_trim(0)
