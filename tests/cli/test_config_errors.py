"""Config and policy errors say what is wrong where it is, all in one pass: a misspelt
field is unknown (with the near name), an unset `$env` in `gateway:` has its line, a rule-id
clash comes with the field errors, rules for servers the config lacks are warned of, and
a SQLite store in a directory that does not exist is an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..admin.common import mcp_gateway
from ..support import ALLOW_ALL, write_policies
from .common import config_file, error_lines

pytestmark = pytest.mark.anyio


async def test_a_misspelt_upstream_field_is_unknown_with_the_near_name(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "upstreams:\n  a:\n    comand: python\n    args: [x.py]\n  b:\n    command: python\n    timout: 3\n"
    )
    result = await mcp_gateway("check", "--config", str(config))
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: {config}:3: upstreams.a.comand: unknown field (did you mean command?)",
        f"error: {config}:7: upstreams.b.timout: unknown field (did you mean timeout?)",
    ]


async def test_an_unset_env_reference_in_the_gateway_section_names_its_line(tmp_path: Path) -> None:
    config = config_file(tmp_path, {"auth": "none", "admin_token": {"$env": "MCP_GW_TEST_SURELY_UNSET"}})
    result = await mcp_gateway("keys", "list", "--config", str(config))
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: {config}:4: gateway.admin_token: variable MCP_GW_TEST_SURELY_UNSET is not set"
    ]


async def test_a_rule_id_clash_is_reported_with_the_field_errors(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "a.yaml").write_text(
        "teams:\n  t:\n    rules:\n"
        "      - id: r1\n        allow: {servers: [x]}\n"
        "      - id: r1\n        allow: {servers: [x]}\n"
        "      - id: r2\n        allow: {servers: [x], colour: red}\n"
    )
    result = await mcp_gateway("policy", "validate", str(policies))
    assert result.returncode == 2
    path = policies / "a.yaml"
    assert error_lines(result) == [
        f"error: {path}:6: rule id 'r1' is already used in a.yaml:4",
        f"error: {path}:9: teams.t.rules.2.allow.colour: unknown field",
    ]


@pytest.mark.parametrize("command", ["validate", "plan"])
async def test_rules_for_servers_the_config_lacks_are_warned_of(tmp_path: Path, command: str) -> None:
    policies = write_policies(
        tmp_path / "policies",
        {
            "teams": {
                "t": {
                    "rules": [
                        {"id": "files-read", "allow": {"servers": ["files"]}},
                        *ALLOW_ALL["teams"]["local"]["rules"],
                    ]
                }
            }
        },
    )
    config = config_file(tmp_path, {"auth": "none"}, upstreams={"search": {"command": "python"}})
    result = await mcp_gateway("policy", command, str(policies), "--config", str(config))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr.decode().splitlines() == [
        f"warning: rule 'files-read' (team t) names server 'files', which {config} does not configure (it has: search)"
    ]


async def test_a_sqlite_store_in_a_missing_directory_is_an_error_not_created(tmp_path: Path) -> None:
    config = config_file(tmp_path, {"auth": "none", "database_url": "sqlite:///state/gateway.db"})
    result = await mcp_gateway("db", "upgrade", "--config", str(config))
    assert result.returncode == 2
    [line] = error_lines(result)
    assert line.endswith(f"the store's directory {tmp_path / 'state'} does not exist"), line
    assert not (tmp_path / "state").exists()
