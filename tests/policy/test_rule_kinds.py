"""A rule means what it names (issue 11, break 4): a rule that names no kind covers every
kind of its servers; one that names tools, prompts or resources covers only those, for
allow and deny rules alike. Resource rules match a URI in its RFC 3986 normal form,
however the request spelled it (break 5). Pure: `decide` over built states."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_gateway.identity import Principal
from mcp_gateway.policy import PolicyState, Rule, Target, decide
from mcp_gateway.policy.engine import why
from mcp_gateway.policy_model import Kind

NOW = 1_800_000_000.0
ALICE = Principal(id="platform/alice", team="platform", name="alice")
KINDS: tuple[Kind, ...] = ("tool", "prompt", "resource")


def rule(rule_id: str, effect: str, position: int, **match: Any) -> Rule:
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in match.items()}
    return Rule(id=rule_id, team="platform", effect=effect, position=position, **fields)  # type: ignore[arg-type]


def effect(rules: list[Rule], target: Target) -> tuple[str, str | None]:
    decision = decide(PolicyState.build(rules), ALICE, target, NOW)
    return decision.effect, decision.rule_id


@pytest.mark.parametrize("kind", KINDS)
def test_a_rule_that_names_no_kind_covers_every_kind_of_its_servers(kind: Kind) -> None:
    rules = [rule("docs-all", "allow", 1, servers=["docs"])]
    assert effect(rules, Target("docs", kind, "x://anything")) == ("allow", "docs-all")
    assert effect(rules, Target("mail", kind, "x://anything"))[0] == "deny"


@pytest.mark.parametrize(
    ("named", "covered"),
    [
        ({"tools": ["*"]}, {"tool"}),
        ({"prompts": ["*"]}, {"prompt"}),
        ({"resources": ["*"]}, {"resource"}),
        ({"tools": ["*"], "resources": ["*"]}, {"tool", "resource"}),
        ({"prompts": ["*"], "resources": ["*"]}, {"prompt", "resource"}),
    ],
)
def test_an_allow_rule_that_names_kinds_covers_only_those(named: dict[str, list[str]], covered: set[str]) -> None:
    rules = [rule("named", "allow", 1, servers=["docs"], **named)]
    for kind in KINDS:
        assert (effect(rules, Target("docs", kind, "x://a"))[0] == "allow") is (kind in covered), kind


@pytest.mark.parametrize("kind", ["prompt", "resource"])
def test_a_deny_rule_that_names_tools_leaves_prompts_and_resources_alone(kind: Kind) -> None:
    # The README's `no-deletes` rule: until issue 11 it denied every prompt and resource everywhere.
    rules = [
        rule("all", "allow", 1, servers=["*"]),
        rule("no-deletes", "deny", 2, servers=["*"], tools=["delete_*"]),
    ]
    assert effect(rules, Target("files", "tool", "delete_file")) == ("deny", "no-deletes")
    name = "delete_file" if kind == "prompt" else "file:///delete_file"
    assert effect(rules, Target("files", kind, name)) == ("allow", "all")


def test_a_deny_rule_that_names_no_kind_denies_every_kind() -> None:
    rules = [rule("all", "allow", 1, servers=["*"]), rule("not-files", "deny", 2, servers=["files"])]
    for kind in KINDS:
        assert effect(rules, Target("files", kind, "x://a")) == ("deny", "not-files")
        assert effect(rules, Target("search", kind, "x://a")) == ("allow", "all")


def test_why_names_the_server_and_kind_patterns_a_target_met() -> None:
    named = rule("r", "allow", 1, servers=["files", "file*", "db"], tools=["read_*", "*_file", "write"])
    met = why(named, Target("files", "tool", "read_file"))
    assert (met.servers, met.kind_field, met.names) == (("files", "file*"), "tools", ("read_*", "*_file"))
    everything = why(rule("e", "deny", 1, servers=["*"]), Target("files", "resource", "x://a"))
    assert (everything.servers, everything.kind_field, everything.names) == (("*",), None, ())


# -- resources in normal form ------------------------------------------------------------------

SPELLINGS = [
    "test://template/%31/data",
    "TEST://Template/1/data",
    "test://template/2/../1/data",
    "test://template/./1/data",
    "test://TEMPLATE/%31/./data/../data",
]


@pytest.mark.parametrize("uri", SPELLINGS)
def test_a_resource_deny_rule_matches_every_spelling_of_its_uri(uri: str) -> None:
    rules = [
        rule("all", "allow", 1, servers=["*"]),
        rule("not-one", "deny", 2, servers=["x"], resources=["test://template/1/data"]),
    ]
    assert effect(rules, Target("x", "resource", uri)) == ("deny", "not-one")
    assert effect(rules, Target("x", "resource", "test://template/2/data")) == ("allow", "all")


@pytest.mark.parametrize("uri", SPELLINGS)
def test_a_resource_allow_rule_matches_every_spelling_of_its_uri(uri: str) -> None:
    rules = [rule("only-one", "allow", 1, servers=["x"], resources=["test://template/1/data"])]
    assert effect(rules, Target("x", "resource", uri)) == ("allow", "only-one")


@pytest.mark.parametrize(
    "uri", ["test://template/1%2Fdata", "test://template/%2e%2e/1/data", "test://t/a%zz", "test://t/\x00", "no-scheme"]
)
def test_an_ambiguous_resource_uri_is_denied_even_where_everything_is_allowed(uri: str) -> None:
    decision = decide(
        PolicyState.build([rule("all", "allow", 1, servers=["*"])]), ALICE, Target("x", "resource", uri), NOW
    )
    assert decision.effect == "deny"
    assert decision.reason.startswith("ambiguous resource URI: ")


# -- the engine agrees with a reading of the rules written from the README -------------------

NAMES = st.sampled_from(["a", "b", "ab", "x://a", "x://b"])
GLOBS = st.sampled_from(["a", "b", "a*", "*", "x://*", "x://a", "?"])


@st.composite
def rules(draw: st.DrawFn) -> list[Rule]:
    out = []
    for position in range(draw(st.integers(0, 6))):
        kinds = {
            field: tuple(draw(st.lists(GLOBS, min_size=1, max_size=2)))
            for field in ("tools", "prompts", "resources")
            if draw(st.booleans())
        }
        servers = tuple(draw(st.lists(st.sampled_from(["s1", "s2", "s*", "*"]), min_size=1, max_size=2)))
        out.append(
            Rule(
                id=f"r{position}",
                team="platform",
                effect=draw(st.sampled_from(["allow", "deny"])),
                servers=servers,
                position=position,
                **kinds,  # type: ignore[arg-type]
            )
        )
    return out


def reference(rules: list[Rule], target: Target) -> str:
    """Deny rules first, then allow rules; a rule covers a kind it names, or all if it names none."""

    def covers(r: Rule) -> bool:
        if not any(fnmatchcase(target.server, s) for s in r.servers):
            return False
        named = {"tool": r.tools, "prompt": r.prompts, "resource": r.resources}
        if all(v is None for v in named.values()):
            return True
        patterns = named[target.kind]
        return patterns is not None and any(fnmatchcase(target.name, p) for p in patterns)

    if any(covers(r) for r in rules if r.effect == "deny"):
        return "deny"
    return "allow" if any(covers(r) for r in rules if r.effect == "allow") else "deny"


@settings(max_examples=300, deadline=None)
@given(rules(), st.sampled_from(["s1", "s2", "t"]), st.sampled_from(KINDS), NAMES)
def test_decide_agrees_with_the_documented_reading_of_the_rules(
    rules: list[Rule], server: str, kind: Kind, name: str
) -> None:
    target = Target(server, kind, name)
    if kind == "resource" and "://" not in name:
        name = f"x://{name}"
        target = Target(server, kind, name)
    assert decide(PolicyState.build(rules), ALICE, target, NOW).effect == reference(rules, target)
