"""The Streamable HTTP transport to an upstream.

Each request is one POST whose answer is JSON or an SSE stream; everything that stream
carries belongs to that request, which is how progress, log messages and server-to-client
requests find their caller. Handshake-era connections also hold a GET stream for
messages that belong to no request, resume a POST stream the server closed mid-call
(`Last-Event-ID`), and end the session with DELETE. A failed connection, or a session
the server no longer knows, marks the transport broken so its supervisor reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
import anyio
import httpx2
from anyio.abc import TaskGroup

from .. import jsonrpc
from ..errors import INTERNAL_ERROR, ProtocolError, UpstreamError
from ..jsonrpc import Message, RequestId

log = logging.getLogger(__name__)

Feed = Callable[[Message, RequestId | None], Awaitable[None]]

_ACCEPT = "application/json, text/event-stream"
_RESUME_ATTEMPTS = 5


def new_client() -> httpx2.AsyncClient:
    """One pooled client for all HTTP upstreams: per-request deadlines are the proxy's job."""
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(connect=10.0, read=None, write=30.0, pool=30.0),
        limits=httpx2.Limits(max_connections=512, max_keepalive_connections=128),
        follow_redirects=False,
    )


class HttpTransport:
    """Sends messages as POSTs; feeds whatever comes back, tagged with the request it belongs to."""

    def __init__(
        self,
        name: str,
        url: str,
        headers: dict[str, str],
        client: httpx2.AsyncClient,
        tg: TaskGroup,
        feed: Feed,
    ) -> None:
        self.name = name
        self.url = url
        self._headers = {"accept": _ACCEPT, "content-type": "application/json", **headers}
        self._client = client
        self._tg = tg
        self._feed = feed
        self._streams: dict[RequestId, anyio.CancelScope] = {}
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.modern = False
        self.broken = anyio.Event()
        self.broken_reason = ""

    def _request_headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(self._headers)
        if self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
        if self.protocol_version is not None:
            headers["mcp-protocol-version"] = self.protocol_version
        if extra:
            headers.update(extra)
        return headers

    def _break(self, reason: str) -> None:
        if not self.broken.is_set():
            self.broken_reason = reason
            self.broken.set()

    async def send(self, message: Message, headers: dict[str, str] | None = None) -> None:
        if self.broken.is_set():
            raise UpstreamError(f"upstream {self.name!r} is unreachable: {self.broken_reason}", {"upstream": self.name})
        if jsonrpc.is_request(message):
            scope = anyio.CancelScope()
            self._streams[message["id"]] = scope
            self._tg.start_soon(self._exchange, message, self._request_headers(headers), scope)
        else:
            await self._post_oneway(message, self._request_headers(headers))

    def abandon(self, request_id: RequestId) -> bool:
        scope = self._streams.pop(request_id, None)
        if scope is not None:
            scope.cancel()
        # At 2026-07-28 closing the stream is the cancellation; earlier revisions also want the notification.
        return not self.modern

    async def _post_oneway(self, message: Message, headers: dict[str, str]) -> None:
        try:
            response = await self._client.post(self.url, content=jsonrpc.dumps(message), headers=headers)
        except httpx2.TransportError as exc:
            self._break(f"{type(exc).__name__}: {exc}")
            raise UpstreamError(f"upstream {self.name!r} is unreachable: {exc}", {"upstream": self.name}) from None
        if response.status_code == 404 and self.session_id is not None:
            self._break("the upstream no longer knows our session")
        elif response.status_code >= 400:
            log.debug("%s: %s answered HTTP %d", self.name, message.get("method", "response"), response.status_code)

    async def _exchange(self, message: Message, headers: dict[str, str], scope: anyio.CancelScope) -> None:
        request_id: RequestId = message["id"]
        answered = False
        try:
            with scope:
                answered = await self._post_request(message, headers)
        except httpx2.TransportError as exc:
            if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout):
                self._break(f"cannot connect: {exc}")
            error = UpstreamError(f"upstream {self.name!r} failed: {type(exc).__name__}: {exc}", {"upstream": self.name})
            await self._feed(jsonrpc.error(request_id, error), request_id)
            answered = True
        finally:
            self._streams.pop(request_id, None)
        if not answered and not scope.cancel_called:
            error = UpstreamError(f"upstream {self.name!r} closed the stream without answering", {"upstream": self.name})
            await self._feed(jsonrpc.error(request_id, error), request_id)

    async def _post_request(self, message: Message, headers: dict[str, str]) -> bool:
        """POST one request and feed its answer; True once the response has been fed."""
        request_id: RequestId = message["id"]
        body = jsonrpc.dumps(message)
        async with self._client.stream("POST", self.url, content=body, headers=headers) as response:
            if message["method"] == "initialize" and "mcp-session-id" in response.headers:
                self.session_id = response.headers["mcp-session-id"]
            if response.status_code == 404 and self.session_id is not None and message["method"] != "initialize":
                self._break("the upstream no longer knows our session")
            content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if content_type == "text/event-stream" and response.status_code < 400:
                last_id, retry, answered = await self._read_events(response, request_id)
            else:
                await response.aread()
                return await self._feed_body(response, request_id)
        if answered or not last_id:
            return answered
        return await self._resume(request_id, last_id, retry)

    async def _feed_body(self, response: httpx2.Response, request_id: RequestId) -> bool:
        try:
            decoded = jsonrpc.parse_incoming(response.content) if response.content else None
        except ProtocolError:
            decoded = None
        if isinstance(decoded, dict) and jsonrpc.is_response(decoded):
            decoded["id"] = request_id
            await self._feed(decoded, request_id)
            return True
        if response.status_code >= 400:
            code = response.status_code
            error = ProtocolError(
                INTERNAL_ERROR, f"upstream {self.name!r} answered HTTP {code}", {"upstream": self.name, "status": code}
            )
            await self._feed(jsonrpc.error(request_id, error), request_id)
            return True
        return False

    async def _read_events(self, response: httpx2.Response, request_id: RequestId) -> tuple[str, int | None, bool]:
        """Feed each SSE event; returns the last event id, the retry hint, and whether the answer came."""
        last_id, retry, answered = "", None, False
        async for event in httpx2.EventSource(response):
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
            await anyio.sleep((retry or 500) / 1000)
            headers = self._request_headers({"accept": "text/event-stream", "last-event-id": last_id})
            headers.pop("content-type", None)
            async with self._client.stream("GET", self.url, headers=headers) as response:
                if response.status_code >= 400:
                    return False
                last, hint, answered = await self._read_events(response, request_id)
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
                async with self._client.stream("GET", self.url, headers=headers) as response:
                    if response.status_code in (405, 406):
                        return  # the server offers no standalone stream
                    if response.status_code == 404:
                        self._break("the upstream no longer knows our session")
                        return
                    if response.status_code >= 400:
                        log.debug("%s: GET stream refused with HTTP %d", self.name, response.status_code)
                    else:
                        delay = 0.5
                        async for event in httpx2.EventSource(response):
                            if event.data.strip():
                                try:
                                    await self._feed(jsonrpc.parse_incoming(event.data), None)
                                except ProtocolError as exc:
                                    log.warning("%s: ignoring a GET stream event: %s", self.name, exc)
            except httpx2.TransportError as exc:
                log.debug("%s: GET stream dropped: %s", self.name, exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def terminate(self) -> None:
        """End the session (DELETE), best effort."""
        if self.session_id is None or self.modern:
            return
        headers = self._request_headers(None)
        headers.pop("content-type", None)
        with anyio.move_on_after(2, shield=True):
            try:
                await self._client.delete(self.url, headers=headers)
            except httpx2.TransportError:
                pass
