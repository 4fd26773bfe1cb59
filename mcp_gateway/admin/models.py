"""Request bodies of the admin API (their JSON Schemas feed the OpenAPI document)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..policy.bundle import KINDS_NOTE, ArgumentConstraint, Patterns, check_resource_patterns
from ..policy_model import SCOPES
from ..roles import Role

_TEAM = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_EXPIRY = 10 * 366 * 86400.0
"""Ten years: a switch meant to outlive that is one to engage without an expiry."""


class EngageSwitch(BaseModel):
    """Engage a kill switch. `scope` says what it stops; name the target that scope needs."""

    model_config = ConfigDict(extra="forbid")

    scope: Literal["global", "team", "principal", "server", "tool"]
    team: str | None = Field(default=None, pattern=_TEAM)
    principal: str | None = Field(default=None, max_length=200, description="A principal id, `team/name`.")
    server: str | None = Field(default=None, max_length=64)
    tool: str | None = Field(
        default=None, max_length=190, description="The tool's name on its upstream (with `server`)."
    )
    reason: str = Field(min_length=1, max_length=2000)
    expires_in_seconds: float | None = Field(default=None, gt=0, le=MAX_EXPIRY, allow_inf_nan=False)
    unconfigured: bool = Field(
        default=False,
        description="Engage it though `server` (or that server's `tool`) is not configured or not known "
        "to this gateway: a name about to be added. Without it such a switch, which would stop "
        "nothing, is refused with 422 naming what exists.",
    )

    @model_validator(mode="after")
    def _target(self) -> EngageSwitch:
        needed = {
            "global": (),
            "team": ("team",),
            "principal": ("principal",),
            "server": ("server",),
            "tool": ("server", "tool"),
        }[self.scope]
        for name in needed:
            if not getattr(self, name):
                raise ValueError(f"scope {self.scope!r} needs `{name}`")
        return self

    def target(self) -> str:
        return {
            "global": "",
            "team": self.team or "",
            "principal": self.principal or "",
            "server": self.server or "",
            "tool": f"{self.server}/{self.tool}",
        }[self.scope]


assert set(SCOPES) == {"global", "team", "principal", "server", "tool"}


class ReleaseSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


class NewTeam(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    description: str = ""


class NewPrincipal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    team: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
    kind: Literal["agent", "person"] = "agent"


class NewKey(BaseModel):
    """A new API key for a principal (created, with its team, if it does not exist)."""

    model_config = ConfigDict(extra="forbid")

    team: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
    kind: Literal["agent", "person"] = "agent"


class NewRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    team: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    effect: Literal["allow", "deny"]
    servers: list[str] = Field(min_length=1)
    tools: Patterns | None = Field(default=None, description="Tool names (glob patterns)." + KINDS_NOTE)
    prompts: Patterns | None = Field(default=None, description="Prompt names (glob patterns)." + KINDS_NOTE)
    resources: Patterns | None = Field(
        default=None, description="Resource URIs (glob patterns), in RFC 3986 normal form." + KINDS_NOTE
    )
    arguments: dict[str, ArgumentConstraint] | None = Field(
        default=None, description="Constraints on tool-call arguments (allow rules only)."
    )
    shadow: bool = False
    description: str = ""

    _resources = field_validator("resources")(check_resource_patterns)

    @model_validator(mode="after")
    def _constraints_on_allow_rules(self) -> NewRule:
        if self.effect == "deny" and self.arguments:
            raise ValueError("`arguments` constraints belong on allow rules")
        return self


ADMIN_TOKEN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"


class NewAdminToken(BaseModel):
    """A new admin API token. The response holds the token; only its digest is stored."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=ADMIN_TOKEN_NAME, description="Who or what holds it; recorded as the actor.")
    role: Role = Field(
        description="viewer: read; operator: also kill switches and policy reloads; "
        "admin: also keys, principals, teams, rules and admin tokens."
    )
