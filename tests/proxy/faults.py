"""Real processes for the flow tests: bench/fault_upstream.py (an upstream that answers
large or floods on request) and a raw client that sends one request and reads its answer
only when told (a slow reader)."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ..support import ROOT, free_port, wait_for_port

FAULT_UPSTREAM = ROOT / "bench" / "fault_upstream.py"
MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


@asynccontextmanager
async def fault_upstream() -> AsyncIterator[str]:
    """A fault upstream process; yields its /mcp URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(FAULT_UPSTREAM), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for_port(port)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.kill()
        process.wait(10)


def call_body(request_id: int, tool: str, arguments: dict[str, Any], **meta: Any) -> bytes:
    params = {"name": tool, "arguments": arguments, "_meta": {**META, **meta}}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}).encode()


def call_headers(tool: str, accept: str = "application/json") -> dict[str, str]:
    return {
        "content-type": "application/json",
        "accept": accept,
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": tool,
    }


class SlowReader:
    """One connection that sends a `tools/call` and reads nothing until `read_all`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request_id: int, tool: str, arguments: dict[str, Any]) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little for us
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=2**14)  # reads ahead 32 KiB at most
        body = call_body(request_id, tool, arguments)
        head = ["POST /mcp HTTP/1.1", f"host: 127.0.0.1:{self.port}", f"content-length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in call_headers(tool).items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()

    async def read_all(self) -> tuple[int, dict[str, Any]]:
        """The answer's status and JSON body."""
        assert self.reader is not None
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = int(head.split(" ", 2)[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:]) if k}
        body = await self.reader.readexactly(int(headers["content-length"]))
        return status, json.loads(body)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def audit_rows(db: Path, kind: str = "completion") -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM audit WHERE kind = ? ORDER BY seq", (kind,)).fetchall()
    return [dict(row) for row in rows]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
