"""Review of the session's merges, with real parts: an upstream process that lists a large
tool schema and announces list changes in a loop, each with a new schema, must not stall the
gateway (its liveness probe, every other call) while it compiles them."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from ..support import raw_client, serve, wait_ready, write_config

pytestmark = pytest.mark.anyio

_FLOODING_SERVER = textwrap.dedent(
    """
    import json, sys, threading, time

    PROPERTIES = 15000  # ~830 KB of schema: a few seconds of jsonschema's metaschema check
    lists = 0
    lock = threading.Lock()

    def send(message):
        with lock:
            sys.stdout.write(json.dumps(message) + "\\n")
            sys.stdout.flush()

    def tool():
        props = {f"p{i}": {"type": "string", "minLength": 1, "pattern": "^[a-z]+$"} for i in range(PROPERTIES)}
        schema = {"type": "object", "properties": props, "description": f"list {lists}"}
        return {"name": "wide", "inputSchema": schema}

    def flood():
        while True:
            time.sleep(0.05)
            send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})

    for line in sys.stdin:
        message = json.loads(line)
        method, ident = message.get("method"), message.get("id")
        if ident is None:
            if method == "notifications/initialized":
                threading.Thread(target=flood, daemon=True).start()
            continue
        if method == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": True}},
                      "serverInfo": {"name": "flood", "version": "1"}}
        elif method == "tools/list":
            lists += 1
            result = {"tools": [tool()]}
        elif method == "ping":
            result = {}
        else:
            send({"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": "no"}})
            continue
        send({"jsonrpc": "2.0", "id": ident, "result": result})
    """
)


async def test_an_upstream_flooding_list_changes_with_a_large_new_schema_does_not_stall_the_gateway(
    tmp_path: Path,
) -> None:
    script = tmp_path / "flood.py"
    script.write_text(_FLOODING_SERVER)
    upstream = {"command": sys.executable, "args": [str(script)], "protocol": "handshake"}
    config = write_config(tmp_path, {"flood": upstream})
    async with serve(config) as (url, gateway):
        await wait_ready(gateway, timeout=60)
        worst = 0.0
        async with raw_client(url) as client:
            started = last = time.perf_counter()
            while last - started < 4.0:
                await anyio.sleep(0.02)
                assert (await client.get("/healthz")).status_code == 200
                now = time.perf_counter()
                worst, last = max(worst, now - last), now  # a held loop shows in the sleep too
    assert worst < 0.5, f"/healthz went unanswered for {worst:.2f}s"
