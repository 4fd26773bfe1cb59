"""The Streamable HTTP transport to an upstream.

Each request is one POST whose answer is JSON or an SSE stream; everything that stream
carries belongs to that request, which is how progress, log messages and server-to-client
requests find their caller. Handshake-era connections also hold a GET stream for
messages that belong to no request, resume a POST stream the server closed mid-call
(`Last-Event-ID`), and end the session with DELETE. A failed connection, or a session
the server no longer knows, marks the transport broken so its supervisor reconnects.

Requests go through `http11.Pool`, a lean keep-alive client: this is the gateway's hot
path (see that module for why not a general-purpose client).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio

from .. import jsonrpc
from ..errors import ProtocolError, UpstreamError
from ..jsonrpc import Message, RequestId
from ..protocol import INTERNAL_ERROR, LAST_EVENT_ID_HEADER, MCP_PROTOCOL_VERSION_HEADER, MCP_SESSION_ID_HEADER
from . import payload
from .http11 import ConnectError, HttpError, InvalidHeader, Pool, Response, check_header
from .rpc import YIELD_EVERY

log = logging.getLogger(__name__)

Feed = Callable[[Message, RequestId | None], Awaitable[None]]

_ACCEPT = "application/json, text/event-stream"
_RESUME_ATTEMPTS = 5
MAX_EVENT = 64 * 1024 * 1024


@dataclass
class Event:
    data: bytes
    id: str = ""
    retry: int | None = None
    scan: payload.Scan | None = None
    """The event's one `data:` line as it arrived, when it is large (for `payload.splice`)."""
    offset: int = 0


class _Parser:
    """SSE fields into events (the fields MCP uses: data, id, retry)."""

    __slots__ = ("big", "data", "event_id", "offset", "retry", "size")

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.event_id = ""
        self.retry: int | None = None
        self.size = 0
        self.big: payload.Scan | None = None
        self.offset = 0

    def event(self) -> Event:
        event = Event(
            b"\n".join(self.data) if self.big is None else b"", self.event_id, self.retry, self.big, self.offset
        )
        self.data, self.retry, self.size, self.big = [], None, 0, None
        return event

    def line(self, line: bytes | bytearray, lease: payload.Lease, scan: payload.Scan | None = None) -> Event | None:
        """Take one line (without its line break); the event it ends, if any. `scan` holds a
        line that came in several reads (its bytes are on `lease`)."""
        if line[-1:] == b"\r":
            line = line[:-1]
        if line[:6] == b"event:":
            return None  # MCP's events are all `message`
        if not line:
            if self.data:
                return self.event()
            if self.event_id or self.retry is not None:
                event = Event(b"", self.event_id, self.retry)
                self.retry = None
                return event
            return None
        if line[:1] == b":":
            return None
        self.size += len(line)
        if self.size > MAX_EVENT:
            raise UpstreamError(f"an SSE event exceeded {MAX_EVENT} bytes")
        colon = line.find(b":")
        name = bytes(line if colon < 0 else line[:colon])
        start = len(line) if colon < 0 else colon + 1
        if start < len(line) and line[start] == 0x20:
            start += 1
        if name == b"data":
            if scan is not None and len(line) >= payload.SPLICE_AT and not self.data:
                # Kept as it came (its bytes stay on the lease until the event is fed).
                self.big, self.offset = scan, start
                lease.adopt(len(line))
                self.data.append(b"")
            elif self.big is not None:  # a second data line: the event is joined after all
                self.data = [bytes(memoryview(self.big.buffer)[self.offset :]), bytes(line[start:])]
                lease.shrink(len(self.big))
                self.big = None
            else:
                self.data.append(bytes(line[start:]))
        elif name == b"id":
            value = line[start:].decode("utf-8", "replace")
            if "\0" not in value:
                self.event_id = value
        elif name == b"retry" and line[start:].isdigit():
            self.retry = int(line[start:])
        return None


