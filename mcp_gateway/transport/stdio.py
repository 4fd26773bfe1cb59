"""stdio for agents that only spawn processes: `mcp-gateway stdio`.

One client on stdin/stdout, one JSON-RPC message per line. The first request decides the
era: `initialize` starts a handshake session; a request carrying the 2026-07-28 `_meta`
envelope makes every request self-contained. Logs go to stderr, never stdout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request

from .. import jsonrpc
from ..errors import Denied, GatewayError, ProtocolError
from ..identity import Principal
from ..jsonrpc import Message
from ..protocol import (
    CLIENT_CAPABILITIES_META_KEY,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    LATEST_MODERN_VERSION,
    LOG_LEVEL_META_KEY,
    MODERN_PROTOCOL_VERSIONS,
    PROTOCOL_VERSION_META_KEY,
)
from ..proxy.router import Router
from ..proxy.session import Call, Session

log = logging.getLogger(__name__)


MAX_LINE = 16 * 1024 * 1024
NOTICE_BUFFER = 256
REVOKED_GRACE = 5.0
"""Seconds a revoked session's killed calls get to write their kill errors before it closes."""


class _Rejected(ProtocolError):
    """A request the protocol's inbound checks refused before it reached the router."""


class StdioServer:
    """Serves one client over a pair of byte streams."""

    def __init__(
        self,
        router: Router,
        principal: Callable[[], Principal | None],
        stdin: ByteReceiveStream,
        stdout: ByteSendStream,
    ) -> None:
        """`principal` is asked on every request, so a revoked key stops working at once."""
        first = principal()
        assert first is not None, "check the key before serving"
        self.router = router
        self._principal = principal
        self.session = Session(principal=first, outbox=self._post)
        self._stdin = BufferedByteReceiveStream(stdin)
        self._stdout = stdout
        self._lock = anyio.Lock()
        self._modern: bool | None = None
        # Session-level notifications queue here and a writer task drains them, so a
        # client slow to read stdout never holds up the upstream connection they came from.
        self._notices, self._notices_out = anyio.create_memory_object_stream[Message](NOTICE_BUFFER)
        self._reading = anyio.CancelScope()
        self._revoked = False
        self._drained = anyio.Event()

    async def _post(self, message: Message) -> None:
        try:
            self._notices.send_nowait(message)
        except anyio.WouldBlock:
            log.warning("the client is not reading stdout: dropped %s", message.get("method"))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def _write_notices(self) -> None:
        async for message in self._notices_out:
            await self.write(message)

    def _end(self) -> None:
        """The key was revoked (or the principal disabled): stop reading; the calls in
        flight end with the kill error (the registry cancelled them) and then the session."""
        self._revoked = True
        self._reading.cancel()

    async def write(self, message: Message) -> None:
        data = jsonrpc.dumps(message) + b"\n"
        async with self._lock:
            await self._stdout.send(data)

    async def serve(self) -> None:
        """Serve until stdin closes."""
        self.router.open_session(self.session, close=self._end)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_notices)
                with self._reading:
                    while True:
                        try:
                            line = await self._stdin.receive_until(b"\n", MAX_LINE)
                        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
                            break
                        except anyio.DelimiterNotFound:
                            await self.write(jsonrpc.error(None, ProtocolError(INVALID_REQUEST, "message too large")))
                            break
                        if line.strip():
                            await self._receive(line, tg)
                if self._revoked:
                    log.warning("the API key was revoked: ending the stdio session")
                    with anyio.move_on_after(REVOKED_GRACE):
                        while self.session.calls:  # each ends at once, with the kill error
                            await self._drained.wait()
                            self._drained = anyio.Event()
                tg.cancel_scope.cancel()
        finally:
            self.session.outbox = None
            await self.router.close_session(self.session)
            if self._revoked:  # tell the client: its end of stdout closes
                try:
                    await self._stdout.aclose()
                except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass

    async def _receive(self, line: bytes, tg: Any) -> None:
        try:
            message = jsonrpc.parse_incoming(line)
        except ProtocolError as exc:
            await self.write(jsonrpc.error(None, exc))
            return
        if jsonrpc.is_response(message):
            self.session.asks.answer(message)
        elif jsonrpc.is_notification(message):
            await self.router.notify(self.session, message)
        else:
            tg.start_soon(self._serve, message)

    def _call(self, message: Message) -> Call:
        if self._principal() is None:
            raise Denied("The API key is no longer valid", {"reason": "invalid API key"})
        params = jsonrpc.params_of(message)
        method = message["method"]
        if self._modern is None:
            self._modern = (
                method != "initialize"
                and method != "ping"
                and jsonrpc.meta_of(params).get(PROTOCOL_VERSION_META_KEY) in MODERN_PROTOCOL_VERSIONS
            )
            if self._modern:
                self.session.outbox = None  # at 2026-07-28 only listen streams carry notifications
        if self._modern:
            verdict = classify_inbound_request(message)
            if isinstance(verdict, InboundLadderRejection):
                raise _Rejected(verdict.code, verdict.message, verdict.data)
            meta = jsonrpc.meta_of(params)
            caps, level = meta.get(CLIENT_CAPABILITIES_META_KEY), meta.get(LOG_LEVEL_META_KEY)
            return Call(
                self.session,
                message["id"],
                method,
                params,
                protocol_version=LATEST_MODERN_VERSION,
                client_capabilities=caps if isinstance(caps, dict) else {},
                log_level=level if isinstance(level, str) else None,
            )
        if method != "initialize" and not self.session.protocol_version:
            raise ProtocolError(INVALID_REQUEST, "initialize first")
        return Call(
            self.session,
            message["id"],
            method,
            params,
            protocol_version=self.session.protocol_version,
            client_capabilities=self.session.client_capabilities,
            log_level=self.session.log_level,
        )

    async def _serve(self, message: Message) -> None:
        request_id = message["id"]
        with anyio.CancelScope() as scope:
            self.session.calls[request_id] = scope
            try:
                call = self._call(message)
                call.emit = self.write
                if not call.modern:
                    call.ask = lambda method, params: self.session.asks.ask(self.write, method, params)
                if call.method == "subscriptions/listen":
                    await self._listen(call)
                    return
                reply = jsonrpc.result(request_id, await self.router.handle(call))
            except _Rejected as exc:  # refused before any decision: on record if it names a target
                await self.router.refuse_rejected(self.session.principal, message, exc.message)
                reply = jsonrpc.error(request_id, exc)
            except GatewayError as exc:
                reply = jsonrpc.error(request_id, exc)
            except Exception:  # the top of a request: answer, log, keep serving
                log.exception("request %r failed", request_id)
                reply = jsonrpc.error(request_id, ProtocolError(INTERNAL_ERROR, "Internal error"))
            finally:
                self.session.calls.pop(request_id, None)
                self._drained.set()
        if not scope.cancelled_caught:
            await self.write(reply)

    async def _listen(self, call: Call) -> None:
        outgoing_send, outgoing = anyio.create_memory_object_stream[Message](NOTICE_BUFFER)
        try:
            listener = await self.router.listen(call, outgoing_send)  # raises a refusal: answered as an error
        except BaseException:
            outgoing_send.close()
            outgoing.close()
            raise
        listener.deliver(
            jsonrpc.notification("notifications/subscriptions/acknowledged", {"notifications": listener.wants})
        )
        try:
            with anyio.CancelScope() as scope:
                listener.on_end = scope.cancel
                async with outgoing_send, outgoing:
                    async for message in outgoing:
                        await self.write(message)
        finally:
            self.router.unlisten(listener)
