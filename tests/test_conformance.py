"""The official MCP conformance suite, run against the gateway with the example everything
server behind it under its own names (`namespace: ""`): whatever the suite checks of a
server, the gateway must pass while proxying it.

The suite is an npm package, run by the repository's `scripts/mcp-conformance` (which
installs the pinned version into a cache on first use; override the runner's path with
`MCP_CONFORMANCE`). It is part of CI: a missing Node.js is a failure, not a skip.

Two versions run: 0.1.16 (every check passes through the gateway), and 0.2.0-alpha.12 with the
requirements frozen for each spec revision, run directly against the example server and
through the gateway in the same test: every scenario that passes directly must pass through
the gateway with the same number of checks.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import anyio
import pytest

from .support import ROOT, UpstreamProcess, http_upstream, serve, stdio_upstream, wait_ready, write_config

pytestmark = pytest.mark.anyio

EXPECTED = "Total: 40 passed, 0 failed"
TAIL_LINES = 60
NEWEST = "0.2.0-alpha.12"
REVISIONS = ("2025-11-25", "2026-07-28")
NOT_IMPLEMENTED_BY_THE_EXAMPLE = ("tasks-",)
"""Scenarios (by name prefix) the example server does not implement: the tasks extension."""

SUMMARY_LINE = re.compile(r"^[✓✗] (?P<scenario>[a-z0-9-]+): (?P<passed>\d+) passed, (?P<failed>\d+) failed$")


def conformance_tool() -> Path:
    override = os.environ.get("MCP_CONFORMANCE")
    return Path(override) if override else ROOT / "scripts" / "mcp-conformance"


def run_suite(tool: Path, url: str, *args: str, version: str | None = None) -> str:
    """Run the suite to completion (blocking: call it from a worker thread); returns its output."""
    env = dict(os.environ)
    if version is not None:
        env["MCP_CONFORMANCE_VERSION"] = version
    completed = subprocess.run(
        [str(tool), "server", "--url", url, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,  # the first run installs the suite from npm
        check=False,
        env=env,
    )
    return completed.stdout


def summary(output: str) -> dict[str, tuple[int, int]]:
    """The SUMMARY section of a run: scenario -> (checks passed, checks failed)."""
    _, _, tail = output.partition("=== SUMMARY ===")
    counts: dict[str, tuple[int, int]] = {}
    for line in tail.splitlines():
        if match := SUMMARY_LINE.match(line.strip()):
            counts[match["scenario"]] = (int(match["passed"]), int(match["failed"]))
    return counts


def the_tool() -> Path:
    tool = conformance_tool()
    assert tool.is_file() and os.access(tool, os.X_OK), (
        f"the MCP conformance runner is missing or not executable at {tool}; "
        "set MCP_CONFORMANCE to its path (it needs node and npm)"
    )
    return tool


async def test_gateway_passes_the_official_conformance_suite_with_the_everything_server_behind_it(
    tmp_path: Path,
) -> None:
    tool = the_tool()
    config = write_config(tmp_path, {"everything": stdio_upstream(namespace="")})
    async with serve(config) as (url, gateway):
        await wait_ready(gateway)
        output = await anyio.to_thread.run_sync(run_suite, tool, url)
    tail = "\n".join(output.splitlines()[-TAIL_LINES:])
    assert EXPECTED in output, f"expected {EXPECTED!r}; the suite's output ends:\n{tail}"


async def test_every_scenario_of_both_revisions_that_passes_directly_passes_through_the_gateway_with_the_same_checks(
    tmp_path: Path,
) -> None:
    """Directly against the example server, and through two gateways in front of it (over
    Streamable HTTP, and as a stdio child): same scenarios, same check counts.

    The example server serves both eras and `protocol: auto` speaks 2026-07-28 to it, so a
    2025-11-25 client's sampling and elicitation reach it as `input_required` results that the
    gateway turns into requests on the client's stream. The gateways let go of POST streams
    after 0.1 s (`sse_poll_after`), as the example server does in `test_reconnection`: the
    suite resumes them with Last-Event-ID."""
    tool = the_tool()
    outputs: dict[tuple[str, str], str] = {}

    async def run(where: str, url: str, revision: str) -> None:
        def blocking() -> str:
            return run_suite(tool, url, "--requirements", revision, version=NEWEST)

        outputs[where, revision] = output = await anyio.to_thread.run_sync(blocking)
        (tmp_path / f"{where.replace(' ', '-')}-{revision}.txt").write_text(output)

    # Separate upstream processes: the suite's list-change and subscription scenarios change
    # server state, and run at once they disturb each other (the example's SSE polling was
    # seen to go unexercised): each direct run and the gateways' runs get their own.
    direct = {revision: UpstreamProcess() for revision in REVISIONS}
    behind = UpstreamProcess()
    for upstream in (*direct.values(), behind):
        await upstream.start()
    (tmp_path / "http").mkdir()
    (tmp_path / "stdio").mkdir()
    over_http = write_config(
        tmp_path / "http", {"everything": http_upstream(behind.url, namespace="")}, sse_poll_after=0.1
    )
    over_stdio = write_config(tmp_path / "stdio", {"everything": stdio_upstream(namespace="")}, sse_poll_after=0.1)
    try:
        async with serve(over_http) as (http_url, http_gateway), serve(over_stdio) as (stdio_url, stdio_gateway):
            await wait_ready(http_gateway)
            await wait_ready(stdio_gateway)
            for gateway in (http_gateway, stdio_gateway):
                assert gateway.upstreams["everything"].modern, "protocol: auto speaks 2026-07-28 to a dual-mode server"
            async with anyio.create_task_group() as tg:
                for revision in REVISIONS:
                    tg.start_soon(run, "direct", direct[revision].url, revision)
                    tg.start_soon(run, "through HTTP", http_url, revision)
                tg.start_soon(run, "through stdio", stdio_url, "2025-11-25")
    finally:
        for upstream in (*direct.values(), behind):
            upstream.kill()

    problems: list[str] = []
    for (where, revision), output in sorted(outputs.items()):
        if where == "direct":
            continue
        straight, proxied = summary(outputs["direct", revision]), summary(output)
        assert straight, f"no SUMMARY in the direct {revision} run:\n{outputs['direct', revision][-3000:]}"
        for scenario, (passed, failed) in sorted(straight.items()):
            if failed:
                if not scenario.startswith(NOT_IMPLEMENTED_BY_THE_EXAMPLE):
                    problems.append(f"{revision} {scenario}: fails directly ({passed} passed, {failed} failed)")
                continue
            if proxied.get(scenario) != (passed, 0):
                problems.append(
                    f"{revision} {scenario}: directly {passed} passed, 0 failed; "
                    f"{where} {proxied.get(scenario, 'not run')}"
                )
    assert not problems, "\n".join([*sorted(set(problems)), f"(the suite's outputs are in {tmp_path})"])
