"""`policy plan` and `policy apply` against a live store (SQLite and PostgreSQL), as real
subprocesses: the plan shows what would change, apply makes a new policy version that
records the bundle's content hash and, in a git work tree, the commit and the dirty flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_gateway.policy import bundle as policy_bundle

from ..support import admin_client, agent, serve, stdio_upstream, wait_ready, write_config
from .cli import git, policy_history, run_cli, store_config, write
from .live import eventually, outcome

pytestmark = pytest.mark.anyio

V1 = """\
teams:
  platform:
    description: Platform agents
    rules:
      - id: read
        allow: {servers: [files], tools: ["read_*"]}
      - id: no-delete
        deny: {servers: ["*"], tools: ["delete_*"]}
      - id: search
        allow: {servers: [search]}
"""

V2 = """\
teams:
  platform:
    description: Platform agents
    rules:
      - id: read
        allow: {servers: [files], tools: ["read_*"]}
      - id: no-delete
        deny: {servers: ["*"], tools: ["delete_*", "drop_*"]}
      - id: limited
        allow:
          servers: [clock]
          arguments: {seconds: {max: 60}}
  data:
    rules:
      - id: data-search
        allow: {servers: [search]}
"""


async def test_plan_shows_additions_changes_and_removals_and_no_changes_when_equal(
    tmp_path: Path, store_url: str
) -> None:
    config = store_config(tmp_path, store_url)
    bundle = write(tmp_path / "policies", "platform.yaml", V1).parent

    first = await run_cli("policy", "plan", bundle, "--config", config)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "+ team platform",
        "+ read [platform] allow servers=['files'] tools=['read_*']",
        "+ no-delete [platform] deny servers=['*'] tools=['delete_*']",
        "+ search [platform] allow servers=['search'] (every kind)",
        "",
        "3 to add, 0 to change, 0 to remove",
    ]
    assert await policy_history(store_url) == []  # a plan changes nothing

    applied = await run_cli("policy", "apply", bundle, "--config", config)
    assert applied.returncode == 0, applied.stderr
    same = await run_cli("policy", "plan", bundle, "--config", config)
    assert (same.returncode, same.stdout) == (0, "no changes: the live policy already matches\n")

    write(bundle, "platform.yaml", V2)
    second = await run_cli("policy", "plan", bundle, "--config", config)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        "+ team data",
        "+ limited [platform] allow servers=['clock'] (every kind) "
        'arguments={"seconds": {"max": 60.0, "required": true}}',
        "+ data-search [data] allow servers=['search'] (every kind)",
        "~ no-delete [platform] deny servers=['*'] tools=['delete_*']",
        "  -> no-delete [platform] deny servers=['*'] tools=['delete_*', 'drop_*']",
        "- search [platform] allow servers=['search'] (every kind)",
        "",
        "2 to add, 1 to change, 1 to remove",
    ]
    assert len(await policy_history(store_url)) == 1


async def test_plan_shows_a_rule_that_moved_as_changed(tmp_path: Path, store_url: str) -> None:
    config = store_config(tmp_path, store_url)
    bundle = write(tmp_path / "policies", "p.yaml", V1).parent
    assert (await run_cli("policy", "apply", bundle, "--config", config)).returncode == 0
    reordered = V1.replace('      - id: read\n        allow: {servers: [files], tools: ["read_*"]}\n', "")
    reordered += '      - id: read\n        allow: {servers: [files], tools: ["read_*"]}\n'
    write(bundle, "p.yaml", reordered)
    result = await run_cli("policy", "plan", bundle, "--config", config)
    assert "0 to add, 3 to change, 0 to remove" in result.stdout, result.stdout


async def test_apply_makes_a_new_version_once_and_force_makes_another(tmp_path: Path, store_url: str) -> None:
    config = store_config(tmp_path, store_url)
    bundle = write(tmp_path / "policies", "platform.yaml", V1).parent
    content_hash = policy_bundle.load(bundle).content_hash

    first = await run_cli("policy", "apply", bundle, "--config", config)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"applied {bundle} as policy version 1 ({content_hash[:12]})\n"
    [row] = await policy_history(store_url)
    assert (row["version"], row["source"], row["content_hash"]) == (1, "bundle", content_hash)
    assert row["actor"] == "mcp-gateway policy apply"
    # Not in a git work tree: nothing to record.
    assert (row["git_commit"], row["git_dirty"]) == (None, None)

    again = await run_cli("policy", "apply", bundle, "--config", config)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"unchanged: the live policy already is {bundle} ({content_hash[:12]})\n"
    assert len(await policy_history(store_url)) == 1

    forced = await run_cli("policy", "apply", bundle, "--force", "--config", config)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout == f"applied {bundle} as policy version 2 ({content_hash[:12]})\n"
    assert [(r["version"], r["content_hash"]) for r in await policy_history(store_url)] == [
        (2, content_hash),
        (1, content_hash),
    ]

    write(bundle, "platform.yaml", V2)
    changed = await run_cli("policy", "apply", bundle, "--config", config)
    assert changed.stdout.startswith(f"applied {bundle} as policy version 3 ")


async def test_apply_refuses_an_invalid_bundle_and_keeps_the_live_one(tmp_path: Path, store_url: str) -> None:
    config = store_config(tmp_path, store_url)
    bundle = write(tmp_path / "policies", "platform.yaml", V1).parent
    assert (await run_cli("policy", "apply", bundle, "--config", config)).returncode == 0
    broken = write(bundle, "platform.yaml", V1.replace("allow: {servers: [search]}", "allow: {servers: [search]"))
    result = await run_cli("policy", "apply", bundle, "--config", config)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {broken}:")
    assert len(await policy_history(store_url)) == 1


async def test_apply_in_a_git_work_tree_records_the_commit_and_whether_it_was_dirty(
    tmp_path: Path, store_url: str
) -> None:
    config = store_config(tmp_path, store_url)
    repo = tmp_path / "repo"
    bundle = write(repo / "policies", "platform.yaml", V1).parent
    write(repo, "README.md", "policy repository\n")
    await git(repo, "init", "-q")
    await git(repo, "add", ".")
    await git(repo, "commit", "-q", "-m", "policies v1")
    head = await git(repo, "rev-parse", "HEAD")

    assert (await run_cli("policy", "apply", bundle, "--config", config)).returncode == 0
    [clean] = await policy_history(store_url)
    assert (clean["git_commit"], clean["git_dirty"]) == (head, False)

    # A change outside the policy directory does not make the bundle dirty.
    write(repo, "README.md", "edited\n")
    assert (await run_cli("policy", "apply", bundle, "--force", "--config", config)).returncode == 0
    assert (await policy_history(store_url))[0]["git_dirty"] is False

    write(bundle, "platform.yaml", V2)  # saved, not committed
    assert (await run_cli("policy", "apply", bundle, "--config", config)).returncode == 0
    dirty = (await policy_history(store_url))[0]
    assert (dirty["version"], dirty["git_commit"], dirty["git_dirty"]) == (3, head, True)

    await git(repo, "commit", "-q", "-am", "policies v2")
    new_head = await git(repo, "rev-parse", "HEAD")
    write(bundle, "extra.yaml", "teams: {ops: {rules: [{allow: {servers: [x]}}]}}\n")  # untracked
    assert (await run_cli("policy", "apply", bundle, "--config", config)).returncode == 0
    untracked = (await policy_history(store_url))[0]
    assert (untracked["git_commit"], untracked["git_dirty"]) == (new_head, True)

    # The running gateway shows the same history over its admin API.
    (tmp_path / "gw").mkdir()
    gateway_config = write_config(tmp_path / "gw", {}, policies=None, database_url=store_url)
    async with serve(gateway_config) as (url, _), admin_client(url) as admin:
        response = await admin.get("/policy")
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["policy_version"] == 4 and shown["directory"] is None
    assert [(h["version"], h["git_commit"], h["git_dirty"]) for h in shown["history"]] == [
        (4, new_head, True),
        (3, head, True),
        (2, head, False),
        (1, head, False),
    ]


async def test_a_running_gateway_decides_by_the_bundle_applied_from_the_cli(tmp_path: Path, store_url: str) -> None:
    config = store_config(tmp_path, store_url)
    bundle = write(
        tmp_path / "policies", "local.yaml", "teams: {local: {rules: [{id: local-x, allow: {servers: [x]}}]}}\n"
    ).parent
    assert (await run_cli("policy", "apply", bundle, "--config", config)).returncode == 0
    (tmp_path / "gw").mkdir()
    gateway_config = write_config(tmp_path / "gw", {"x": stdio_upstream()}, policies=None, database_url=store_url)
    async with serve(gateway_config) as (url, gw), agent(url) as client:
        await wait_ready(gw)
        assert "allowed" in await outcome(client, "x__echo", {"text": "v1"})
        write(bundle, "local.yaml", "teams: {local: {rules: [{id: local-add, allow: {servers: [x], tools: [add]}}]}}\n")
        applied = await run_cli("policy", "apply", bundle, "--config", config)
        assert applied.stdout.startswith(f"applied {bundle} as policy version 2 "), applied.stdout + applied.stderr

        async def denied() -> dict[str, object] | None:
            result = await outcome(client, "x__echo", {"text": "v2"})
            return result.get("denied")

        data = await eventually(denied, "the gateway to pick up version 2")
        assert (data["rule_id"], data["policy_version"]) == ("default-deny", 2)
        assert "allowed" in await outcome(client, "x__add", {"a": 1, "b": 2})


async def test_what_validate_accepts_apply_stores(tmp_path: Path, store_url: str) -> None:
    # A valid team name of 64 characters and a rule without an id: its default id is longer.
    team = "t" * 64
    bundle = write(
        tmp_path / "policies", "long.yaml", f"teams:\n  {team}:\n    rules:\n      - allow: {{servers: [x]}}\n"
    ).parent
    validated = await run_cli("policy", "validate", bundle)
    applied = await run_cli("policy", "apply", bundle, "--config", store_config(tmp_path, store_url))
    if validated.returncode == 0:
        assert applied.returncode == 0, applied.stderr[-600:]
        assert [r["version"] for r in await policy_history(store_url)] == [1]
    else:
        assert validated.returncode == applied.returncode == 2
        assert validated.stderr.startswith(f"error: {bundle / 'long.yaml'}:4: ")
