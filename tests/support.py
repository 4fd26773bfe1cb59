"""Real parts for tests: upstream servers as subprocesses, the gateway under uvicorn on a
random loopback port, and SDK clients pointed at it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import uvicorn
import yaml

from mcp_gateway.app import create_app
from mcp_gateway.config import load
from mcp_gateway.runtime import Gateway
from mcp_gateway.settings import settings_for
from mcp_gateway.transport import server as http_server

ROOT = Path(__file__).resolve().parent.parent
EVERYTHING = ROOT / "examples" / "everything_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_socket(port: int = 0) -> socket.socket:
    # IPPROTO_TCP: with proto=0 asyncio never sets TCP_NODELAY and responses stall ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def stdio_upstream(**extra: Any) -> dict[str, Any]:
    """Config for the everything server as a stdio subprocess."""
    return {"command": "python", "args": [str(EVERYTHING)], **extra}


def http_upstream(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, **extra}


ADMIN_TOKEN = "test-admin-token-for-every-keys-gateway"
"""With `auth: keys` the admin API opens only to an admin token: `write_config` gives every
such gateway this one (unless told `admin_token=None`), and `admin_client` presents it."""
ADMIN_TOKEN_ENV = "GATEWAY_TESTS_ADMIN_TOKEN"  # not MCP_GATEWAY_*: CLI helpers strip those
os.environ.setdefault(ADMIN_TOKEN_ENV, ADMIN_TOKEN)

ALLOW_ALL = {"teams": {"local": {"rules": [{"id": "local-all", "allow": {"servers": ["*"]}}]}}}


def write_config(directory: Path, upstreams: dict[str, Any], **gateway: Any) -> Path:
    """A config in `directory`. Unless told otherwise: no API keys (principal local/local),
    a policy directory that lets team `local` use every upstream (`policies=None`: none at
    all), and a SQLite store there; with `auth="keys"`, the admin token `ADMIN_TOKEN`."""
    path = directory / "gateway.yaml"
    if "policies" in gateway:
        if gateway["policies"] is None:
            del gateway["policies"]
    elif gateway.get("auth") != "keys":
        policies = directory / "policies"
        policies.mkdir(exist_ok=True)
        (policies / "allow-all.yaml").write_text(yaml.safe_dump(ALLOW_ALL))
        gateway["policies"] = "policies"
    gateway.setdefault("auth", "none")
    if gateway["auth"] == "keys":
        gateway.setdefault("admin_token", {"$env": ADMIN_TOKEN_ENV})
    if gateway.get("admin_token", "") is None:
        del gateway["admin_token"]
    document: dict[str, Any] = {"upstreams": upstreams, "gateway": gateway}
    path.write_text(yaml.safe_dump(document))
    return path


async def wait_for_port(port: int, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                await anyio.sleep(0.05)


class UpstreamProcess:
    """The everything server over Streamable HTTP, as a real subprocess that can be killed and restarted."""

    def __init__(self, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(EVERYTHING), "--transport", "http", "--host", "127.0.0.1", "--port", str(self.port)],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await wait_for_port(self.port)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None


@asynccontextmanager
async def http_upstream_process(env: dict[str, str] | None = None) -> AsyncIterator[UpstreamProcess]:
    upstream = UpstreamProcess(env=env)
    await upstream.start()
    try:
        yield upstream
    finally:
        upstream.kill()


@asynccontextmanager
async def serving(app: Any, limits: http_server.ConnectionLimits | None = None, port: int = 0) -> AsyncIterator[int]:
    """Run an ASGI app under the gateway's uvicorn setup on a loopback port (default: random); yields the port."""
    with loopback_socket(port) as sock:
        server = uvicorn.Server(http_server.config(app, log_level="warning", limits=limits))
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(20):
                while not server.started:
                    await anyio.sleep(0.02)
            try:
                yield sock.getsockname()[1]
            finally:
                server.should_exit = True


@asynccontextmanager
async def serve(config_path: Path, port: int = 0, **overrides: Any) -> AsyncIterator[tuple[str, Gateway]]:
    """Run the gateway under uvicorn on `port` (default: random); yields its /mcp URL and the running gateway."""
    config = load(config_path)
    settings = settings_for(config, **overrides)
    app = create_app(config, settings)
    async with serving(app, http_server.ConnectionLimits.of(settings), port) as port:
        gateway: Gateway = app.state.gateway
        yield f"http://127.0.0.1:{port}/mcp", gateway


async def wait_ready(gateway: Gateway, timeout: float = 30.0) -> None:
    if not await gateway.wait_ready(timeout):
        states = {u.name: (u.state, u.last_error) for u in gateway.upstreams.values()}
        raise AssertionError(f"upstreams not ready: {states}")


def raw_client(url: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=url.rsplit("/mcp", 1)[0], timeout=30)


@contextmanager
def environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@asynccontextmanager
async def agent(url: str, key: str | None = None, mode: str = "legacy", **kwargs: Any) -> AsyncIterator[Any]:
    """An SDK client for the gateway at `url`, presenting `key` as its bearer API key."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, **kwargs) as client,
    ):
        yield client


def admin_client(url: str, token: str | None = ADMIN_TOKEN) -> httpx2.AsyncClient:
    """The admin API of the gateway whose /mcp is at `url` (`token=None`: anonymous)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.AsyncClient(base_url=url.rsplit("/mcp", 1)[0] + "/admin/api", headers=headers, timeout=30)


