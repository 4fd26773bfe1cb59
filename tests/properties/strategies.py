"""Hypothesis strategies: random policies, kill switches and requests over the recording
upstreams' catalog (tests/properties/recording_server.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from mcp_gateway.policy_model import Rule

from .rig import PRINCIPALS, SERVERS, TEAMS

TOOLS = ("read_file", "write_file", "delete_file", "search", "poke")
PROMPTS = ("greet", "summarize", "admin_reset")
RESOURCES = (
    "file:///srv/public/readme.txt",
    "file:///srv/public/notes.txt",
    "file:///srv/secret/keys.txt",
    "test://static/1",
    "test://static/2",
)
TEMPLATE = "test://template/{id}/data"
READABLE = (*RESOURCES, "test://template/7/data", "file:///srv/secret/other.txt", "test://static/%31")

server_globs = st.sampled_from(("alpha", "beta", "*", "al*", "b?ta", "[ab]*", "gamma"))
tool_globs = st.sampled_from((*TOOLS, "*", "read_*", "*_file", "?earch", "[dw]*", "nomatch", "ask"))
prompt_globs = st.sampled_from((*PROMPTS, "*", "admin_*", "*e*", "nomatch"))
resource_globs = st.sampled_from(
    (*RESOURCES, "*", "file:///srv/public/*", "file:///srv/*", "test://static/*", "test://template/*", TEMPLATE)
)
constraints = st.sampled_from(
    (
        {"path": {"pattern": "^/srv/public/"}},
        {"path": {"enum": ["/srv/public/a", "/etc/passwd"]}},
        {"n": {"max": 5, "required": False}},
        {"n": {"min": 1, "max": 9}},
    )
)
arguments = st.sampled_from(
    (
        {},
        {"path": "/srv/public/a"},
        {"path": "/etc/passwd"},
        {"path": "/srv/public/../secret"},
        {"n": 3},
        {"n": 50},
        {"n": True},
        {"path": "/srv/public/a", "n": 7},
    )
)


@st.composite
def rules(draw: Any, team: str, index: int) -> Rule:
    effect = draw(st.sampled_from(("allow", "allow", "allow", "deny")))
    servers = tuple(draw(st.lists(server_globs, min_size=1, max_size=2, unique=True)))
    kinds: dict[str, Any] = {}
    # Most rules name their kinds, so the engine's default for an unnamed kind (which is
    # changing) decides few examples; the oracle is the engine either way.
    if draw(st.integers(0, 9)) > 0:
        named = draw(st.sets(st.sampled_from(("tools", "prompts", "resources")), min_size=1))
        globs = {"tools": tool_globs, "prompts": prompt_globs, "resources": resource_globs}
        for kind in ("tools", "prompts", "resources"):
            # Kinds not named get no pattern at all: the rule covers none of them.
            kinds[kind] = (
                tuple(draw(st.lists(globs[kind], min_size=1, max_size=3, unique=True))) if kind in named else ()
            )
    constrained = effect == "allow" and kinds.get("tools") != () and draw(st.integers(0, 3)) == 0
    return Rule(
        id=f"{team}-{index}",
        team=team,
        effect=effect,
        servers=servers,
        arguments=draw(constraints) if constrained else None,
        shadow=draw(st.integers(0, 9)) == 0,
        position=index,
        **kinds,
    )


@st.composite
def policies(draw: Any) -> list[Rule]:
    out: list[Rule] = []
    for team in TEAMS:
        for index in range(draw(st.integers(0, 4))):
            out.append(draw(rules(team, index + 1)))
    return out


switch = st.one_of(
    st.tuples(st.just("team"), st.sampled_from(TEAMS)),
    st.tuples(st.just("principal"), st.sampled_from([f"{t}/{n}" for t, n in PRINCIPALS])),
    st.tuples(st.just("server"), st.sampled_from(tuple(SERVERS))),
    st.tuples(st.just("tool"), st.sampled_from([f"{s}/{t}" for s in SERVERS for t in (*TOOLS, "ask")])),
)
switches = st.lists(switch, max_size=2, unique=True)

agents = st.integers(0, len(PRINCIPALS) - 1)
servers = st.sampled_from(tuple(SERVERS))
eras = st.sampled_from(("2025-11-25", "2026-07-28"))


def targeted_requests() -> st.SearchStrategy[tuple[Any, ...]]:
    """(agent, era, method, server, name or uri, extra) for the methods that name one target."""
    return st.one_of(
        st.tuples(agents, eras, st.just("tools/call"), servers, st.sampled_from(TOOLS), arguments),
        st.tuples(agents, eras, st.just("prompts/get"), servers, st.sampled_from(PROMPTS), st.just({})),
        st.tuples(agents, eras, st.just("resources/read"), servers, st.sampled_from(READABLE), st.just({})),
        st.tuples(
            agents, eras, st.just("completion/complete"), servers, st.sampled_from(PROMPTS), st.just({"ref": "prompt"})
        ),
        st.tuples(
            agents,
            eras,
            st.just("completion/complete"),
            servers,
            st.sampled_from((*RESOURCES, TEMPLATE)),
            st.just({"ref": "resource"}),
        ),
    )
