"""`policy validate`, `policy test` and `policy schema`: the commands that need no store,
run as real subprocesses (a pre-commit hook or the policy repository's CI runs them so)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import jsonschema
import pytest
import yaml

from .cli import EXAMPLE_BUNDLE, run_cli, write

pytestmark = pytest.mark.anyio

GOOD = """\
teams:
  platform:
    description: Platform agents
    rules:
      - id: platform-read
        allow: {servers: [files], tools: ["read_*"]}
      - id: no-delete
        deny: {servers: ["*"], tools: ["delete_*"]}
        shadow: true
tests:
  - principal: platform/ci-bot
    call: files__read_file
    expect: allow
"""


async def test_validate_reports_a_good_bundle(tmp_path: Path) -> None:
    write(tmp_path, "platform.yaml", GOOD)
    result = await run_cli("policy", "validate", tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        r"ok: 2 rule\(s\) \(1 shadow\) for 1 team\(s\), 1 test\(s\), in 1 file\(s\); content [0-9a-f]{12}\n",
        result.stdout,
    )


async def test_validate_reports_every_error_in_every_file_with_its_line(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    syntax = write(
        tmp_path,
        "syntax.yaml",
        """\
        teams:
          alpha:
            rules:
              - id: a1
                allow: {servers: [x]
        """,
    )
    unknown = write(
        tmp_path,
        "unknown.yaml",
        """\
        teams:
          beta:
            rules:
              - id: b1
                allow:
                  servers: [x]
                  tool: [echo]
        """,
    )
    rules = write(
        tmp_path,
        "rules.yaml",
        """\
        teams:
          gamma:
            rules:
              - id: both
                allow: {servers: [x]}
                deny: {servers: [y]}
              - id: bad-regex
                allow:
                  servers: [x]
                  arguments:
                    path: {pattern: "(unclosed"}
        """,
    )
    result = await run_cli("policy", "validate", tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    errors = result.stderr.splitlines()
    assert errors == [
        f"error: {rules}:4: teams.gamma.rules.0: Value error, a rule has exactly one of `allow` or `deny`",
        f"error: {rules}:11: teams.gamma.rules.1.allow.arguments.path.pattern: Value error, "
        "invalid regular expression: missing ), unterminated subpattern at position 0",
        f"error: {syntax}:5: invalid YAML: expected ',' or '}}', but got '<stream end>'",
        f"error: {unknown}:7: teams.beta.rules.0.allow.tool: unknown field",
    ]


async def test_validate_accepts_the_example_bundle() -> None:
    result = await run_cli("policy", "validate", EXAMPLE_BUNDLE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 4 rule(s) (0 shadow) for 1 team(s), 9 test(s), in 1 file(s)")


async def test_the_example_bundles_tests_pass() -> None:
    result = await run_cli("policy", "test", EXAMPLE_BUNDLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert result.stdout.rstrip().endswith("9 passed, 0 failed")


async def test_a_mismatching_case_fails_naming_its_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "platform.yaml",
        GOOD
        + """\
  - name: deletes are only shadow-denied
    team: platform
    call: files__delete_file
    expect: allow
  - team: platform
    call: search__query
    expect: allow
  - team: platform
    call: files__read_file
    arguments: {path: /etc/passwd}
    expect: deny
""",
    )
    result = await run_cli("policy", "test", tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "pass platform/ci-bot -> files__read_file: allow (allowed by rule platform-read)" in lines
    # The shadow deny is not enforced, so the read_* rule does not cover delete_file: default deny.
    assert f"FAIL {path}:14: deletes are only shadow-denied: expected allow, got deny (no rule allows this)" in lines
    assert f"FAIL {path}:18: platform/* -> search__query: expected allow, got deny (no rule allows this)" in lines
    assert (
        f"FAIL {path}:21: platform/* -> files__read_file: expected deny, got allow (allowed by rule platform-read)"
        in lines
    )
    assert lines[-1] == "1 passed, 3 failed"


async def test_a_case_with_a_malformed_call_fails_naming_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        "teams: {platform: {rules: []}}\ntests:\n  - {team: platform, call: nounderscores, expect: deny}\n",
    )
    result = await run_cli("policy", "test", tmp_path)
    assert result.returncode == 1
    assert f"FAIL {path}:3: 'nounderscores' is not of the form SERVER__TOOL" in result.stdout.splitlines()


async def test_policy_test_refuses_an_invalid_bundle(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "teams:\n  platform:\n    rulez: []\n")
    result = await run_cli("policy", "test", tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {path}:3: teams.platform.rulez: unknown field"]


async def _schema() -> dict[str, object]:
    result = await run_cli("policy", "schema")
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


async def test_the_schema_is_a_valid_json_schema_the_example_bundle_satisfies() -> None:
    schema = await _schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    files = sorted(EXAMPLE_BUNDLE.glob("*.y*ml"))
    assert files
    for path in files:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert errors == [], (path, [e.message for e in errors])
    assert list(validator.iter_errors(yaml.safe_load(GOOD))) == []


def _messages(errors: Iterable[jsonschema.ValidationError]) -> list[str]:
    """Every message, nested ones too: under anyOf (`allow: Match | null`) the reason is in `context`."""
    return [m for error in errors for m in (error.message, *_messages(error.context))]


@pytest.mark.parametrize(
    "document",
    [
        {"teams": {"platform": {"rules": []}}, "tset": []},
        {"teams": {"platform": {"rulez": []}}},
        {"teams": {"platform": {"rules": [{"allow": {"servers": ["x"], "tool": ["y"]}}]}}},
        {"teams": {"platform": {"rules": [{"allow": {"servers": ["x"], "arguments": {"a": {"regex": "x"}}}}]}}},
        {"tests": [{"team": "platform", "call": "x__y", "expect": "allow", "args": {}}]},
    ],
)
async def test_the_schema_refuses_an_unknown_key(document: dict[str, object]) -> None:
    validator = jsonschema.Draft202012Validator(await _schema())
    errors = list(validator.iter_errors(document))
    assert errors
    messages = _messages(errors)
    assert any("Additional properties are not allowed" in m for m in messages), messages


async def test_a_copy_of_the_example_bundle_validates_where_it_is_copied(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(EXAMPLE_BUNDLE, copy)
    assert (await run_cli("policy", "validate", copy)).returncode == 0
    (copy / "local.yaml").write_text((copy / "local.yaml").read_text().replace("expect: deny", "expect: maybe", 1))
    broken = await run_cli("policy", "validate", copy)
    assert broken.returncode == 2
    assert re.search(rf"^error: {re.escape(str(copy / 'local.yaml'))}:\d+: tests\.2\.expect: ", broken.stderr, re.M)
