"""`policy explain`: which rule decides a call and why; exit 0 for allow, 1 for deny; with
a directory's rules (`--policies`) or the live store's (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_gateway.store import open_engine
from mcp_gateway.store import switches as switch_store

from .cli import run_cli, store_config, write

pytestmark = pytest.mark.anyio

BUNDLE = """\
teams:
  platform:
    rules:
      - id: files-public-only
        allow:
          servers: [files]
          tools: [read_file]
          arguments: {path: {pattern: "^/srv/public/"}}
      - id: search
        allow: {servers: [search]}
      - id: no-deletes
        deny: {servers: ["*"], tools: ["delete_*"]}
      - id: no-queries-soon
        deny: {servers: [search], tools: [query]}
        shadow: true
"""


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


async def explain(*args: str | Path) -> tuple[int, list[str]]:
    result = await run_cli("policy", "explain", *args)
    assert result.stderr == ""
    return result.returncode, lines(result.stdout)


async def test_explain_with_policy_files_names_the_deciding_rule(tmp_path: Path) -> None:
    bundle = write(tmp_path / "policies", "platform.yaml", BUNDLE).parent
    source = f"according to policy files in {bundle}"

    code, out = await explain(
        "--principal", "platform/ci-bot", "--tool", "files__read_file",
        "--arguments", json.dumps({"path": "/srv/public/readme.md"}), "--policies", bundle,
    )  # fmt: skip
    assert code == 0
    assert out[:3] == [
        "ALLOW: platform/ci-bot (team platform) -> tool 'read_file' of 'files'",
        "why: allowed by rule files-public-only",
        source,
    ]
    assert "files-public-only [platform] allow servers=['files'] tools=['read_file'] arguments=" in out[4]

    code, out = await explain(
        "--principal", "platform/ci-bot", "--tool", "files__read_file",
        "--arguments", json.dumps({"path": "/etc/passwd"}), "--policies", bundle,
    )  # fmt: skip
    assert code == 1
    assert out[0] == "DENY: platform/ci-bot (team platform) -> tool 'read_file' of 'files'"
    assert out[1] == "why: arguments not allowed by rule files-public-only: argument 'path' must match '^/srv/public/'"

    code, out = await explain("--principal", "platform/ci-bot", "--tool", "files__delete_file", "--policies", bundle)
    assert code == 1
    assert out[1] == "why: denied by rule no-deletes"

    code, out = await explain("--principal", "platform/ci-bot", "--tool", "mail__send", "--policies", bundle)
    assert code == 1
    assert out[1:] == ["why: no rule allows this", source, "rules of team platform that match, in order (0):"]

    code, out = await explain("--principal", "data/eve", "--tool", "search__lookup", "--policies", bundle)
    assert code == 1
    assert out[1:] == ["why: no policy grants this team anything", source, "team data has no rules"]


async def test_explain_reports_what_a_shadow_rule_would_do(tmp_path: Path) -> None:
    bundle = write(tmp_path / "policies", "platform.yaml", BUNDLE).parent
    code, out = await explain("--principal", "platform/ci-bot", "--tool", "search__query", "--policies", bundle)
    assert code == 0
    assert out[1] == "why: allowed by rule search"
    assert out[-1] == "shadow policy: would_deny (rule no-queries-soon)"


async def test_explain_uses_the_live_policy_of_the_store(tmp_path: Path, store_url: str) -> None:
    config = store_config(tmp_path, store_url)
    bundle = write(tmp_path / "policies", "platform.yaml", BUNDLE).parent
    assert (await run_cli("policy", "apply", bundle, "--config", config)).returncode == 0

    code, out = await explain("--principal", "platform/ci-bot", "--tool", "search__lookup", "--config", config)
    assert code == 0
    assert out[:3] == [
        "ALLOW: platform/ci-bot (team platform) -> tool 'lookup' of 'search'",
        "why: allowed by rule search",
        "according to the live policy (version 1)",
    ]

    write(bundle, "platform.yaml", BUNDLE.replace("allow: {servers: [search]}", "allow: {servers: [elsewhere]}"))
    assert (await run_cli("policy", "apply", bundle, "--config", config)).returncode == 0
    code, out = await explain("--principal", "platform/ci-bot", "--tool", "search__lookup", "--config", config)
    assert code == 1
    assert out[1:3] == ["why: no rule allows this", "according to the live policy (version 2)"]

    code, out = await explain(
        "--principal", "platform/ci-bot", "--tool", "files__read_file",
        "--arguments", json.dumps({"path": "/srv/public/a"}), "--config", config,
    )  # fmt: skip
    assert code == 0 and out[1] == "why: allowed by rule files-public-only"


async def test_explain_reports_an_engaged_kill_switch(tmp_path: Path, store_url: str) -> None:
    config = store_config(tmp_path, store_url)
    bundle = write(tmp_path / "policies", "platform.yaml", BUNDLE).parent
    assert (await run_cli("policy", "apply", bundle, "--config", config)).returncode == 0
    engine = open_engine(store_url)
    try:
        switch = await switch_store.engage(engine, "server", "search", "ops", "incident 9", None)
    finally:
        await engine.dispose()
    code, out = await explain("--principal", "platform/ci-bot", "--tool", "search__lookup", "--config", config)
    assert code == 1
    assert out[1] == "why: kill switch (server) engaged by ops: incident 9"
    assert out[-1] == f"kill switch: {switch['id']}"


async def test_explain_refuses_a_malformed_tool_name(tmp_path: Path) -> None:
    bundle = write(tmp_path / "policies", "platform.yaml", BUNDLE).parent
    result = await run_cli("policy", "explain", "--principal", "platform/x", "--tool", "notatool", "--policies", bundle)
    assert result.returncode == 2
    assert result.stderr == "error: arguments: 'notatool' is not of the form SERVER__TOOL\n"


async def test_explain_a_prompt_and_a_resource(tmp_path: Path) -> None:
    bundle = write(
        tmp_path / "policies",
        "docs.yaml",
        """\
        teams:
          writers:
            rules:
              - id: docs-prompts
                allow: {servers: [docs], tools: [none], prompts: ["greet_*"], resources: [none]}
              - id: docs-public
                allow: {servers: [docs], tools: [none], prompts: [none], resources: ["file:///srv/public/*"]}
        """,
    ).parent
    code, out = await explain("--principal", "writers/ann", "--prompt", "docs__greet_user", "--policies", bundle)
    assert (code, out[0], out[1]) == (
        0,
        "ALLOW: writers/ann (team writers) -> prompt 'greet_user' of 'docs'",
        "why: allowed by rule docs-prompts",
    )
    code, out = await explain("--principal", "writers/ann", "--prompt", "docs__summarise", "--policies", bundle)
    assert (code, out[1]) == (1, "why: no rule allows this")
    code, out = await explain(
        "--principal", "writers/ann", "--resource", "docs+file:///srv/public/a.md", "--policies", bundle
    )
    assert (code, out[0], out[1]) == (
        0,
        "ALLOW: writers/ann (team writers) -> resource 'file:///srv/public/a.md' of 'docs'",
        "why: allowed by rule docs-public",
    )
    code, out = await explain(
        "--principal", "writers/ann", "--resource", "docs+file:///etc/passwd", "--policies", bundle
    )
    assert (code, out[1]) == (1, "why: no rule allows this")


@pytest.mark.parametrize("arguments", ['{"path": ', "[1, 2]", '"a string"'])
async def test_explain_refuses_arguments_that_are_not_a_json_object(tmp_path: Path, arguments: str) -> None:
    # A usage error (exit 2), never exit 1, which would read as "denied".
    bundle = write(tmp_path / "policies", "platform.yaml", BUNDLE).parent
    result = await run_cli(
        "policy", "explain", "--principal", "platform/ci-bot", "--tool", "files__read_file",
        "--arguments", arguments, "--policies", bundle,
    )  # fmt: skip
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-500:])
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert result.stdout == ""


async def test_explain_shows_every_pattern_that_matched_for_each_rule(tmp_path: Path) -> None:
    bundle = write(
        tmp_path / "policies",
        "p.yaml",
        """\
        teams:
          platform:
            rules:
              - id: files-public-only
                allow: {servers: [files, "f*"], tools: [read_file, "read_*"], arguments: {path: {under: /srv/public}}}
              - id: files-everything
                allow: {servers: ["*"]}
              - id: no-template-one
                deny: {servers: [files], resources: ["test://template/1/data", "test://*"]}
        """,
    ).parent
    code, out = await explain(
        "--principal", "platform/ci-bot", "--tool", "files__read_file",
        "--arguments", json.dumps({"path": "/srv/public/../secret.txt"}), "--policies", bundle,
    )  # fmt: skip
    assert code == 0 and out[1] == "why: allowed by rule files-everything"
    assert out[3:] == [
        "rules of team platform that match, in order (2):",
        "files-public-only [platform] allow servers=['files', 'f*'] tools=['read_file', 'read_*'] "
        'arguments={"path": {"under": "/srv/public", "required": true}}',
        "matched: server 'files' by servers ['files', 'f*']; tool 'read_file' by tools ['read_file', 'read_*']; "
        "arguments refused: argument 'path' must be a path under /srv/public in normal form; it has a '..' segment",
        "files-everything [platform] allow servers=['*'] (every kind)",
        "matched: server 'files' by servers ['*']; tool 'read_file': the rule names no kind, so it covers every kind",
    ]

    code, out = await explain(
        "--principal", "platform/ci-bot", "--resource", "files+test://template/%31/data", "--policies", bundle
    )
    assert code == 1 and out[1] == "why: denied by rule no-template-one"
    assert out[3:6] == [
        "compared in normal form: 'test://template/1/data'",
        "rules of team platform that match, in order (2):",
        "no-template-one [platform] deny servers=['files'] resources=['test://template/1/data', 'test://*']",
    ]
    assert out[6] == (
        "matched: server 'files' by servers ['files']; "
        "resource 'test://template/1/data' by resources ['test://template/1/data', 'test://*']"
    )
    # The tool-only rule is not among the matches: it names tools, so it covers no resource.
    assert not any(line.startswith("files-public-only") for line in out)
