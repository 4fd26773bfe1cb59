"""The pure decision function: rules and kill switches in, a decision with its reason out.
No I/O: every test builds a `PolicyState` and asks `decide`."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_gateway.identity import Principal
from mcp_gateway.policy import Decision, KillSwitch, PolicyState, Rule, Target, decide
from mcp_gateway.policy.engine import TeamRules
from mcp_gateway.policy_model import Scope

NOW = 1_800_000_000.0
ALICE = Principal(id="platform/alice", team="platform", name="alice")
BOB = Principal(id="platform/bob", team="platform", name="bob")
EVE = Principal(id="data/eve", team="data", name="eve")


def tool(server: str, name: str) -> Target:
    return Target(server, "tool", name)


def allow(rule_id: str, position: int, team: str = "platform", **match: Any) -> Rule:
    return Rule(id=rule_id, team=team, effect="allow", position=position, **_match(match))


def deny(rule_id: str, position: int, team: str = "platform", **match: Any) -> Rule:
    return Rule(id=rule_id, team=team, effect="deny", position=position, **_match(match))


def _match(match: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in match.items()}


def verdict(rules: list[Rule], target: Target, *, principal: Principal = ALICE, **kwargs: Any) -> Decision:
    return decide(PolicyState.build(rules, policy_version=7), principal, target, NOW, **kwargs)


# -- order -----------------------------------------------------------------------------------


def test_a_deny_rule_wins_over_an_allow_rule_placed_before_it() -> None:
    rules = [allow("read-all", 1, servers=["files"]), deny("no-delete", 2, servers=["files"], tools=["delete_*"])]
    denied = verdict(rules, tool("files", "delete_file"))
    assert (denied.effect, denied.rule_id, denied.reason) == ("deny", "no-delete", "denied by rule no-delete")
    assert denied.policy_version == 7
    allowed = verdict(rules, tool("files", "read_file"))
    assert (allowed.effect, allowed.rule_id) == ("allow", "read-all")


def test_the_first_matching_allow_rule_by_position_decides() -> None:
    # Given out of order: the position, not the list order, says which comes first.
    rules = [
        allow("second", 2, servers=["files"]),
        allow("third", 3, servers=["*"]),
        allow("first", 1, servers=["files"], tools=["read_*"]),
    ]
    assert verdict(rules, tool("files", "read_file")).rule_id == "first"
    assert verdict(rules, tool("files", "write_file")).rule_id == "second"
    assert verdict(rules, tool("search", "query")).rule_id == "third"


def test_nothing_allowed_is_denied_by_default_deny() -> None:
    decision = verdict([allow("files-only", 1, servers=["files"])], tool("search", "query"))
    assert (decision.effect, decision.rule_id, decision.reason) == ("deny", "default-deny", "no rule allows this")


def test_a_team_with_no_rules_is_denied_everything() -> None:
    decision = verdict([allow("platform-all", 1, servers=["*"])], tool("files", "read_file"), principal=EVE)
    assert (decision.effect, decision.rule_id) == ("deny", "default-deny")
    assert decision.reason == "no policy grants this team anything"


def test_rules_of_one_team_do_not_reach_another() -> None:
    rules = [allow("data-search", 1, team="data", servers=["search"]), allow("platform-files", 1, servers=["files"])]
    assert verdict(rules, tool("search", "q"), principal=EVE).allowed
    assert not verdict(rules, tool("files", "read_file"), principal=EVE).allowed
    assert not verdict(rules, tool("search", "q"), principal=ALICE).allowed


# -- globs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        (tool("files-eu", "read_file"), True),
        (tool("files-us", "read_dir"), True),
        (tool("files-eu", "write_file"), False),
        (tool("files", "read_file"), False),  # "files-*" needs the dash
        (tool("db1", "get"), True),
        (tool("db12", "get"), False),  # "db?" is one character
        (tool("cache-a", "get"), True),
        (tool("cache-c", "get"), False),  # "[ab]" is a class
    ],
)
def test_server_and_tool_globs(target: Target, allowed: bool) -> None:
    rules = [
        allow("files", 1, servers=["files-*"], tools=["read_*"]),
        allow("db", 2, servers=["db?"], tools=["get"]),
        allow("cache", 3, servers=["cache-[ab]"], tools=["*"]),
    ]
    assert verdict(rules, target).allowed is allowed


def test_prompt_and_resource_globs_apply_to_their_own_kind_only() -> None:
    rules = [
        allow("greetings", 1, servers=["docs"], tools=["none"], prompts=["greet_*"], resources=["none"]),
        allow("public", 2, servers=["docs"], tools=["none"], prompts=["none"], resources=["file:///srv/public/*"]),
    ]
    assert verdict(rules, Target("docs", "prompt", "greet_user")).rule_id == "greetings"
    assert not verdict(rules, Target("docs", "prompt", "summarise")).allowed
    assert verdict(rules, Target("docs", "resource", "file:///srv/public/readme.md")).rule_id == "public"
    assert not verdict(rules, Target("docs", "resource", "file:///etc/passwd")).allowed
    # A tool with a prompt's name is not a prompt.
    assert not verdict(rules, tool("docs", "greet_user")).allowed


def test_a_rule_that_names_tools_covers_no_prompts_or_resources() -> None:
    # Until issue 11 an unnamed kind defaulted to "*": this rule granted every prompt and resource.
    rules = [allow("docs-read", 1, servers=["docs"], tools=["read_*"])]
    assert verdict(rules, tool("docs", "read_me")).allowed
    assert not verdict(rules, Target("docs", "prompt", "anything")).allowed
    assert not verdict(rules, Target("docs", "resource", "file:///x")).allowed
    assert not verdict(rules, tool("docs", "write")).allowed


# -- argument constraints --------------------------------------------------------------------

CONSTRAINED = [
    allow(
        "files-public",
        1,
        servers=["files"],
        tools=["read_file"],
        arguments={"path": {"pattern": "^/srv/public/"}, "encoding": {"enum": ["utf-8", "ascii"], "required": False}},
    ),
    allow("slow-bounded", 2, servers=["clock"], tools=["sleep"], arguments={"seconds": {"min": 1, "max": 60}}),
]


@pytest.mark.parametrize(
    ("target", "arguments", "reason"),
    [
        (tool("files", "read_file"), {"path": "/etc/passwd"}, "argument 'path' must match '^/srv/public/'"),
        (tool("files", "read_file"), {"path": 42}, "argument 'path' must match '^/srv/public/'"),
        (tool("files", "read_file"), {}, "argument 'path' is required by policy"),
        (
            tool("files", "read_file"),
            {"path": "/srv/public/a", "encoding": "latin-1"},
            "argument 'encoding' must be one of ['utf-8', 'ascii']",
        ),
        (tool("clock", "sleep"), {"seconds": 600}, "argument 'seconds' must be at most 60"),
        (tool("clock", "sleep"), {"seconds": 0}, "argument 'seconds' must be at least 1"),
        (tool("clock", "sleep"), {"seconds": "10"}, "argument 'seconds' must be a number"),
        (tool("clock", "sleep"), {"seconds": True}, "argument 'seconds' must be a number"),
    ],
)
def test_a_call_breaking_a_constraint_is_denied_naming_the_rule_and_constraint(
    target: Target, arguments: dict[str, Any], reason: str
) -> None:
    decision = verdict(CONSTRAINED, target, arguments=arguments)
    rule = "files-public" if target.server == "files" else "slow-bounded"
    assert (decision.effect, decision.rule_id) == ("deny", rule)
    assert decision.reason == f"arguments not allowed by rule {rule}: {reason}"


@pytest.mark.parametrize(
    ("target", "arguments"),
    [
        (tool("files", "read_file"), {"path": "/srv/public/readme.md"}),
        (tool("files", "read_file"), {"path": "/srv/public/a", "encoding": "ascii"}),
        (tool("clock", "sleep"), {"seconds": 1}),
        (tool("clock", "sleep"), {"seconds": 60.0}),
    ],
)
def test_a_call_satisfying_the_constraints_is_allowed(target: Target, arguments: dict[str, Any]) -> None:
    assert verdict(CONSTRAINED, target, arguments=arguments).allowed


@pytest.mark.parametrize(
    ("allowed", "value"),
    [([True], 1), ([True], 1.0), ([1], True), ([0], False), ([1.5], "1.5"), (["1"], 1)],
)
def test_an_enum_compares_json_values_not_python_truthiness(allowed: list[Any], value: Any) -> None:
    # JSON's true is not the number 1 (min/max already refuse booleans as numbers).
    rules = [allow("dry-run-only", 1, servers=["db"], arguments={"dry_run": {"enum": allowed}})]
    decision = verdict(rules, tool("db", "migrate"), arguments={"dry_run": value})
    assert decision.effect == "deny", f"{value!r} passed enum {allowed!r}"
    assert decision.reason == f"arguments not allowed by rule dry-run-only: argument 'dry_run' must be one of {allowed}"
    assert verdict(rules, tool("db", "migrate"), arguments={"dry_run": allowed[0]}).allowed


def test_a_pattern_is_searched_not_anchored() -> None:
    rules = [allow("has-report", 1, servers=["files"], arguments={"path": {"pattern": "report"}})]
    assert verdict(rules, tool("files", "read"), arguments={"path": "/x/annual-report.pdf"}).allowed
    assert not verdict(rules, tool("files", "read"), arguments={"path": "/x/summary.pdf"}).allowed


def test_a_constrained_rule_covers_only_matching_calls_and_others_fall_through() -> None:
    rules = [
        allow(
            "public-anyone", 1, servers=["files"], tools=["read_file"], arguments={"path": {"pattern": "^/srv/public/"}}
        ),
        allow(
            "home-alice", 2, servers=["files"], tools=["read_file"], arguments={"path": {"pattern": "^/home/alice/"}}
        ),
    ]
    assert verdict(rules, tool("files", "read_file"), arguments={"path": "/srv/public/a"}).rule_id == "public-anyone"
    assert verdict(rules, tool("files", "read_file"), arguments={"path": "/home/alice/b"}).rule_id == "home-alice"
    denied = verdict(rules, tool("files", "read_file"), arguments={"path": "/root/c"})
    # The first constrained rule that refused is the one named.
    assert (denied.effect, denied.rule_id) == ("deny", "public-anyone")
    broad = [*rules, allow("files-all", 3, servers=["files"])]
    assert verdict(broad, tool("files", "read_file"), arguments={"path": "/root/c"}).rule_id == "files-all"


def test_listings_are_not_filtered_by_argument_constraints() -> None:
    # A listing has no arguments: the tool is shown, and only calls are checked.
    listed = verdict(CONSTRAINED, tool("files", "read_file"), arguments=None)
    assert (listed.effect, listed.rule_id) == ("allow", "files-public")
    assert not verdict(CONSTRAINED, tool("files", "read_file"), arguments={"path": "/etc"}).allowed


# -- kill switches and staleness -------------------------------------------------------------


def switch(scope: Scope, target: str = "", expires_at: float | None = None) -> KillSwitch:
    return KillSwitch(
        id=f"ks_{scope}", scope=scope, target=target, reason="incident 7", actor="ops", created_at=NOW - 60,
        expires_at=expires_at,
    )  # fmt: skip


EVERYTHING = [allow("platform-all", 1, servers=["*"]), allow("data-all", 1, team="data", servers=["*"])]
SWITCHES = {
    "global": switch("global"),
    "team": switch("team", "platform"),
    "principal": switch("principal", "platform/alice"),
    "server": switch("server", "files"),
    "tool": switch("tool", "files/delete_file"),
}
# (principal, target) -> which scopes stop it
CASES = [
    (ALICE, tool("files", "delete_file"), {"global", "team", "principal", "server", "tool"}),
    (ALICE, tool("files", "read_file"), {"global", "team", "principal", "server"}),
    (ALICE, tool("search", "query"), {"global", "team", "principal"}),
    (BOB, tool("search", "query"), {"global", "team"}),
    (EVE, tool("files", "delete_file"), {"global", "server", "tool"}),
    (EVE, tool("search", "query"), {"global"}),
    (EVE, Target("files", "prompt", "delete_file"), {"global", "server"}),
]


@pytest.mark.parametrize("scope", list(SWITCHES))
def test_a_kill_switch_stops_exactly_the_calls_in_its_scope(scope: str) -> None:
    state = PolicyState.build(EVERYTHING, [SWITCHES[scope]], policy_version=3)
    for principal, target, stopped_by in CASES:
        decision = decide(state, principal, target, NOW)
        if scope in stopped_by:
            assert decision.effect == "deny", (principal, target)
            assert decision.kill_switch_id == f"ks_{scope}"
            assert decision.reason == f"kill switch ({scope}) engaged by ops: incident 7"
            assert decision.rule_id is None and decision.policy_version == 3
        else:
            assert decision.allowed, (principal, target)
            assert decision.kill_switch_id is None


def test_a_kill_switch_lifts_at_its_expiry() -> None:
    state = PolicyState.build(EVERYTHING, [switch("global", expires_at=NOW + 10)])
    assert decide(state, ALICE, tool("files", "read_file"), NOW + 9.9).kill_switch_id == "ks_global"
    assert decide(state, ALICE, tool("files", "read_file"), NOW + 10).allowed
    assert decide(state, ALICE, tool("files", "read_file"), NOW + 3600).allowed


def test_a_kill_switch_beats_an_allow_rule_and_a_deny_rule() -> None:
    rules = [*EVERYTHING, deny("no-files", 2, servers=["files"])]
    decision = decide(PolicyState.build(rules, [switch("server", "files")]), ALICE, tool("files", "x"), NOW)
    assert decision.kill_switch_id == "ks_server" and decision.rule_id is None


def test_a_stale_snapshot_denies_everything() -> None:
    decision = decide(PolicyState.build(EVERYTHING), ALICE, tool("files", "read_file"), NOW, stale=True)
    assert decision.effect == "deny" and decision.rule_id is None and decision.kill_switch_id is None
    assert decision.reason == "the policy snapshot is stale: the store cannot be reached"


def test_a_stale_snapshot_still_reports_an_engaged_kill_switch_first() -> None:
    state = PolicyState.build(EVERYTHING, [switch("server", "files")])
    decision = decide(state, ALICE, tool("files", "read_file"), NOW, stale=True)
    assert decision.effect == "deny" and decision.kill_switch_id == "ks_server"
    assert decision.reason.startswith("kill switch (server)")
    other = decide(state, ALICE, tool("search", "query"), NOW, stale=True)
    assert other.kill_switch_id is None and "stale" in other.reason


# -- shadow rules ----------------------------------------------------------------------------


def test_a_shadow_deny_lets_the_call_through_and_reports_would_deny() -> None:
    rules = [
        allow("files-all", 1, servers=["files"]),
        Rule("no-write", "platform", "deny", ("files",), ("write_*",), shadow=True),
    ]
    decision = verdict(rules, tool("files", "write_file"))
    assert (decision.effect, decision.rule_id) == ("allow", "files-all")
    assert (decision.shadow, decision.shadow_rule_id) == ("would_deny", "no-write")
    agreed = verdict(rules, tool("files", "read_file"))
    assert agreed.allowed and agreed.shadow is None and agreed.shadow_rule_id is None


def test_a_shadow_allow_keeps_the_call_denied_and_reports_would_allow() -> None:
    rules = [
        allow("files-all", 1, servers=["files"]),
        Rule("try-search", "platform", "allow", ("search",), shadow=True),
    ]
    decision = verdict(rules, tool("search", "query"))
    assert (decision.effect, decision.rule_id) == ("deny", "default-deny")
    assert (decision.shadow, decision.shadow_rule_id) == ("would_allow", "try-search")


def test_without_shadow_rules_there_is_no_shadow_verdict() -> None:
    decision = verdict([allow("files-all", 1, servers=["files"])], tool("search", "query"))
    assert decision.shadow is None and decision.shadow_rule_id is None


# -- scale -----------------------------------------------------------------------------------


def test_a_team_of_ten_thousand_rules_decides_correctly() -> None:
    rules: list[Rule] = []
    for i in range(10_000):
        if i % 2:
            rules.append(allow(f"r{i}", i + 1, servers=[f"srv{i}"], tools=[f"tool{i}", "common_*"]))
        else:
            rules.append(allow(f"r{i}", i + 1, servers=[f"srv{i}*"], tools=[f"tool{i}"]))
    rules.append(deny("no-danger", 10_001, servers=["srv7777"], tools=["danger"]))
    state = PolicyState.build(rules, policy_version=1)
    for i in (0, 1, 2, 4999, 5000, 9998, 9999):
        assert decide(state, ALICE, tool(f"srv{i}", f"tool{i}"), NOW).rule_id == f"r{i}"
    assert decide(state, ALICE, tool("srv7777", "common_x"), NOW).rule_id == "r7777"
    assert decide(state, ALICE, tool("srv7777", "danger"), NOW).rule_id == "no-danger"
    # srv100 also matches r10's "srv10*", whose tool differs; srv1000x only r10's and r1000's globs.
    assert decide(state, ALICE, tool("srv100", "tool100"), NOW).rule_id == "r100"
    assert decide(state, ALICE, tool("srv1000x", "tool10"), NOW).rule_id == "r10"
    assert decide(state, ALICE, tool("srv3", "tool4"), NOW).rule_id == "default-deny"
    assert decide(state, ALICE, tool("srv9999", "tool9998"), NOW).rule_id == "default-deny"
    assert decide(state, ALICE, tool("nowhere", "tool1"), NOW).rule_id == "default-deny"
    assert decide(state, EVE, tool("srv1", "tool1"), NOW).rule_id == "default-deny"


def test_the_memo_of_verdicts_stays_bounded_whatever_names_callers_make_up() -> None:
    # A denied caller chooses its names: a made-up URI a megabyte long, or endlessly many.
    rules = TeamRules([Rule(id="files", team="t", effect="allow", servers=("files",), tools=("read_*",))])
    for i in range(50):
        assert rules.matching(Target("files", "resource", f"file:///{i}/" + "a" * 1_000_000)) == ()
    assert len(rules._memo) == 0
    for i in range(20_000):
        rules.matching(Target("files", "tool", f"read_{i}"))
    assert len(rules._memo) <= 16_384
    assert rules.matching(Target("files", "tool", "read_19999"))[0].id == "files"
