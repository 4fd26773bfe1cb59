"""Loading a directory of policy files: every problem at once with its file and line,
rule ids unique across the bundle, team names checked, test cases of the right shape."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from mcp_gateway.errors import ConfigError
from mcp_gateway.policy import bundle as policy_bundle


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(dedent(text))
    return path


def problems(directory: Path) -> list[tuple[str, int | None, str]]:
    """(file name, line, message) of each problem; fails the test if the bundle loads."""
    with pytest.raises(ConfigError) as caught:
        policy_bundle.load(directory)
    return [(Path(p.file).name, p.line, p.message) for p in caught.value.problems]


def test_rules_become_ordered_rules_with_default_ids_and_file_level_shadow(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """\
        teams:
          platform:
            description: Platform agents
            rules:
              - allow: {servers: [files], tools: ["read_*"]}
              - id: no-delete
                deny: {servers: ["*"], tools: ["delete_*"]}
        """,
    )
    write(
        tmp_path,
        "b.yml",
        """\
        shadow: true
        teams:
          platform:
            rules:
              - allow:
                  servers: [search]
                  arguments: {limit: {max: 10, required: false}}
        """,
    )
    bundle = policy_bundle.load(tmp_path)
    assert [(r.id, r.position, r.effect, r.shadow) for r in bundle.rules] == [
        ("platform-1", 1, "allow", False),
        ("no-delete", 2, "deny", False),
        ("platform-3", 3, "allow", True),
    ]
    # Kinds a rule leaves out are not named (None), not "*": the rule covers tools only.
    assert bundle.rules[0].tools == ("read_*",) and bundle.rules[0].prompts is None
    assert bundle.rules[2].arguments == {"limit": {"max": 10, "required": False}}
    assert bundle.teams == {"platform": "Platform agents"}
    assert [Path(f).name for f in bundle.files] == ["a.yaml", "b.yml"]


def test_the_content_hash_follows_the_content(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "teams: {platform: {rules: [{allow: {servers: [x]}}]}}\n")
    first = policy_bundle.load(tmp_path).content_hash
    assert policy_bundle.load(tmp_path).content_hash == first
    path.write_text("teams: {platform: {rules: [{allow: {servers: [y]}}]}}\n")
    assert policy_bundle.load(tmp_path).content_hash != first


def test_a_rule_id_used_in_two_files_is_refused_naming_both(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """\
        teams:
          platform:
            rules:
              - id: shared
                allow: {servers: [x]}
        """,
    )
    write(
        tmp_path,
        "b.yaml",
        """\
        teams:
          data:
            rules:
              - allow: {servers: [y]}
              - id: shared
                allow: {servers: [z]}
        """,
    )
    assert problems(tmp_path) == [("b.yaml", 5, "rule id 'shared' is already used in a.yaml:4")]


def test_a_bad_team_name_is_refused_at_its_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """\
        teams:
          ok-team:
            rules: []
          Platform Team:
            rules: []
        """,
    )
    assert problems(tmp_path) == [("a.yaml", 4, "teams.Platform Team: lowercase letters, digits, '_' and '-'")]


def test_a_team_described_in_two_files_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "teams:\n  platform:\n    description: one\n")
    write(tmp_path, "b.yaml", "teams:\n  platform:\n    description: two\n")
    assert problems(tmp_path) == [("b.yaml", 2, "teams.platform: described in more than one file")]


@pytest.mark.parametrize(
    ("case", "line", "message"),
    [
        (
            "  - {principal: platform/bot, team: platform, call: x__y, expect: allow}\n",
            3,
            "tests.0: Value error, a test names exactly one of `principal` or `team`",
        ),
        (
            "  - {team: platform, expect: allow}\n",
            3,
            "tests.0: Value error, a test names exactly one of `call`, `prompt` or `resource`",
        ),
        (
            "  - {team: platform, call: x__y, prompt: x__p, expect: deny}\n",
            3,
            "tests.0: Value error, a test names exactly one of `call`, `prompt` or `resource`",
        ),
        ("  - {team: platform, call: x__y, expect: maybe}\n", 3, "tests.0.expect: Input should be 'allow' or 'deny'"),
        ("  - {team: platform, call: x__y}\n", 3, "tests.0.expect: Field required"),
        ("  - {team: platform, call: x__y, expect: allow, args: {}}\n", 3, "tests.0.args: unknown field"),
    ],
)
def test_a_malformed_test_case_is_refused_at_its_line(tmp_path: Path, case: str, line: int, message: str) -> None:
    write(tmp_path, "a.yaml", "teams: {platform: {rules: []}}\ntests:\n" + case)
    assert problems(tmp_path) == [("a.yaml", line, message)]


def test_tests_must_be_a_list(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "tests:\n  team: platform\n  call: x__y\n  expect: allow\n")
    [(name, line, message)] = problems(tmp_path)
    assert (name, line) == ("a.yaml", 1)
    assert message.startswith("tests: Input should be a valid list")


def test_test_cases_keep_their_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """\
        teams: {platform: {rules: [{allow: {servers: [x]}}]}}
        tests:
          - {team: platform, call: x__y, expect: allow}
          - principal: platform/bot
            resource: x+file:///a
            expect: deny
        """,
    )
    tests = policy_bundle.load(tmp_path).tests
    assert [(Path(t.file).name, t.line, t.doc.expect) for t in tests] == [("a.yaml", 3, "allow"), ("a.yaml", 4, "deny")]


def test_argument_constraints_on_a_deny_rule_are_refused(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """\
        teams:
          platform:
            rules:
              - deny:
                  servers: [x]
                  arguments: {path: {pattern: "^/etc"}}
        """,
    )
    assert problems(tmp_path) == [
        ("a.yaml", 4, "teams.platform.rules.0: Value error, `arguments` constraints belong on allow rules")
    ]


def test_an_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a policy file")
    assert problems(tmp_path) == [(tmp_path.name, None, "no policy files (*.yaml) here")]
    assert problems(tmp_path / "missing") == [("missing", None, "not a directory of policy files")]
