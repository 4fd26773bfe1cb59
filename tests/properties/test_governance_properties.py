"""Property tests: random policies x random principals x every MCP method, on both
protocol revisions, against a real gateway in front of recording upstreams.

Invariants (DESIGN.md, "Invariants every path keeps"):
  (a) what reaches an upstream is exactly what `decide()` allows: nothing denied is
      forwarded, everything allowed is, and listings hold exactly the allowed entries;
  (b) every authenticated request that names a target has its decision row in the audit.

Examples per test: 15 by default; `MCP_GATEWAY_HYPOTHESIS_PROFILE=long` runs 400 (and
`=smoke`, 3). The oracle is the engine's pure `decide()` on the example's rules;
`test_oracle_agrees_with_hand_checked_verdicts` keeps the oracle itself honest.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mcp_gateway.identity import Principal
from mcp_gateway.policy.engine import PolicyState, decide
from mcp_gateway.policy_model import KillSwitch, Rule, Target

from . import strategies as s
from .rig import DENIED, HANDSHAKE, MODERN, SERVERS, Agent, Rig, running_rig

pytestmark = pytest.mark.anyio

# CI draws the same examples on every run (derandomize): a failure there is reproducible,
# never a flake; the long profile explores afresh each time.
settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "smoke", parent=settings.get_profile("ci"), max_examples=3, phases=[Phase.explicit, Phase.generate]
)
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=400, derandomize=False)
PROFILE = settings.get_profile(os.environ.get("MCP_GATEWAY_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    async with running_rig(tmp_path_factory.mktemp("props")) as made:
        yield made


def exposed(server: str, name: str) -> str:
    return f"{server}__{name}"


def exposed_uri(server: str, uri: str) -> str:
    return f"{server}+{uri}"


def target_of(method: str, server: str, name: str, extra: dict[str, Any]) -> Target:
    if method == "tools/call":
        return Target(server, "tool", name)
    if method == "prompts/get" or (method == "completion/complete" and extra.get("ref") == "prompt"):
        return Target(server, "prompt", name)
    return Target(server, "resource", name)


def request_params(method: str, server: str, name: str, extra: dict[str, Any]) -> dict[str, Any]:
    if method == "tools/call":
        return {"name": exposed(server, name), "arguments": extra}
    if method == "prompts/get":
        return {"name": exposed(server, name), "arguments": {}}
    if method == "resources/read":
        return {"uri": exposed_uri(server, name)}
    if extra.get("ref") == "prompt":
        ref = {"type": "ref/prompt", "name": exposed(server, name)}
    else:
        ref = {"type": "ref/resource", "uri": exposed_uri(server, name)}
    return {"ref": ref, "argument": {"name": "topic", "value": "a"}}


def upstream_saw(received: list[dict[str, Any]], method: str, name: str) -> list[dict[str, Any]]:
    key = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}.get(method)
    out = []
    for message in received:
        if message.get("method") != method:
            continue
        params = message.get("params") or {}
        if key is not None and params.get(key) != name:
            continue
        if method == "completion/complete" and name not in (params.get("ref") or {}).values():
            continue
        out.append(message)
    return out


def has_row(rows: list[dict[str, Any]], agent: Agent, target: Target, methods: tuple[str, ...], effect: str) -> bool:
    return any(
        r["kind"] == "decision"
        and r["principal_id"] == agent.principal.id
        and r["server"] == target.server
        and r["tool"] == target.name
        and r["method"] in methods
        and r["decision"] == effect
        for r in rows
    )


# -- the oracle, checked by hand ---------------------------------------------------------------


def test_oracle_agrees_with_hand_checked_verdicts() -> None:
    red = Principal(id="red/ann", team="red", name="ann", kind="agent")
    rules = [
        Rule(id="r1", team="red", effect="allow", servers=("al*",), tools=("read_*",), prompts=(), resources=()),
        Rule(
            id="r2",
            team="red",
            effect="allow",
            servers=("beta",),
            tools=("search",),
            prompts=(),
            resources=(),
            arguments={"path": {"pattern": "^/srv/public/"}},
            position=2,
        ),
        Rule(
            id="r3",
            team="red",
            effect="deny",
            servers=("*",),
            tools=(),
            prompts=(),
            resources=("file:///srv/secret/*",),
        ),
        Rule(id="r4", team="red", effect="allow", servers=("beta",), tools=(), prompts=("greet",), resources=("*",)),
    ]
    state = PolicyState.build(rules)

    def verdict(target: Target, arguments: dict[str, Any] | None = None) -> str:
        return decide(state, red, target, 0.0, arguments=arguments).effect

    assert verdict(Target("alpha", "tool", "read_file")) == "allow"
    assert verdict(Target("alpha", "tool", "write_file")) == "deny"
    assert verdict(Target("beta", "tool", "read_file")) == "deny"
    assert verdict(Target("alpha", "prompt", "greet")) == "deny"  # r1 names tools only
    assert verdict(Target("beta", "prompt", "greet")) == "allow"
    assert verdict(Target("beta", "prompt", "summarize")) == "deny"
    assert verdict(Target("beta", "resource", "test://static/1")) == "allow"
    assert verdict(Target("beta", "resource", "file:///srv/secret/keys.txt")) == "deny"  # deny rules first
    assert verdict(Target("beta", "tool", "search"), {"path": "/srv/public/a"}) == "allow"
    assert verdict(Target("beta", "tool", "search"), {"path": "/etc/passwd"}) == "deny"
    assert verdict(Target("beta", "tool", "search"), {}) == "deny"  # a constrained argument is required
    other = Principal(id="green/cat", team="green", name="cat", kind="agent")
    assert decide(state, other, Target("alpha", "tool", "read_file"), 0.0).effect == "deny"
    switched = PolicyState.build(rules, [KillSwitch("ks", "tool", "alpha/read_file", "r", "a", 0.0)])
    assert decide(switched, red, Target("alpha", "tool", "read_file"), 0.0).effect == "deny"
    assert decide(switched, red, Target("alpha", "tool", "read_text"), 0.0).effect == "allow"


# -- (a) and (b) for the methods that name one target ------------------------------------------


@PROFILE
@given(policy=s.policies(), switches=s.switches, requests=st.lists(s.targeted_requests(), min_size=1, max_size=6))
async def test_calls_reads_prompts_and_completions_reach_upstream_exactly_when_decide_allows(
    rig: Rig, policy: list[Rule], switches: list[tuple[str, str]], requests: list[tuple[Any, ...]]
) -> None:
    await rig.apply(policy, switches)
    rig.received()
    for index, era, method, server, name, extra in requests:
        agent = rig.agents[index]
        target = target_of(method, server, name, extra)
        arguments = extra if method == "tools/call" else None
        expected = rig.expect(agent.principal, target, arguments)
        seq = await rig.audit_mark()
        answer = await rig.rpc(agent, era, method, request_params(method, server, name, extra))
        received = rig.received()
        where = f"{agent.principal.id} {era} {method} {server}/{name} {extra}: {expected.reason}"
        saw = upstream_saw(received[server], method, name)
        others = [m for other, messages in received.items() for m in messages if other != server or m not in saw]
        assert not others, f"{where}: the upstreams received what nobody asked for: {others}"
        if expected.allowed:
            assert len(saw) == 1, f"{where}: allowed, but the upstream received {saw}"
            assert "result" in answer, f"{where}: allowed, but answered {answer}"
            if method == "tools/call":
                assert saw[0]["params"].get("arguments") == extra, f"{where}: arguments changed on the way"
        else:
            assert not saw, f"{where}: DENIED, yet forwarded: {saw}"
            assert answer.get("error", {}).get("code") == DENIED, f"{where}: denied, but answered {answer}"
        rows = await rig.audit_since(seq)
        assert has_row(rows, agent, target, (method,), expected.effect), f"{where}: no decision row in {rows}"


@PROFILE
@given(
    policy=s.policies(),
    switches=s.switches,
    views=st.lists(
        st.tuples(
            s.agents,
            s.eras,
            st.sampled_from(("tools/list", "prompts/list", "resources/list", "resources/templates/list")),
        ),
        min_size=1,
        max_size=6,
    ),
)
async def test_listings_contain_exactly_the_entries_decide_allows(
    rig: Rig, policy: list[Rule], switches: list[tuple[str, str]], views: list[tuple[int, str, str]]
) -> None:
    await rig.apply(policy, switches)
    catalog = {
        "tools/list": ("tools", "name", "tool", [*s.TOOLS, "ask"]),
        "prompts/list": ("prompts", "name", "prompt", list(s.PROMPTS)),
        "resources/list": ("resources", "uri", "resource", list(s.RESOURCES)),
        "resources/templates/list": ("resourceTemplates", "uriTemplate", "resource", [s.TEMPLATE]),
    }
    for index, era, method in views:
        agent = rig.agents[index]
        key, field, kind, names = catalog[method]
        answer = await rig.rpc(agent, era, method, {})
        listed = {entry[field] for entry in answer["result"][key]}
        join = exposed if kind != "resource" else exposed_uri
        allowed = {
            join(server, name)
            for server in SERVERS
            for name in names
            if rig.expect(agent.principal, Target(server, kind, name)).allowed  # type: ignore[arg-type]
        }
        assert listed == allowed, (
            f"{agent.principal.id} {era} {method}: listed but denied {sorted(listed - allowed)}; "
            f"allowed but not listed {sorted(allowed - listed)}"
        )


@PROFILE
@given(
    policy=s.policies(),
    probes=st.lists(
        st.tuples(
            s.agents,
            s.eras,
            st.sampled_from(
                (
                    ("tools/call", {"name": "nosuch__tool", "arguments": {}}),
                    ("tools/call", {"name": "alpha__nosuch", "arguments": {}}),
                    ("prompts/get", {"name": "beta__nosuch"}),
                    ("resources/read", {"uri": "gamma+file:///x"}),
                )
            ),
        ),
        min_size=1,
        max_size=3,
    ),
)
async def test_probing_unknown_names_is_decided_and_audited(
    rig: Rig, policy: list[Rule], probes: list[tuple[int, str, tuple[str, dict[str, Any]]]]
) -> None:
    await rig.apply(policy, [])
    rig.received()
    for index, era, (method, params) in probes:
        agent = rig.agents[index]
        seq = await rig.audit_mark()
        answer = await rig.rpc(agent, era, method, params)
        assert "error" in answer, answer
        assert not any(rig.received().values()), f"{method} {params}: an unknown name reached an upstream"
        rows = await rig.audit_since(seq)
        assert any(
            r["kind"] == "decision" and r["principal_id"] == agent.principal.id and r["method"] == method for r in rows
        ), f"{agent.principal.id} {era} {method} {params}: the probe left no decision row"


# -- subscriptions (handshake) and listen streams (2026-07-28) ------------------------------------

ELICIT: dict[str, Any] = {"elicitation": {"form": {}}}
subscribable = st.tuples(s.servers, st.sampled_from((*s.RESOURCES, "test://template/3/data")))


def upstream_subscriptions(rig: Rig, received: dict[str, list[dict[str, Any]]]) -> dict[str, set[str]]:
    """Follow what each upstream is subscribed to, from what it received."""
    state = rig.subscribed
    for server, messages in received.items():
        for message in messages:
            method, params = message.get("method"), message.get("params") or {}
            if method == "resources/subscribe":
                state[server].add(str(params.get("uri")))
            elif method == "resources/unsubscribe":
                state[server].discard(str(params.get("uri")))
            elif method == "subscriptions/listen":
                wanted = (params.get("notifications") or {}).get("resourceSubscriptions") or []
                state[server] = set(wanted)
    return state


async def wait_for_upstream(rig: Rig, done: Any, seen: list[dict[str, list[dict[str, Any]]]], timeout: float) -> bool:
    """Read the recorders until `done(state)` holds, for at most `timeout` seconds (what
    the gateway does upstream in the background has no event a test can wait on)."""
    with anyio.move_on_after(timeout):
        while True:
            received = rig.received()
            seen.append(received)
            if done(upstream_subscriptions(rig, received)):
                return True
            await anyio.sleep(0.02)
    return False


@PROFILE
@given(
    policy=s.policies(),
    switches=s.switches,
    subscriptions=st.lists(st.tuples(s.agents, subscribable), min_size=1, max_size=4),
)
async def test_subscriptions_reach_upstream_only_when_decide_allows(
    rig: Rig,
    policy: list[Rule],
    switches: list[tuple[str, str]],
    subscriptions: list[tuple[int, tuple[str, str]]],
) -> None:
    await rig.apply(policy, switches)
    upstream_subscriptions(rig, rig.received())
    made: list[tuple[Agent, str]] = []
    try:
        for index, (server, uri) in subscriptions:
            agent = rig.agents[index]
            target = Target(server, "resource", uri)
            expected = rig.expect(agent.principal, target)
            seq = await rig.audit_mark()
            answer = await rig.rpc(agent, HANDSHAKE, "resources/subscribe", {"uri": exposed_uri(server, uri)})
            where = f"{agent.principal.id} subscribes to {server}/{uri}: {expected.reason}"
            if expected.allowed:
                assert "result" in answer, f"{where}: allowed, but answered {answer}"
                made.append((agent, exposed_uri(server, uri)))
                # A 2026-07-28 upstream is subscribed by a listen the gateway restarts in the background.
                assert await wait_for_upstream(rig, lambda st, s=server, u=uri: u in st[s], [], 5.0), (
                    f"{where}: allowed, but the upstream is not subscribed"
                )
            else:
                received = rig.received()
                upstream_subscriptions(rig, received)
                assert answer.get("error", {}).get("code") == DENIED, f"{where}: denied, but answered {answer}"
                assert not any(received.values()), f"{where}: DENIED, yet the upstream received {received}"
            rows = await rig.audit_since(seq)
            assert has_row(rows, agent, target, ("resources/subscribe",), expected.effect), f"{where}: no decision row"
    finally:
        for agent, gateway_uri in made:
            await rig.rpc(agent, HANDSHAKE, "resources/unsubscribe", {"uri": gateway_uri})
    assert await wait_for_upstream(rig, lambda st: not any(st.values()), [], 5.0), (
        f"upstream subscriptions outlived every subscriber: {rig.subscribed}"
    )


@PROFILE
@given(
    policy=s.policies(),
    agent_index=s.agents,
    wanted=st.lists(subscribable, min_size=1, max_size=4, unique=True),
)
async def test_listen_streams_are_governed_like_subscriptions(
    rig: Rig, policy: list[Rule], agent_index: int, wanted: list[tuple[str, str]]
) -> None:
    await rig.apply(policy, [])
    upstream_subscriptions(rig, rig.received())
    agent = rig.agents[agent_index]
    verdicts = {(server, uri): rig.expect(agent.principal, Target(server, "resource", uri)) for server, uri in wanted}
    allowed = {exposed_uri(server, uri) for (server, uri), d in verdicts.items() if d.allowed}
    uris = [exposed_uri(server, uri) for server, uri in wanted]
    seq = await rig.audit_mark()
    params = {"notifications": {"resourceSubscriptions": uris, "toolsListChanged": True}}
    problems: list[str] = []
    refused = False
    async with rig.stream(agent, "subscriptions/listen", params) as (response, messages):
        # Refused: an HTTP error, or a JSON-RPC error answered as JSON rather than a stream.
        if response.status_code != 200 or response.headers.get("content-type", "").startswith("application/json"):
            refused = True
            # A stream refused as a whole is governed only if something was denied.
            assert len(allowed) < len(uris), f"every URI allowed, yet the listen got {response.status_code}"
        else:
            with anyio.fail_after(10):
                first = await anext(messages)
            assert first.get("method") == "notifications/subscriptions/acknowledged", first
            state = upstream_subscriptions(rig, rig.received())
            for server, uri in wanted:
                if uri in state[server] and not verdicts[(server, uri)].allowed:
                    problems.append(
                        f"the upstream was subscribed to {server}/{uri}, which {agent.principal.id} "
                        f"may not read ({verdicts[(server, uri)].reason})"
                    )
            # Make every named resource change upstream, then a policy change as a marker:
            # notifications on one stream arrive in order, so by the marker all have arrived.
            for server, uri in wanted:
                poke = {"name": exposed(server, "poke"), "arguments": {"uri": uri}}
                assert "result" in await rig.rpc(rig.root, MODERN, "tools/call", poke)
            await rig.apply(policy, [])
            delivered: set[str] = set()
            with anyio.fail_after(10):
                async for message in messages:
                    if message.get("method") == "notifications/resources/updated":
                        delivered.add(message["params"]["uri"])
                    elif message.get("method") == "notifications/tools/list_changed":
                        break
            if delivered - allowed:
                denied = sorted(delivered - allowed)
                problems.append(f"{agent.principal.id} received updates of denied resources {denied}")
            if allowed - delivered:
                missed = sorted(allowed - delivered)
                problems.append(f"{agent.principal.id} missed updates of allowed resources {missed}")
    rows = await rig.audit_since(seq)
    methods = ("subscriptions/listen", "resources/subscribe")
    if refused:
        # Refused as a whole at the first denial: that denial, at least, is on record.
        if not any(
            has_row(rows, agent, Target(server, "resource", uri), methods, "deny")
            for (server, uri), verdict in verdicts.items()
            if not verdict.allowed
        ):
            problems.append("the listen was refused, but no denial is on record")
    else:
        for (server, uri), verdict in verdicts.items():
            if not has_row(rows, agent, Target(server, "resource", uri), methods, verdict.effect):
                problems.append(f"no decision row for {server}/{uri} ({verdict.effect})")
    if not await wait_for_upstream(rig, lambda st: not any(st.values()), [], 3.0):
        problems.append(f"upstream subscriptions outlived the stream: {rig.subscribed}")
    assert not problems, "listen stream not governed:\n  " + "\n  ".join(problems)


# -- parked calls (2026-07-28 client, handshake-era upstream) --------------------------------------


async def wait_for_idle(rig: Rig, server: str, timeout: float) -> int:
    """How many client calls are still in flight on `server` after up to `timeout` seconds."""
    upstream = rig.gateway.upstreams[server]
    with anyio.move_on_after(timeout):
        while upstream.status()["in_flight"]:
            await anyio.sleep(0.02)
    return int(upstream.status()["in_flight"])


@PROFILE
@given(
    policy=s.policies(),
    starter=s.agents,
    resumer=s.agents,
    resume_tool=st.sampled_from(("ask", "ask", "read_file")),
    switch_between=st.sampled_from((None, None, ("tool", "alpha/ask"), ("server", "alpha"))),
    grant=st.sampled_from((True, True, True, False)),
)
async def test_parked_calls_resume_only_as_the_same_allowed_call(
    rig: Rig,
    policy: list[Rule],
    starter: int,
    resumer: int,
    resume_tool: str,
    switch_between: tuple[str, str] | None,
    grant: bool,
) -> None:
    first, second = rig.agents[starter], rig.agents[resumer]
    if grant:  # random policies rarely allow alpha/ask: grant it often, so calls get parked
        team = first.principal.team
        policy = [
            *policy,
            Rule(
                id=f"{team}-grant",
                team=team,
                effect="allow",
                servers=("alpha",),
                tools=("ask", "read_file"),
                prompts=(),
                resources=(),
                position=99,
            ),
        ]
    await rig.apply(policy, [])
    rig.received()
    assert not await wait_for_idle(rig, "alpha", 3.0), "a call parked by an earlier example is still in flight upstream"
    ask = Target("alpha", "tool", "ask")
    expected = rig.expect(first.principal, ask, {})
    answer = await rig.rpc(first, MODERN, "tools/call", {"name": exposed("alpha", "ask"), "arguments": {}}, ELICIT)
    received = rig.received()
    if not expected.allowed:
        assert answer.get("error", {}).get("code") == DENIED, answer
        assert not received["alpha"], f"denied, yet forwarded: {received}"
        return
    result = answer.get("result") or {}
    assert result.get("resultType") == "input_required", answer
    state = result["requestState"]
    if switch_between is not None:
        await rig.apply(policy, [switch_between])
    rig.received()
    again = rig.expect(second.principal, Target("alpha", "tool", resume_tool), {})
    legitimate = second is first and resume_tool == "ask" and again.allowed
    seq = await rig.audit_mark()
    resume = {
        "name": exposed("alpha", resume_tool),
        "arguments": {},
        "requestState": state,
        "inputResponses": {"r1": {"action": "accept", "content": {"ok": True}}},
    }
    answer = await rig.rpc(second, MODERN, "tools/call", resume, ELICIT)
    received = rig.received()
    # The client's answers reaching the upstream; an error the gateway sends it when a kill ends
    # the parked call (its pending request answered) is the stop, not a resume.
    answers_upstream = [m for m in received["alpha"] if "method" not in m and "result" in m]
    where = (
        f"{first.principal.id} parked alpha/ask; {second.principal.id} resumed as {resume_tool}"
        f" after switch {switch_between}: {again.reason}"
    )
    rows = await rig.audit_since(seq)
    # Leave nothing parked for the next example: the original caller finishes the call
    # under a policy that allows it, and then nothing may be left in flight upstream.
    await rig.apply(policy, [])
    await rig.rpc(first, MODERN, "tools/call", {**resume, "name": exposed("alpha", "ask")}, ELICIT)
    rig.received()
    leaked = await wait_for_idle(rig, "alpha", 3.0)
    assert not leaked, f"{where}: the parked upstream call was left in flight, unreachable by its caller"
    if legitimate:
        assert answers_upstream, f"{where}: a legitimate resume did not reach the upstream ({answer})"
        assert "result" in answer and "answered" in str(answer["result"]), f"{where}: {answer}"
    else:
        assert not answers_upstream, f"{where}: an illegitimate resume reached the upstream: {answers_upstream}"
        assert "error" in answer, f"{where}: an illegitimate resume was answered {answer}"
    assert any(
        r["kind"] == "decision" and r["principal_id"] == second.principal.id and r["method"] == "tools/call"
        for r in rows
    ), f"{where}: the resume left no decision row"
