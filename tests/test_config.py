"""The configuration file, the settings built from it, and `mcp-gateway check`.

Every problem in a file is reported with the file and the line; secrets are references,
never literals; settings come from flags, then the environment, then the file. The CLI
runs as a real subprocess, as an operator would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import anyio
import httpx2
import pytest

from mcp_gateway.config import HttpUpstream, StdioUpstream, load, parse, resolve
from mcp_gateway.errors import ConfigError
from mcp_gateway.settings import load_settings

from .support import ROOT, free_port

FILE = "gateway.yaml"


def problems(text: str) -> list[tuple[int | None, str]]:
    """(line, message) of each problem `parse` finds; fails the test if it finds none."""
    with pytest.raises(ConfigError) as caught:
        parse(dedent(text), FILE)
    assert all(p.file == FILE for p in caught.value.problems)
    return [(p.line, p.message) for p in caught.value.problems]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "mcp_gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


# -- the file --------------------------------------------------------------------------------


def test_invalid_yaml_names_the_file_and_line() -> None:
    text = """\
        upstreams:
          files:
            command: python: 3
            args: []
        """
    [(line, message)] = problems(text)
    assert line == 3
    assert message.startswith("invalid YAML: mapping values are not allowed")
    assert problems("upstreams:\n\tfiles: {}\n") == [
        (2, "invalid YAML: found character '\\t' that cannot start any token")
    ]


def test_an_unknown_field_names_its_line() -> None:
    text = """\
        upstreams:
          files:
            command: python
            comand: typo
        """
    assert problems(text) == [(4, "upstreams.files.comand: unknown field (did you mean command?)")]
    assert problems("upstream: {}\n") == [(1, "upstream: unknown field (did you mean upstreams?)")]
    assert problems("upstreams:\n  files:\n    command: python\n    colour: red\n") == [
        (4, "upstreams.files.colour: unknown field")
    ]


def test_a_duplicate_key_is_refused_rather_than_overwritten() -> None:
    text = """\
        upstreams:
          files:
            command: python
          files:
            url: https://example.com/mcp
        """
    assert problems(text) == [(4, "duplicate key 'files'")]


@pytest.mark.parametrize("name", ["Files", "files_v2", "2files", "x" * 49])
def test_an_upstream_name_must_be_lowercase_letters_digits_and_dashes(name: str) -> None:
    [(line, message)] = problems(f"upstreams:\n  {name}:\n    command: python\n")
    assert line == 2
    assert message.startswith(f"upstreams.{name}: a name is lowercase letters")


@pytest.mark.parametrize("body", ["args: [x]", "command: python\n    url: https://example.com/mcp"])
def test_an_upstream_gives_exactly_one_of_command_or_url(body: str) -> None:
    assert problems(f"upstreams:\n  files:\n    {body}\n") == [
        (2, "upstreams.files: give either `command` (stdio) or `url` (HTTP)")
    ]


def test_every_problem_in_the_file_is_reported_at_once() -> None:
    text = """\
        upstreams:
          Bad:
            command: python
          empty: {}
          web:
            url: ftp://example.com
        """
    lines = [line for line, _ in problems(text)]
    assert lines == [2, 4, 6]


@pytest.mark.parametrize(
    "upstream",
    [
        "url: https://example.com/mcp\n    headers: {Authorization: Bearer abc123}",
        "url: https://example.com/mcp\n    headers: {X-Api-Key: abc123}",
        "command: python\n    env: {API_TOKEN: abc123}",
        "command: python\n    env: {DB_PASSWORD: hunter2}",
    ],
    ids=["authorization-header", "api-key-header", "token-variable", "password-variable"],
)
def test_a_literal_secret_is_refused_with_a_reference_recommended(upstream: str) -> None:
    [(line, message)] = problems(f"upstreams:\n  svc:\n    {upstream}\n")
    assert line == 4
    assert "looks like a secret" in message
    assert '{"$env": "NAME"}' in message
    assert "abc123" not in message and "hunter2" not in message


def test_values_that_do_not_look_secret_may_be_literals() -> None:
    config = parse("upstreams:\n  svc:\n    command: python\n    env: {LOG_LEVEL: debug}\n", FILE)
    upstream = config.upstreams["svc"]
    assert isinstance(upstream, StdioUpstream)
    assert upstream.env == {"LOG_LEVEL": "debug"}


def test_env_references_resolve_when_used_and_name_a_missing_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = parse(
        "upstreams:\n  svc:\n    url: https://example.com/mcp\n"
        "    headers: {Authorization: {$env: SVC_AUTH}, X-Other: {$env: SVC_MISSING}}\n",
        FILE,
    )
    upstream = config.upstreams["svc"]
    assert isinstance(upstream, HttpUpstream)
    monkeypatch.setenv("SVC_AUTH", "Bearer from-env")
    monkeypatch.delenv("SVC_MISSING", raising=False)
    assert resolve(upstream.headers["Authorization"]) == "Bearer from-env"
    with pytest.raises(ConfigError, match="SVC_MISSING is not set"):
        resolve(upstream.headers["X-Other"])


def test_file_references_resolve_to_the_contents_without_the_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    config = parse(f"upstreams:\n  svc:\n    command: python\n    env: {{API_TOKEN: {{$file: {secret}}}}}\n", FILE)
    upstream = config.upstreams["svc"]
    assert isinstance(upstream, StdioUpstream)
    assert resolve(upstream.env["API_TOKEN"]) == "s3cret"
    secret.unlink()
    with pytest.raises(ConfigError, match="cannot read secret"):
        resolve(upstream.env["API_TOKEN"])


def test_two_upstreams_with_one_namespace_are_refused() -> None:
    text = """\
        upstreams:
          files:
            command: python
          docs:
            command: python
            namespace: files
        """
    assert problems(text) == [(4, "upstreams.docs: namespace 'files' is already used by 'files'")]


def test_relative_working_directories_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / FILE
    path.write_text("upstreams:\n  svc:\n    command: python\n    cwd: servers\n")
    upstream = load(path).upstreams["svc"]
    assert isinstance(upstream, StdioUpstream)
    assert upstream.cwd == str((tmp_path / "servers").resolve())


# -- settings ----------------------------------------------------------------------------------


def test_an_invalid_gateway_setting_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / FILE
    path.write_text("upstreams: {}\ngateway:\n  host: 127.0.0.1\n  port: abc\n  colour: blue\n")
    config = load(path)
    with pytest.raises(ConfigError) as caught:
        load_settings(config.gateway, path, config.gateway_lines)
    found = sorted((p.file, p.line, p.message.split(":")[0]) for p in caught.value.problems)
    assert found == [(str(path), 4, "gateway.port"), (str(path), 5, "gateway.colour")]
    assert "unknown setting" in str(caught.value)


def test_the_environment_overrides_the_file_and_a_flag_overrides_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MCP_GATEWAY_PORT", raising=False)
    assert load_settings({"port": 8001}).port == 8001
    monkeypatch.setenv("MCP_GATEWAY_PORT", "8002")
    assert load_settings({"port": 8001}).port == 8002
    assert load_settings({"port": 8001}, port=8003).port == 8003
    assert load_settings({"port": 8001}, port=None).port == 8002  # a flag not given is no override


def test_a_bad_environment_value_is_blamed_on_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_GATEWAY_PORT", "abc")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, Path(FILE), {})
    [problem] = caught.value.problems
    assert problem.file == "flags or environment"
    assert problem.message.startswith("port:")


@pytest.mark.anyio
async def test_serve_listens_on_the_flag_port_over_env_and_file(tmp_path: Path) -> None:
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    config = tmp_path / FILE
    config.write_text(f"upstreams: {{}}\ngateway:\n  port: {file_port}\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = await anyio.open_process(
            [sys.executable, "-m", "mcp_gateway", "serve", "--config", str(config), "--port", str(flag_port)],
            env={**clean, "MCP_GATEWAY_PORT": str(env_port)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    async with process, httpx2.AsyncClient(timeout=2) as http:
        try:
            with anyio.fail_after(20):
                while True:
                    assert process.returncode is None, f"serve exited:\n{log.read_text()}"
                    try:
                        response = await http.get(f"http://127.0.0.1:{flag_port}/healthz")
                        break
                    except httpx2.TransportError:
                        await anyio.sleep(0.05)
        finally:
            if process.returncode is None:
                process.terminate()
            await process.wait()
    assert response.json() == {"status": "ok"}


# -- mcp-gateway check -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "upstreams:\n  Bad:\n    command: python\n  empty: {}\n"
            "  web:\n    url: https://example.com/mcp\n    headers: {Authorization: Bearer abc}\n",
            [(2, "upstreams.Bad"), (4, "upstreams.empty"), (7, "upstreams.web.headers")],
        ),
        (
            "upstreams: {}\ngateway:\n  port: abc\n  colour: blue\n",
            [(3, "gateway.port"), (4, "gateway.colour")],
        ),
        ("upstreams:\n  files:\n    command: python: 3\n", [(3, "invalid YAML")]),
    ],
    ids=["upstreams", "settings", "yaml"],
)
def test_check_reports_every_problem_with_file_and_line_and_exits_2(
    tmp_path: Path, text: str, expected: list[tuple[int, str]]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ")[:3] for line in lines] == [["error", f"{path}:{n}", what] for n, what in expected]


def test_check_prints_the_catalog_of_the_example_config_and_exits_0() -> None:
    result = run_cli("check", "--config", str(ROOT / "examples" / "gateway.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "everything: ready" in result.stdout
    listed = {line.strip() for line in result.stdout.splitlines()}
    assert {"everything__echo", "everything__add", "everything__test_simple_prompt"} <= listed
    assert "everything+test://static-text" in listed


def test_check_says_why_an_upstream_did_not_start_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / FILE
    path.write_text("upstreams:\n  ghost:\n    command: /nonexistent/ghost-server\n    connect_timeout: 3\n")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ghost: down" in result.stdout
    error = next(line for line in result.stdout.splitlines() if line.strip().startswith("error:"))
    assert "/nonexistent/ghost-server" in error
    assert "No such file or directory" in error


@pytest.mark.parametrize(
    "headers",
    ['{X-Tenant: "a\\r\\nInjected: 1"}', '{X-Tenant: "a\\u0000b"}', '{"X Tenant": a}', '{"X-Tenant:": a}'],
    ids=["CRLF in a value", "NUL in a value", "space in a name", "colon in a name"],
)
def test_an_upstream_header_that_is_not_one_header_line_is_refused_at_load(headers: str) -> None:
    [(line, message)] = problems(f"upstreams:\n  svc:\n    url: https://example.com/mcp\n    headers: {headers}\n")
    assert line == 4
    assert "header" in message
