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
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio

from .. import jsonrpc
from ..errors import INTERNAL_ERROR, ProtocolError, UpstreamError
from ..jsonrpc import Message, RequestId
from .http11 import ConnectError, HttpError, Pool, Response

log = logging.getLogger(__name__)

Feed = Callable[[Message, RequestId | None], Awaitable[None]]

_ACCEPT = "application/json, text/event-stream"
_RESUME_ATTEMPTS = 5
MAX_EVENT = 64 * 1024 * 1024


@dataclass
class Event:
    data: str
    id: str = ""
    retry: int | None = None


_EOL = re.compile(rb"\r\n|\r|\n")


def _split(data: bytes) -> list[bytes]:
    """Split at CRLF, LF or a bare CR: the SSE format allows all three."""
    return _EOL.split(data) if b"\r" in data else data.split(b"\n")


async def _lines(response: Response) -> AsyncIterator[str]:
    pending = b""
    async for chunk in response.chunks():
        pending += chunk
        if len(pending) > MAX_EVENT:
            raise UpstreamError(f"an SSE line exceeded {MAX_EVENT} bytes")
        # A CR that ends what has arrived may be the first half of a CRLF: it waits for the next chunk.
        held = pending.endswith(b"\r")
        *lines, pending = _split(pending[:-1] if held else pending)
        if held:
            pending += b"\r"
        for line in lines:
            yield line.decode("utf-8")
    if pending:
        *lines, last = _split(pending)
        for line in lines:
            yield line.decode("utf-8")
        if last:
            yield last.decode("utf-8")


async def events(response: Response) -> AsyncIterator[Event]:
    """Server-sent events from a response body (the fields MCP uses: data, id, retry)."""
    data: list[str] = []
    event_id, retry, size = "", None, 0
    async for line in _lines(response):
        if not line:
            if data:
                yield Event("\n".join(data), event_id, retry)
            elif event_id or retry is not None:
                yield Event("", event_id, retry)
            data, retry, size = [], None, 0
            continue
        if line.startswith(":"):
            continue
        size += len(line)
        if size > MAX_EVENT:
            raise UpstreamError(f"an SSE event exceeded {MAX_EVENT} bytes")
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            event_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)
    if data:
        yield Event("\n".join(data), event_id, retry)


class HttpTransport:
    """Sends messages as POSTs; feeds whatever comes back, tagged with the request it belongs to."""

    def __init__(self, name: str, url: str, headers: dict[str, str], feed: Feed) -> None:
        self.name = name
        self.url = url
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
            headers["mcp-session-id"] = self.session_id
        if self.protocol_version is not None:
            headers["mcp-protocol-version"] = self.protocol_version
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
        except HttpError as exc:
            self.break_(f"{type(exc).__name__}: {exc}")
            raise UpstreamError(f"upstream {self.name!r} is unreachable: {exc}", {"upstream": self.name}) from None
        if status == 404 and self.session_id is not None:
            self.break_("the upstream no longer knows our session")
        elif status >= 400:
            log.debug("%s: %s answered HTTP %d", self.name, message.get("method", "response"), status)

    async def _exchange(self, message: Message, headers: dict[str, str]) -> None:
        request_id: RequestId = message["id"]
        try:
            answered = await self._post_request(message, headers)
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
        if not answered:
            error = UpstreamError(
                f"upstream {self.name!r} closed the stream without answering", {"upstream": self.name}
            )
            await self._feed(jsonrpc.error(request_id, error), request_id)

    async def _post_request(self, message: Message, headers: dict[str, str]) -> bool:
        """POST one request and feed its answer; True once the response has been fed."""
        request_id: RequestId = message["id"]
        response, conn = await self._pool.request("POST", headers, jsonrpc.dumps(message))
        try:
            if message["method"] == "initialize" and "mcp-session-id" in response.headers:
                self.session_id = response.headers["mcp-session-id"]
            if response.status == 404 and self.session_id is not None and message["method"] != "initialize":
                self.break_("the upstream no longer knows our session")
            content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if content_type == "text/event-stream" and response.status < 400:
                last_id, retry, answered = await self._read_events(response, request_id)
            else:
                return await self._feed_body(await response.read(), response.status, request_id)
        finally:
            if not response.complete:
                self._pool.abort(conn)  # a stream we stopped reading (cancelled): not reusable
        if answered or not last_id:
            return answered
        return await self._resume(request_id, last_id, retry)

    async def _feed_body(self, body: bytes, status: int, request_id: RequestId) -> bool:
        try:
            decoded = jsonrpc.parse_incoming(body) if body else None
        except ProtocolError:
            decoded = None
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

    async def _read_events(self, response: Response, request_id: RequestId) -> tuple[str, int | None, bool]:
        """Feed each SSE event; returns the last event id, the retry hint, and whether the answer came."""
        last_id, retry, answered = "", None, False
        async for event in events(response):
            if event.id:
                last_id = event.id
            if event.retry is not None:
                retry = event.retry
            if not event.data.strip():
                continue  # a priming event: an id to resume from, no message
            try:
                msg = jsonrpc.parse_incoming(event.data)
            except ProtocolError as exc:
                log.warning("%s: ignoring an SSE event that is not JSON-RPC: %s", self.name, exc)
                continue
            await self._feed(msg, request_id)
            if jsonrpc.is_response(msg) and msg.get("id") == request_id:
                answered = True
        return last_id, retry, answered

    async def _resume(self, request_id: RequestId, last_id: str, retry: int | None) -> bool:
        """The server closed the stream before answering (SEP-1699): reconnect with GET."""
        for _ in range(_RESUME_ATTEMPTS):
            await asyncio.sleep((retry or 500) / 1000)
            headers = self._request_headers({"accept": "text/event-stream", "last-event-id": last_id})
            headers.pop("content-type", None)
            response, conn = await self._pool.request("GET", headers)
            try:
                if response.status >= 400:
                    await response.read()
                    return False
                last, hint, answered = await self._read_events(response, request_id)
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
                        async for event in events(response):
                            if event.data.strip():
                                try:
                                    await self._feed(jsonrpc.parse_incoming(event.data), None)
                                except ProtocolError as exc:
                                    log.warning("%s: ignoring a GET stream event: %s", self.name, exc)
                finally:
                    if not response.complete:
                        self._pool.abort(conn)
            except ConnectError as exc:
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
                except HttpError:
                    pass
        self._pool.close()
