"""`decide(state, principal, target, now)`: the one decision function.

Order: kill switches (any scope) -> freshness of the snapshot -> the team's rules (deny
rules first, then allow rules, each in order) -> deny by default. The same function
filters listings, so what a principal is shown and what it may call never disagree.

A rule covers the kinds it names (`Rule.patterns`). Resource URIs are compared in their
normal form (`uris.normalize`), whoever built the target; a URI with no single reading
is denied here, so no path that reaches `decide` can match a rule by an encoding trick.

Rules are indexed per team by server name (exact names in a dict, patterns in a list),
and a team's verdict for a target is memoised in the snapshot it was computed from, so a
decision costs a few dictionary lookups however many rules there are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase, translate
from typing import Any

from ..identity import Principal
from ..policy_model import KIND_FIELDS, Decision, KillSwitch, Kind, Rule, Target
from .arguments import argument_violation
from .uris import AmbiguousURI, normal_form

_WILDCARD = re.compile(r"[*?\[]")
DEFAULT_DENY = Rule(id="default-deny", team="*", effect="deny", description="nothing allowed it: deny by default")
_MEMO_LIMIT = 16_384
_MEMO_NAME_LIMIT = 256
"""Names are the caller's to choose (a denied probe's made-up URI): only short ones are
remembered, so a team's memo holds at most a few MiB however its callers spell things."""


class _Globs:
    """A set of glob patterns: exact names by lookup, the rest as one regex."""

    __slots__ = ("any", "exact", "pattern")

    def __init__(self, globs: Iterable[str]) -> None:
        globs = tuple(globs)
        self.any = "*" in globs
        self.exact = frozenset(g for g in globs if not _WILDCARD.search(g))
        wild = [g for g in globs if _WILDCARD.search(g)]
        self.pattern = re.compile("|".join(f"(?:{translate(g)})" for g in wild)) if wild else None

    def match(self, name: str) -> bool:
        return self.any or name in self.exact or (self.pattern is not None and self.pattern.match(name) is not None)


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    kinds: dict[str, _Globs]


_KINDS: tuple[Kind, ...] = ("tool", "prompt", "resource")


def _compile(rule: Rule) -> _Compiled:
    return _Compiled(rule, {kind: _Globs(rule.patterns(kind)) for kind in _KINDS})


@dataclass(frozen=True)
class Why:
    """Which of a rule's patterns a target met: for `policy explain`."""

    servers: tuple[str, ...]
    """The server patterns that match the target's server."""
    kind_field: str | None
    """`tools`, `prompts` or `resources`; None when the rule names no kind (covers all)."""
    names: tuple[str, ...]
    """The patterns of that field that match the target's name."""


def why(rule: Rule, target: Target) -> Why:
    """The patterns of `rule` that `target` meets (for a rule `TeamRules.matching` returned)."""
    servers = tuple(p for p in rule.servers if fnmatchcase(target.server, p))
    if not rule.names_a_kind:
        return Why(servers, None, ())
    names = tuple(p for p in rule.patterns(target.kind) if fnmatchcase(target.name, p))
    return Why(servers, KIND_FIELDS[target.kind], names)


def comparable(target: Target) -> Target | AmbiguousURI:
    """`target` as rules see it: a resource by its URI's normal form; or why it has none."""
    if target.kind != "resource":
        return target
    normal = normal_form(target.name)
    if isinstance(normal, AmbiguousURI):
        return normal
    return target if normal == target.name else Target(target.server, target.kind, normal)


