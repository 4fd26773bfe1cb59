"""The values the policy engine works with: rules, kill switches, targets and decisions.

Pure data at the bottom of the package, so the store can read and write rules without
importing the policy package (which reads the store)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .identity import Principal

Effect = Literal["allow", "deny"]
Kind = Literal["tool", "prompt", "resource"]
Scope = Literal["global", "team", "principal", "server", "tool"]
SCOPES: tuple[Scope, ...] = ("global", "team", "principal", "server", "tool")


@dataclass(frozen=True, slots=True)
class Target:
    """What a request reaches: a tool, prompt or resource of one upstream, by its upstream name."""

    server: str
    kind: Kind
    name: str


KIND_FIELDS: dict[Kind, str] = {"tool": "tools", "prompt": "prompts", "resource": "resources"}
"""The rule field that names each kind."""
EVERYTHING = ("*",)


@dataclass(frozen=True, slots=True)
class Rule:
    """One line of a team's policy: which servers, and which of their tools, prompts and
    resources (glob patterns), it allows or denies. Deny rules win over allow rules.

    A rule that names none of `tools`, `prompts`, `resources` (all None) covers every kind
    of its servers; a rule that names any of them covers only the kinds it names."""

    id: str
    team: str
    effect: Effect
    servers: tuple[str, ...] = EVERYTHING
    tools: tuple[str, ...] | None = None
    prompts: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    arguments: dict[str, Any] | None = None
    """Per-argument constraints for tool calls (see policy files); None for none."""
    shadow: bool = False
    """Decided and audited (`would_allow` / `would_deny`) but not enforced."""
    position: int = 0
    description: str = ""

    @property
    def names_a_kind(self) -> bool:
        return not (self.tools is None and self.prompts is None and self.resources is None)

    def patterns(self, kind: Kind) -> tuple[str, ...]:
        """The patterns this rule matches names of `kind` against: everything when the rule
        names no kind, nothing for a kind it leaves out while naming another."""
        if not self.names_a_kind:
            return EVERYTHING
        named: tuple[str, ...] | None = getattr(self, KIND_FIELDS[kind])
        return named if named is not None else ()


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """An engaged stop. `target` is empty (global), a team, a principal id, a server, or `server/tool`."""

    id: str
    scope: Scope
    target: str
    reason: str
    actor: str
    created_at: float
    expires_at: float | None = None

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def matches(self, principal: Principal | None, target: Target | None) -> bool:
        """Whether this switch stops `principal` reaching `target` (None matches any)."""
        scope = self.scope
        if scope == "global":
            return True
        if scope == "team":
            return principal is None or principal.team == self.target
        if scope == "principal":
            return principal is None or principal.id == self.target
        if target is None:
            return True
        if scope == "server":
            return target.server == self.target
        return target.kind == "tool" and f"{target.server}/{target.name}" == self.target


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request, with the reason a person can read."""

    effect: Effect
    reason: str
    rule_id: str | None
    policy_version: int
    kill_switch_id: str | None = None
    shadow: Literal["would_allow", "would_deny"] | None = None
    """Set when the shadow policy would decide differently from the live one."""
    shadow_rule_id: str | None = None

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"

    def data(self) -> dict[str, Any]:
        """The JSON-RPC error `data` of a denial."""
        return {
            "reason": self.reason,
            "rule_id": self.rule_id,
            "policy_version": self.policy_version,
            "kill_switch_id": self.kill_switch_id,
        }