async def events(response: Response, lease: payload.Lease, upstream: str = "") -> AsyncIterator[Event]:
    """Server-sent events from a response body. Whole lines in a read are split at C speed;
    a line that spans reads is gathered in a `Scan` (scanned for splicing once large), its
    bytes held on `lease` until the line is done with."""
    parser = _Parser()
    partial: payload.Scan | None = None
    cr_before = False
    try:
        async for chunk in response.chunks():
            # A bare CR ends a line too (the SSE format allows CRLF, LF and CR): lines are
            # split at LF below, so CRs become LFs here, and a CRLF split across two reads
            # stays one line break. JSON never holds a raw CR, so large data pays one scan.
            if cr_before and chunk[:1] == b"\n":
                chunk = chunk[1:]
            cr_before = False
            if b"\r" in chunk:
                cr_before = chunk.endswith(b"\r")
                chunk = bytes(chunk).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if partial is not None:
                end = chunk.find(b"\n")
                if end < 0:
                    if len(partial) + len(chunk) > MAX_EVENT:
                        raise UpstreamError(f"an SSE line exceeded {MAX_EVENT} bytes")
                    lease.grow(len(chunk), upstream)
                    partial.feed(chunk)
                    continue
                lease.grow(end, upstream)
                partial.feed(memoryview(chunk)[:end])
                line, held, partial = partial, len(partial), None
                if line.buffer.endswith(b"\r"):
                    del line.buffer[-1]
                    line.hits = [hit for hit in line.hits if hit < len(line.buffer)]
                event = parser.line(line.buffer, lease, line)
                del line
                lease.shrink(held)
                if event is not None:
                    yield event
                chunk = chunk[end + 1 :]
            lines = chunk.split(b"\n")
            rest = lines.pop()
            for whole in lines:
                event = parser.line(whole, lease)
                if event is not None:
                    yield event
            if rest:
                partial = payload.Scan()
                lease.grow(len(rest), upstream)
                partial.feed(rest)
    except BaseException:
        if partial is not None:
            partial.buffer = bytearray()  # a refused line is not left to a traceback's frames
        raise
    if partial is not None:
        held = len(partial)
        event = parser.line(partial.buffer, lease, partial)
        lease.shrink(held)
        if event is not None:
            yield event
    if parser.data:
        yield parser.event()


def _event_data(event: Event) -> bytes | memoryview:
    if event.scan is not None:
        return memoryview(event.scan.buffer)[event.offset :]
    return event.data


