"""The rig for the fidelity tests: the gateway in front of two everything servers, `local`
(a stdio child of the gateway) and `remote` (a Streamable HTTP subprocess), once per
upstream protocol era; and ways to watch what a client receives, through the SDK client
and on the wire."""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client.session import IncomingMessage
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import ServerNotification

from mcp_gateway.runtime import Gateway

from ..support import http_upstream, http_upstream_process, serve, stdio_upstream, wait_ready, write_config

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
MODES = ["legacy", MODERN]
NAMESPACES = ["local", "remote"]
SERVER_INFO = "io.modelcontextprotocol/serverInfo"
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
# What the gateway's upstream configuration says, and the revision it must then speak.
UPSTREAM_ERAS: dict[str, tuple[dict[str, Any], str]] = {
    "modern": ({}, MODERN),
    "handshake": ({"protocol": "handshake"}, HANDSHAKE),
}


@dataclass
class Deployment:
    url: str
    """The gateway's /mcp endpoint."""
    gateway: Gateway
    upstream_url: str
    """The `remote` everything server itself, for comparing with what the gateway passes on."""


@pytest.fixture(scope="module", params=list(UPSTREAM_ERAS), ids=lambda era: f"upstream-{era}")
async def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    extra, version = UPSTREAM_ERAS[request.param]
    async with http_upstream_process() as remote:
        upstreams = {"local": stdio_upstream(**extra), "remote": http_upstream(remote.url, **extra)}
        config = write_config(tmp_path_factory.mktemp("fidelity"), upstreams)
        async with serve(config) as (url, gateway):
            await wait_ready(gateway)
            spoken = {name: upstream.protocol_version for name, upstream in gateway.upstreams.items()}
            assert spoken == {"local": version, "remote": version}
            yield Deployment(url, gateway, remote.url)


@contextmanager
def handshake_only_api() -> Iterator[None]:
    """Call an SDK method deprecated at 2026-07-28 (logging/setLevel, resources/subscribe)
    without tripping warnings-as-errors; the handshake-era behaviour is what is tested."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        yield


@dataclass
class Inbox:
    """The server notifications an SDK client surfaced through its `message_handler`."""

    messages: list[ServerNotification] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def handler(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            return
        self.messages.append(message)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(
        self, predicate: Callable[[ServerNotification], bool], count: int = 1, within: float = 10.0
    ) -> list[ServerNotification]:
        """Wait until `count` received notifications satisfy `predicate`; returns them."""
        with anyio.fail_after(within):
            while True:
                changed = self._changed
                matching = [m for m in self.messages if predicate(m)]
                if len(matching) >= count:
                    return matching
                await changed.wait()


async def wait_for_session_stream(gateway: Gateway, client_name: str, within: float = 10.0) -> None:
    """Wait until the handshake-era client named `client_name` holds its GET stream open,
    the only way the gateway can send it notifications that belong to no request."""

    def streaming() -> bool:
        return any(s.client_info.get("name") == client_name and s.outbox is not None for s in gateway.router.sessions)

    with anyio.fail_after(within):
        while not streaming():
            await anyio.sleep(0.02)


# -- the wire ------------------------------------------------------------------------------


@dataclass
class Answer:
    """One JSON-RPC request's answer as it crossed the wire."""

    text: str
    """The raw response body."""
    messages: list[dict[str, Any]]
    """Everything the response carried, in order; the last one is the response itself."""

    @property
    def result(self) -> dict[str, Any]:
        final = self.messages[-1]
        assert "result" in final, final
        return final["result"]  # type: ignore[no-any-return]

    def notifications(self, method: str) -> list[dict[str, Any]]:
        return [m.get("params", {}) for m in self.messages if m.get("method") == method]


def _messages(response: httpx2.Response) -> list[dict[str, Any]]:
    if response.headers.get("content-type", "").startswith("application/json"):
        return [response.json()]
    messages = []
    for event in response.text.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
        if data:
            messages.append(json.loads(data))
    return messages


_NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


class RawClient:
    """JSON-RPC over plain HTTP POSTs, to see exactly what the gateway puts on the wire."""

    def __init__(self, http: httpx2.AsyncClient, url: str, mode: str) -> None:
        self._http = http
        self._url = url
        self._mode = mode
        self._ids = iter(range(1, 1_000_000))
        self._session_id: str | None = None

    async def open(self) -> None:
        if self._mode == MODERN:
            return
        params = {
            "protocolVersion": HANDSHAKE,
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        }
        response = await self._post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}, {})
        response.raise_for_status()
        self._session_id = response.headers["mcp-session-id"]
        initialized = await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"}, {})
        assert initialized.status_code == 202

    async def close(self) -> None:
        if self._session_id is not None:
            await self._http.delete(self._url, headers=self._headers({}))

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            **extra,
        }
        if self._mode == MODERN:
            headers["mcp-protocol-version"] = MODERN
        else:
            headers["mcp-protocol-version"] = HANDSHAKE
            if self._session_id is not None:
                headers["mcp-session-id"] = self._session_id
        return headers

    async def _post(self, body: dict[str, Any], extra: dict[str, str]) -> httpx2.Response:
        return await self._http.post(self._url, content=json.dumps(body), headers=self._headers(extra))

    async def request(self, method: str, params: dict[str, Any], meta: dict[str, Any] | None = None) -> Answer:
        meta = dict(meta or {})
        extra: dict[str, str] = {}
        if self._mode == MODERN:
            meta.setdefault(PROTOCOL_VERSION, MODERN)
            meta.setdefault(CLIENT_CAPABILITIES, {})
            extra["mcp-method"] = method
            name_param = _NAME_PARAM.get(method)
            if name_param is not None:
                extra["mcp-name"] = params[name_param]
        body = {
            "jsonrpc": "2.0",
            "id": next(self._ids),
            "method": method,
            "params": {**params, "_meta": meta},
        }
        response = await self._post(body, extra)
        assert response.status_code == 200, response.text
        return Answer(response.text, _messages(response))


@asynccontextmanager
async def raw_client(url: str, mode: str) -> AsyncIterator[RawClient]:
    async with httpx2.AsyncClient(timeout=30) as http:
        client = RawClient(http, url, mode)
        await client.open()
        try:
            yield client
        finally:
            await client.close()


@asynccontextmanager
async def raw_listen(
    url: str, request_id: str, notifications: dict[str, Any]
) -> AsyncIterator[Callable[[], Awaitable[dict[str, Any]]]]:
    """A 2026-07-28 `subscriptions/listen` stream opened by hand; yields a function that
    returns the stream's next frame (raising `TimeoutError` if none comes in 10 s)."""
    meta = {PROTOCOL_VERSION: MODERN, CLIENT_CAPABILITIES: {}}
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "subscriptions/listen",
        "params": {"notifications": notifications, "_meta": meta},
    }
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": MODERN,
        "mcp-method": "subscriptions/listen",
    }
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        http.stream("POST", url, content=json.dumps(body), headers=headers) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()

        async def next_frame() -> dict[str, Any]:
            with anyio.fail_after(10):
                async for line in lines:
                    if line.startswith("data:") and line[5:].strip():  # not a priming event
                        return json.loads(line[5:])  # type: ignore[no-any-return]
            raise AssertionError("the listen stream ended")

        yield next_frame