async def create_key(url: str, team: str, name: str, token: str | None = ADMIN_TOKEN) -> str:
    async with admin_client(url, token) as admin:
        response = await admin.post("/keys", json={"team": team, "name": name})
        assert response.status_code == 201, response.text
        return str(response.json()["key"])


def write_policies(directory: Path, document: dict[str, Any], name: str = "policy.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(yaml.safe_dump(document))
    return directory


RECORDER = Path(__file__).resolve().parent / "upstreams" / "recorder.py"


def recorder_upstream(log: Path) -> dict[str, Any]:
    """A stdio upstream whose `record` tool appends each call's text to `log`."""
    return {"command": "python", "args": [str(RECORDER)], "env": {"RECORDER_LOG": str(log)}}


class TcpProxy:
    """A loopback TCP forwarder that a test can cut, to make a server unreachable, or
    black-hole, to partition the network.

    A black hole is what a partition looks like to both ends: connections stay open (new
    ones are accepted too) and nothing arrives, in either direction, until `heal()`. Then
    what each side sent meanwhile is delivered, as TCP's retransmission would deliver it;
    except on a connection that one side gave up during the partition: a socket that is
    aborted stops retransmitting, so the other side never gets what it still held.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._scope: anyio.CancelScope | None = None
        self._flowing = anyio.Event()
        self._flowing.set()

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port) as listener:
            with anyio.CancelScope() as scope:
                self._scope = scope
                task_status.started()
                await listener.serve(self._forward)

    @property
    def partitioned(self) -> bool:
        return not self._flowing.is_set()

    async def _forward(self, client: Any) -> None:
        lost = anyio.Event()
        """One side went away while partitioned: what it sent dies with it."""

        async def read(source: Any, sink: Any) -> None:
            async with sink:
                try:
                    async for chunk in source:
                        await sink.send(chunk)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass
                if self.partitioned:
                    lost.set()

        async def write(source: Any, sink: Any, scope: anyio.CancelScope) -> None:
            async with source:
                async for chunk in source:
                    await self._flowing.wait()
                    if lost.is_set():
                        break
                    try:
                        await sink.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        break
            scope.cancel()

        upward, upward_out = anyio.create_memory_object_stream[bytes](1 << 20)
        downward, downward_out = anyio.create_memory_object_stream[bytes](1 << 20)
        async with client, upward, upward_out, downward, downward_out, anyio.create_task_group() as tg:
            tg.start_soon(read, client, upward)
            await self._flowing.wait()  # a partition holds a new connection's first bytes too
            if lost.is_set():
                tg.cancel_scope.cancel()
                return
            async with await anyio.connect_tcp(*self.target) as server:
                tg.start_soon(read, server, downward)
                tg.start_soon(write, upward_out, server, tg.cancel_scope)
                tg.start_soon(write, downward_out, client, tg.cancel_scope)
                await anyio.sleep_forever()

    def cut(self) -> None:
        """Stop accepting and drop every open connection."""
        if self._scope is not None:
            self._scope.cancel()

    def black_hole(self) -> None:
        """Partition: keep every connection open, deliver nothing either way."""
        if not self.partitioned:
            self._flowing = anyio.Event()

    def heal(self) -> None:
        """End the partition: deliver what was held, except on connections given up meanwhile."""
        self._flowing.set()


class GatewayProcess:
    """`mcp-gateway serve` as a real subprocess (a replica), on its own port."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.args = args
        self.env = env or {}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = config.parent / f"gateway-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def start(self, timeout: float = 30.0) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mcp_gateway",
                    "serve",
                    "--config",
                    str(self.config),
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # /readyz shows upstreams only to an admin.
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            with anyio.fail_after(timeout):
                while True:
                    if self.process.poll() is not None:
                        raise AssertionError(f"gateway exited with {self.process.returncode}:\n{self.log.read_text()}")
                    try:
                        response = await http.get(f"http://127.0.0.1:{self.port}/readyz")
                        if response.status_code == 200 and all(
                            u["state"] == "ready" for u in response.json()["upstreams"]
                        ):
                            return
                    except httpx2.TransportError:
                        pass
                    await anyio.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


# -- the dashboard, as a browser without JavaScript uses it -------------------------------------


def dashboard_client(base: str) -> httpx2.AsyncClient:
    """A client for the dashboard at `base` (no `/mcp`) that keeps its cookies and shows redirects."""
    return httpx2.AsyncClient(base_url=base, timeout=30, follow_redirects=False)


def page_csrf(html: str) -> str:
    """The CSRF token a dashboard page's forms carry."""
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None, "no CSRF token on the page"
    return match.group(1)


async def dashboard_log_in(client: httpx2.AsyncClient, token: str = ADMIN_TOKEN) -> str:
    """Log `client` in with `token`; the CSRF token of its page."""
    response = await client.post("/admin/login", data={"token": token})
    assert response.status_code == 303, response.text
    page = await client.get("/admin")
    assert page.status_code == 200, page.text
    return page_csrf(page.text)