class HttpTransport:
    """Sends messages as POSTs; feeds whatever comes back, tagged with the request it belongs to."""

    def __init__(self, name: str, url: str, headers: dict[str, str], feed: Feed) -> None:
        self.name = name
        self.url = url
        for key, value in headers.items():
            try:
                check_header(key, value)
            except InvalidHeader as exc:  # a configured header: refused before any request
                raise UpstreamError(f"upstream {name!r}: {exc}", {"upstream": name}) from None
        self._headers = {"accept": _ACCEPT, "content-type": "application/json", **headers}
        self._pool = Pool(url)
        self._feed = feed
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.modern = False
        self.broken = asyncio.Event()
        self.broken_reason = ""
        self.suspect = asyncio.Event()
        """Set when a request died in a way that may mean the server did: check it now."""

    def _request_headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(self._headers)
        if self.session_id is not None:
            headers[MCP_SESSION_ID_HEADER] = self.session_id
        if self.protocol_version is not None:
            headers[MCP_PROTOCOL_VERSION_HEADER] = self.protocol_version
        if extra:
            headers.update(extra)
        return headers

    def break_(self, reason: str) -> None:
        """Give up on this connection: its supervisor reconnects."""
        if not self.broken.is_set():
            self.broken_reason = reason
            self.broken.set()

    async def send(self, message: Message, headers: dict[str, str] | None = None) -> None:
        """POST a message. A request's whole exchange runs here, in the caller's task (no
        task of its own per call: this is every call's path); it returns once the answer,
        and whatever its stream carried before it, has been fed. Cancelling the caller
        drops the request's connection, which closes its stream."""
        if self.broken.is_set():
            raise UpstreamError(f"upstream {self.name!r} is unreachable: {self.broken_reason}", {"upstream": self.name})
        if jsonrpc.is_request(message):
            await self._exchange(message, self._request_headers(headers))
        else:
            await self._post_oneway(message, self._request_headers(headers))

    def abandon(self, request_id: RequestId) -> bool:
        # The exchange ended with its caller, and its stream with it. At 2026-07-28
        # closing the stream is the cancellation; earlier revisions also want the notification.
        return not self.modern

    def close(self) -> None:
        self._pool.close()

    async def _post_oneway(self, message: Message, headers: dict[str, str]) -> None:
        try:
            response, _ = await self._pool.request("POST", headers, jsonrpc.dumps(message))
            status = response.status
            await response.read()
        except InvalidHeader as exc:
            raise UpstreamError(f"not sent to upstream {self.name!r}: {exc}", {"upstream": self.name}) from None
        except HttpError as exc:
            self.break_(f"{type(exc).__name__}: {exc}")
            raise UpstreamError(f"upstream {self.name!r} is unreachable: {exc}", {"upstream": self.name}) from None
        if status == 404 and self.session_id is not None:
            self.break_("the upstream no longer knows our session")
        elif status >= 400:
            log.debug("%s: %s answered HTTP %d", self.name, message.get("method", "response"), status)

    async def _exchange(self, message: Message, headers: dict[str, str]) -> None:
        request_id: RequestId = message["id"]
        lease = payload.current()
        own = lease is None
        if lease is None:  # the gateway's own request, or a client whose writer is not ours
            lease = payload.Lease()
        try:
            answered = await self._post_request(message, headers, lease)
        except InvalidHeader as exc:  # nothing was sent; the upstream is not at fault
            error = UpstreamError(f"not sent to upstream {self.name!r}: {exc}", {"upstream": self.name})
            await self._feed(jsonrpc.error(request_id, error), request_id)
            return
        except HttpError as exc:
            if isinstance(exc, ConnectError):
                self.break_(str(exc))
            else:
                self.suspect.set()
            error = UpstreamError(
                f"upstream {self.name!r} failed: {type(exc).__name__}: {exc}", {"upstream": self.name}
            )
            await self._feed(jsonrpc.error(request_id, error), request_id)
            return
        except UpstreamError as exc:
            await self._feed(jsonrpc.error(request_id, exc), request_id)
            return
        finally:
            if own:
                lease.release()
        if not answered:
            error = UpstreamError(
                f"upstream {self.name!r} closed the stream without answering", {"upstream": self.name}
            )
            await self._feed(jsonrpc.error(request_id, error), request_id)

    async def _post_request(self, message: Message, headers: dict[str, str], lease: payload.Lease) -> bool:
        """POST one request and feed its answer; True once the response has been fed."""
        request_id: RequestId = message["id"]
        response, conn = await self._pool.request("POST", headers, jsonrpc.dumps(message))
        try:
            if message["method"] == "initialize" and MCP_SESSION_ID_HEADER in response.headers:
                self.session_id = response.headers[MCP_SESSION_ID_HEADER]
            if response.status == 404 and self.session_id is not None and message["method"] != "initialize":
                self.break_("the upstream no longer knows our session")
            content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if content_type == "text/event-stream" and response.status < 400:
                last_id, retry, answered = await self._read_events(response, request_id, lease)
            else:
                body = payload.Scan()
                try:
                    async for chunk in response.chunks():
                        lease.grow(len(chunk), self.name)
                        body.feed(chunk)
                except payload.ResponseRefused:
                    body.buffer = bytearray()  # not left to a traceback's frames
                    raise
                return await self._feed_body(body, response.status, request_id, lease)
        finally:
            if not response.complete:
                self._pool.abort(conn)  # a stream we stopped reading (cancelled, refused): not reusable
        if answered or not last_id:
            return answered
        return await self._resume(request_id, last_id, retry, lease)

    def _spliced(self, scan: payload.Scan, offset: int, request_id: RequestId, lease: payload.Lease) -> Message | None:
        """A large answer the client's writer can take raw, relayed without parsing it."""
        if not lease.splice or not isinstance(request_id, int):
            return None
        raw = payload.splice(scan, offset, request_id)
        return None if raw is None else {"jsonrpc": "2.0", "id": request_id, "result": raw}

    async def _feed_body(self, body: payload.Scan, status: int, request_id: RequestId, lease: payload.Lease) -> bool:
        decoded = self._spliced(body, 0, request_id, lease)
        if decoded is None:
            try:
                decoded = jsonrpc.parse_incoming(body.buffer) if body.buffer else None
            except ProtocolError:
                decoded = None
            lease.shrink(len(body))  # parsed (or not JSON): the bytes are no longer held
            body.buffer = bytearray()
        if isinstance(decoded, dict) and jsonrpc.is_response(decoded):
            decoded["id"] = request_id
            await self._feed(decoded, request_id)
            return True
        if status >= 400:
            error = ProtocolError(
                INTERNAL_ERROR,
                f"upstream {self.name!r} answered HTTP {status}",
                {"upstream": self.name, "status": status},
            )
            await self._feed(jsonrpc.error(request_id, error), request_id)
            return True
        return False

    async def _read_events(
        self, response: Response, request_id: RequestId, lease: payload.Lease
    ) -> tuple[str, int | None, bool]:
        """Feed each SSE event; returns the last event id, the retry hint, and whether the answer came."""
        last_id, retry, answered, fed = "", None, False, 0
        async for event in events(response, lease, self.name):
            if event.id:
                last_id = event.id
            if event.retry is not None:
                retry = event.retry
            msg = None if event.scan is None else self._spliced(event.scan, event.offset, request_id, lease)
            if msg is None:
                data = _event_data(event)
                if event.scan is not None:
                    lease.shrink(len(event.scan))  # parsed below: the raw line is let go
                if len(data) < 64 and not bytes(data).strip():
                    continue  # a priming event: an id to resume from, no message
                try:
                    msg = jsonrpc.parse_incoming(data)
                except ProtocolError as exc:
                    log.warning("%s: ignoring an SSE event that is not JSON-RPC: %s", self.name, exc)
                    continue
                finally:
                    del data
                    if event.scan is not None:
                        event.scan.buffer = bytearray()
            await self._feed(msg, request_id)
            if jsonrpc.is_response(msg) and msg.get("id") == request_id:
                answered = True
            fed += 1
            if fed % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return last_id, retry, answered

    async def _resume(self, request_id: RequestId, last_id: str, retry: int | None, lease: payload.Lease) -> bool:
        """The server closed the stream before answering (SEP-1699): reconnect with GET."""
        for _ in range(_RESUME_ATTEMPTS):
            await asyncio.sleep((retry or 500) / 1000)
            headers = self._request_headers({"accept": "text/event-stream", LAST_EVENT_ID_HEADER: last_id})
            headers.pop("content-type", None)
            response, conn = await self._pool.request("GET", headers)
            try:
                if response.status >= 400:
                    await response.read()
                    return False
                last, hint, answered = await self._read_events(response, request_id, lease)
            finally:
                if not response.complete:
                    self._pool.abort(conn)
            last_id, retry = last or last_id, hint or retry
            if answered:
                return True
        return False

    async def listen(self) -> None:
        """Hold the session's GET stream (handshake era) for messages that belong to no request."""
        delay = 0.5
        while not self.broken.is_set():
            headers = self._request_headers({"accept": "text/event-stream"})
            headers.pop("content-type", None)
            try:
                response, conn = await self._pool.request("GET", headers)
                try:
                    if response.status in (405, 406):
                        return  # the server offers no standalone stream
                    if response.status == 404:
                        self.break_("the upstream no longer knows our session")
                        return
                    if response.status >= 400:
                        log.debug("%s: GET stream refused with HTTP %d", self.name, response.status)
                        await response.read()
                    else:
                        delay = 0.5
                        lease, fed = payload.Lease(), 0
                        try:
                            async for event in events(response, lease, self.name):
                                data = _event_data(event)
                                if len(data) >= 64 or bytes(data).strip():
                                    try:
                                        await self._feed(jsonrpc.parse_incoming(data), None)
                                    except ProtocolError as exc:
                                        log.warning("%s: ignoring a GET stream event: %s", self.name, exc)
                                del data
                                if event.scan is not None:
                                    lease.shrink(len(event.scan))
                                fed += 1
                                if fed % YIELD_EVERY == 0:
                                    await asyncio.sleep(0)
                        finally:
                            lease.release()
                finally:
                    if not response.complete:
                        self._pool.abort(conn)
            except (ConnectError, InvalidHeader) as exc:
                self.break_(str(exc))
                return
            except HttpError as exc:
                log.debug("%s: GET stream dropped: %s", self.name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def terminate(self) -> None:
        """End the exchanges in flight (their callers have been answered by the connection's
        close), then the session (DELETE), best effort."""
        self._pool.close()
        if self.session_id is not None and not self.modern:
            headers = self._request_headers(None)
            headers.pop("content-type", None)
            with anyio.move_on_after(2, shield=True):
                try:
                    response, _ = await self._pool.request("DELETE", headers)
                    await response.read()
                except (HttpError, InvalidHeader):
                    pass
        self._pool.close()
