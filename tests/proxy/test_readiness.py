"""`/readyz` waits for each enabled upstream's first connection attempt to end (up or
failed, or its `connect_timeout` spent), so a client sent to a ready gateway sees its
tools; after that, an upstream that is down does not make the gateway unready. The
upstream listing names each upstream's server, whichever protocol era it speaks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from ..support import agent, recorder_upstream, serve, write_config

pytestmark = pytest.mark.anyio


def gated_upstream(tmp_path: Path, **extra: Any) -> tuple[dict[str, Any], Path]:
    """The recorder, silent until the returned gate file exists."""
    gate = tmp_path / "gate"
    config = recorder_upstream(tmp_path / "calls.log")
    config["env"]["RECORDER_GATE"] = str(gate)
    return {**config, **extra}, gate


async def readyz(url: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10) as http:  # loopback, auth: none: the details too
        return await http.get(url.rsplit("/mcp", 1)[0] + "/readyz")


async def until_ready(url: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        while (response := await readyz(url)).status_code != 200:
            await anyio.sleep(0.05)
    return dict(response.json())


async def test_the_gateway_is_not_ready_until_its_only_upstream_is_connected(tmp_path: Path) -> None:
    upstream, gate = gated_upstream(tmp_path)
    async with serve(write_config(tmp_path, {"rec": upstream})) as (url, _):
        waiting = await readyz(url)
        assert waiting.status_code == 503
        assert waiting.json()["reasons"] == ["connecting to upstream(s) for the first time: rec"]
        gate.touch()
        details = await until_ready(url)
        assert [u["state"] for u in details["upstreams"]] == ["ready"]
        async with agent(url) as client:
            assert "rec__record" in [t.name for t in (await client.list_tools()).tools]


async def test_an_upstream_that_fails_its_first_connection_leaves_the_gateway_ready(tmp_path: Path) -> None:
    upstream, gate = gated_upstream(tmp_path)
    broken = {"command": str(tmp_path / "no-such-program")}
    async with serve(write_config(tmp_path, {"rec": upstream, "broken": broken})) as (url, gw):
        with anyio.fail_after(30):
            while gw.upstreams["broken"].restarts == 0:
                await anyio.sleep(0.05)
        assert (await readyz(url)).json()["reasons"] == ["connecting to upstream(s) for the first time: rec"]
        gate.touch()
        details = await until_ready(url)
    states = {u["name"]: u["state"] for u in details["upstreams"]}
    assert states["rec"] == "ready" and states["broken"] in ("down", "connecting")


async def test_an_upstream_that_never_answers_holds_readiness_only_for_its_connect_timeout(tmp_path: Path) -> None:
    upstream, _ = gated_upstream(tmp_path, connect_timeout=2)
    async with serve(write_config(tmp_path, {"rec": upstream})) as (url, gw):
        first = await readyz(url)
        # Not ready at first, unless this machine took the whole connect_timeout to ask.
        assert first.status_code == 503 or gw.upstreams["rec"].settled
        details = await until_ready(url)  # the gate never opens
    assert [u["state"] for u in details["upstreams"]] in (["connecting"], ["down"])


async def test_the_upstream_listing_names_the_server_of_a_2026_07_28_upstream(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"rec": recorder_upstream(tmp_path / "calls.log")})
    async with serve(config) as (url, _):
        details = await until_ready(url)
    [rec] = details["upstreams"]
    assert rec["protocol"] == "2026-07-28"
    assert rec["server"] == "recorder"
