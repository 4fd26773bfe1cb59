"""How the gateway trusts an identity provider: the `oauth:` section of the gateway settings.

```yaml
gateway:
  auth: keys+oauth
  oauth:
    issuer: https://login.example.com/oauth2/default
    audience: https://mcp.example.com/mcp
    principal_claim: email
    teams: {eng-platform: platform, eng-sales: sales}   # group -> team, first match wins
    client_teams: {0oa1ci: platform}                     # client id -> team (machine clients)
```
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..roles import Role
from .introspection import IntrospectionSettings

_TEAM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
"""As policy files name teams."""

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
"""The only algorithms a token may be signed with: `none` and the HMAC family never (an HMAC
key would be a secret shared with every other resource server of the issuer)."""


class OAuthSettings(BaseModel):
    """The identity provider the gateway trusts, and how its claims name principals and teams."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(pattern=r"^https?://", max_length=512)
    """The `iss` of its tokens, exactly; its discovery document is at
    `<issuer>/.well-known/openid-configuration` (or `oauth-authorization-server`)."""
    audience: str = Field(pattern=r"^https?://")
    """The gateway's resource URI (RFC 8707), e.g. `https://mcp.example.com/mcp`: tokens must name it in `aud`."""
    token_audiences: list[str] = Field(default_factory=list)
    """Other `aud` values accepted besides `audience`, for providers that name the API otherwise
    (Entra ID v2 tokens carry the API's application id)."""
    jwks_uri: str | None = Field(default=None, pattern=r"^https?://")
    """Where the signing keys are, when not taken from the discovery document."""
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"])
    clock_skew: float = Field(default=60.0, ge=0, le=300)
    """Seconds of clock difference allowed on `exp`, `nbf` and `iat`."""
    fetch_timeout: float = Field(default=5.0, gt=0, le=30)
    """Bound on fetching the discovery document and keys; past it, a token whose key is not cached is refused."""
    jwks_min_refresh_interval: float = Field(default=30.0, ge=0)
    """A token with an unknown `kid` refetches the keys at most this often (made-up kids cost the IdP nothing)."""
    jwks_max_age: float = Field(default=3600.0, gt=0)
    """Keys are refetched when older than this (removed keys stop verifying)."""
    required_scope: str | None = None
    """A scope every token on /mcp must carry (403 `insufficient_scope` otherwise)."""
    principal_claim: Literal["sub", "email", "preferred_username", "upn"] = "sub"
    """The claim that names the caller; the principal id is `<team>/<value>`."""
    team_claim: str = "groups"
    teams: dict[str, str] = Field(default_factory=dict)
    """Value of `team_claim` (a group) -> team; the first entry the token's groups contain wins."""
    client_id_claims: list[str] = Field(default_factory=lambda: ["client_id", "azp", "cid", "appid"])
    client_teams: dict[str, str] = Field(default_factory=dict)
    """Client id -> team, for machine clients (checked before the groups)."""
    role_claim: str = "roles"
    roles: dict[str, Role] = Field(default_factory=dict)
    """Value of `role_claim` -> operator role on the admin API; the highest one a token carries
    counts. Empty (the default): no access token is an operator's. Named explicitly, because an
    organisation's identity provider may already hand out roles called `admin` for other things."""
    introspection: IntrospectionSettings | None = None
    """Opaque (non-JWT) tokens are checked with the issuer's RFC 7662 endpoint when set."""
    admin_audience: str | None = Field(default=None, pattern=r"^https?://")
    """The `aud` of tokens for the admin API; default: `audience`."""

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        wrong = [a for a in value if a not in ASYMMETRIC]
        if wrong or not value:
            raise ValueError(f"only asymmetric algorithms are accepted ({', '.join(ASYMMETRIC)}), not {wrong}")
        return value

    @field_validator("teams", "client_teams")
    @classmethod
    def _team_names(cls, value: dict[str, str]) -> dict[str, str]:
        wrong = sorted({t for t in value.values() if not _TEAM.fullmatch(t)})
        if wrong:
            raise ValueError(f"not team names (lowercase letters, digits, '-', '_'; up to 64): {wrong}")
        return value

    @field_validator("issuer", "audience")
    @classmethod
    def _no_fragment(cls, value: str) -> str:
        if "#" in value:
            raise ValueError("must not contain a fragment")
        return value
