"""The processes a benchmark run needs: upstreams and gateway replicas, on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
FAST = ROOT / "bench" / "fast_upstream.py"
EVERYTHING = ROOT / "examples" / "everything_server.py"
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
"""Given to every bench gateway (`MCP_GATEWAY_ADMIN_TOKEN`): with API keys, the admin API
and `/readyz`'s upstream states answer only an admin."""
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            await asyncio.sleep(0.02)
    raise TimeoutError(f"nothing listens on {port}")


class Proc:
    def __init__(
        self,
        args: list[str],
        port: int,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.port = port
        out = log.open("wb") if log is not None else subprocess.DEVNULL
        self.popen = subprocess.Popen(
            args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, cwd=cwd
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


async def fast_upstream() -> Proc:
    port = free_port()
    proc = Proc([sys.executable, str(FAST), "--port", str(port)], port)
    await wait_port(port)
    return proc


async def everything_upstream() -> Proc:
    port = free_port()
    proc = Proc([sys.executable, str(EVERYTHING), "--transport", "http", "--port", str(port)], port)
    await wait_port(port)
    return proc


def write_gateway_config(directory: Path, upstreams: dict[str, Any], **gateway: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    policies = directory / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "bench.yaml").write_text(
        yaml.safe_dump({"teams": {"bench": {"rules": [{"id": "bench-all", "allow": {"servers": ["*"]}}]}}})
    )
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump({"upstreams": upstreams, "gateway": {"policies": "policies", **gateway}}))
    return path


LAUNCH_FROM_TREE = (
    "import runpy, sys, mcp_gateway; "
    "print('mcp_gateway imported from', mcp_gateway.__file__, file=sys.stderr, flush=True); "
    "runpy.run_module('mcp_gateway', run_name='__main__', alter_sys=True)"
)
"""What `python -m mcp_gateway` does, after saying (first line on stderr) which file the
package was imported from: this venv's editable install points at this checkout, so a
gateway meant to run another checkout's code must show that it did."""


def gateway_command(python: str = sys.executable, tree: Path | None = None) -> list[str]:
    """`python -m mcp_gateway`, or with `tree`, the launcher above (run with cwd and
    PYTHONPATH at that tree, so its package comes before the editable install's)."""
    return [python, "-m", "mcp_gateway"] if tree is None else [python, "-c", LAUNCH_FROM_TREE]


def tree_env(tree: Path | None) -> dict[str, str]:
    return {} if tree is None else {"PYTHONPATH": str(tree)}


async def create_key(config: Path, tree: Path | None = None) -> str:
    """An API key for team `bench`, made by the code of `tree` (its store, its schema)."""
    out = subprocess.run(
        [
            *gateway_command(tree=tree),
            "keys",
            "create",
            "--config",
            str(config),
            "--team",
            "bench",
            "--name",
            "load",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tree,
        env={**os.environ, **tree_env(tree)},
    )
    return out.stdout.strip()


class Gateway(Proc):
    """`mcp-gateway serve` as a replica (under `python`, by default this interpreter; with
    `tree`, that checkout's code rather than this one's)."""

    def __init__(
        self, config: Path, env: dict[str, str] | None = None, python: str = sys.executable, tree: Path | None = None
    ) -> None:
        port = free_port()
        self.config = config
        self.started = time.perf_counter()
        self.log = config.parent / f"gateway-{port}.log"
        super().__init__(
            [
                *gateway_command(python, tree),
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            port,
            {"MCP_GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, **tree_env(tree), **(env or {})},
            self.log,
            tree,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.port}/admin/api"

    async def ready(self, timeout: float = 60) -> float:
        """Seconds from spawning the process to /readyz reporting ready with every upstream up."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as http:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"gateway exited with {self.popen.returncode}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/readyz") as response:
                        body = await response.json()
                        if response.status == 200 and all(u["state"] == "ready" for u in body["upstreams"]):
                            return time.perf_counter() - self.started
                except (aiohttp.ClientError, OSError):
                    pass
                await asyncio.sleep(0.005)
        raise TimeoutError("gateway not ready")