class TeamRules:
    """One team's rules, indexed by server: exact names in a dict; patterns deduplicated and
    filed under their literal prefix, so a name meets only the patterns that could match it."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        ordered = sorted(rules, key=lambda r: (r.effect != "deny", r.position))
        self.size = len(ordered)
        self._order = {r.id: i for i, r in enumerate(ordered)}
        self._by_server: dict[str, list[_Compiled]] = {}
        self._patterns: dict[str, tuple[re.Pattern[str], list[_Compiled]]] = {}
        self._by_prefix: dict[str, list[tuple[re.Pattern[str], list[_Compiled]]]] = {}
        self._memo: dict[Target, tuple[Rule, ...]] = {}
        for rule in ordered:
            compiled = _compile(rule)
            for server in rule.servers:
                if not _WILDCARD.search(server):
                    self._by_server.setdefault(server, []).append(compiled)
                    continue
                entry = self._patterns.get(server)
                if entry is None:
                    prefix = server[: _WILDCARD.search(server).start()]  # type: ignore[union-attr]
                    entry = (re.compile(translate(server)), [])
                    self._patterns[server] = entry
                    self._by_prefix.setdefault(prefix, []).append(entry)
                entry[1].append(compiled)

    def matching(self, target: Target) -> tuple[Rule, ...]:
        """The rules that match `target`, deny rules first, each kind in order."""
        found = self._memo.get(target)
        if found is not None:
            return found
        server, name = target.server, target.name
        hits: dict[str, Rule] = {}
        for compiled in self._by_server.get(server, ()):
            if compiled.kinds[target.kind].match(name):
                hits[compiled.rule.id] = compiled.rule
        if self._by_prefix:
            for length in range(len(server) + 1):
                for pattern, rules in self._by_prefix.get(server[:length], ()):
                    if pattern.match(server):
                        for compiled in rules:
                            if compiled.kinds[target.kind].match(name):
                                hits[compiled.rule.id] = compiled.rule
        found = tuple(sorted(hits.values(), key=lambda r: self._order[r.id]))
        if len(self._memo) < _MEMO_LIMIT and len(name) + len(server) <= _MEMO_NAME_LIMIT:
            self._memo[target] = found
        return found


def _verdict(rules: TeamRules | None, target: Target, arguments: dict[str, Any] | None) -> tuple[str, str, Rule | None]:
    """(effect, reason, rule) from one rule set. With `arguments` (a tool call), an allow
    rule with argument constraints covers only calls that satisfy them; listings pass None."""
    if rules is None:
        return "deny", "no policy grants this team anything", DEFAULT_DENY
    refused: tuple[str, Rule] | None = None
    for rule in rules.matching(target):
        if rule.effect == "deny":
            return "deny", f"denied by rule {rule.id}", rule
        if rule.arguments and arguments is not None:
            violation = argument_violation(rule.arguments, arguments)
            if violation is not None:
                refused = refused or (violation, rule)
                continue
        return "allow", f"allowed by rule {rule.id}", rule
    if refused is not None:
        return "deny", f"arguments not allowed by rule {refused[1].id}: {refused[0]}", refused[1]
    return "deny", "no rule allows this", DEFAULT_DENY


@dataclass(frozen=True)
class PolicyState:
    """Everything `decide` reads: one immutable snapshot of rules and kill switches."""

    version: int = 0
    policy_version: int = 0
    teams: dict[str, TeamRules] = field(default_factory=dict)
    shadow_teams: dict[str, TeamRules] | None = None
    """The candidate policy (live rules plus shadow rules, or a shadow bundle), if any."""
    switches: tuple[KillSwitch, ...] = ()

    @classmethod
    def build(
        cls,
        rules: Iterable[Rule],
        switches: Iterable[KillSwitch] = (),
        *,
        version: int = 0,
        policy_version: int = 0,
        shadow_rules: Iterable[Rule] | None = None,
    ) -> PolicyState:
        """Index rules by team. Rules marked `shadow` join the candidate policy only."""
        live: dict[str, list[Rule]] = {}
        shadow: dict[str, list[Rule]] = {}
        any_shadow = False
        for rule in rules:
            if rule.shadow:
                any_shadow = True
            else:
                live.setdefault(rule.team, []).append(rule)
            shadow.setdefault(rule.team, []).append(rule)
        candidate: dict[str, TeamRules] | None = None
        if shadow_rules is not None:
            bundle: dict[str, list[Rule]] = {}
            for rule in shadow_rules:
                bundle.setdefault(rule.team, []).append(rule)
            candidate = {team: TeamRules(r) for team, r in bundle.items()}
        elif any_shadow:
            candidate = {team: TeamRules(r) for team, r in shadow.items()}
        return cls(
            version=version,
            policy_version=policy_version,
            teams={team: TeamRules(r) for team, r in live.items()},
            shadow_teams=candidate,
            switches=tuple(switches),
        )


def engaged_switch(
    state: PolicyState, principal: Principal | None, target: Target | None, now: float
) -> KillSwitch | None:
    for switch in state.switches:
        if switch.active(now) and switch.matches(principal, target):
            return switch
    return None


def decide(
    state: PolicyState,
    principal: Principal,
    target: Target,
    now: float,
    *,
    stale: bool = False,
    arguments: dict[str, Any] | None = None,
) -> Decision:
    """Allow or deny `principal` reaching `target` at wall-clock time `now`.

    `stale` says the snapshot is older than its bound (the store is unreachable): then
    nothing is allowed. `arguments` are a tool call's, checked against rule constraints.
    """
    switch = engaged_switch(state, principal, target, now)
    if switch is not None:
        return Decision(
            "deny",
            f"kill switch ({switch.scope}) engaged by {switch.actor}: {switch.reason}",
            None,
            state.policy_version,
            kill_switch_id=switch.id,
        )
    if stale:
        return Decision("deny", "the policy snapshot is stale: the store cannot be reached", None, state.policy_version)
    normal = comparable(target)
    if isinstance(normal, AmbiguousURI):
        return Decision("deny", f"ambiguous resource URI: {normal}", None, state.policy_version)
    target = normal
    effect, reason, rule = _verdict(state.teams.get(principal.team), target, arguments)
    decision = Decision(effect, reason, rule.id if rule else None, state.policy_version)  # type: ignore[arg-type]
    if state.shadow_teams is not None:
        shadow_effect, _, shadow_rule = _verdict(state.shadow_teams.get(principal.team), target, arguments)
        if shadow_effect != effect:
            return Decision(
                decision.effect,
                decision.reason,
                decision.rule_id,
                decision.policy_version,
                shadow="would_allow" if shadow_effect == "allow" else "would_deny",
                shadow_rule_id=shadow_rule.id if shadow_rule else None,
            )
    return decision
