"""Verified claims -> who is calling: a `Principal` of a team for /mcp, a `Role` for the admin API.

Policy files speak in teams, so a token must map to one: a fixed team for its client id
(`client_teams`, for machine clients), else the first entry of `teams` whose group the
token's `team_claim` holds. No team: refused, with the reason. The principal id is
`<team>/<value of principal_claim>`, stable across tokens, so a principal kill switch and the
audit name the same caller whatever token it presents.
"""

from __future__ import annotations

import re
from typing import Any, TypeGuard

from ..identity import Principal
from ..roles import Role
from .config import OAuthSettings
from .verified import Verified

MAX_NAME = 128
MAX_SUBJECT = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class NoTeam(Exception):
    """A valid token that maps to no team (HTTP 403: the identity is known, the gateway has no place for it)."""

    def __init__(self, reason: str, subject: str) -> None:
        super().__init__(reason)
        self.reason, self.subject = reason, subject


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _usable(name: object) -> TypeGuard[str]:
    """A name an operator can read and type: no control, format (zero-width, direction
    override) or non-ASCII space characters, none around it. `platform/alice` and
    `platform/alice<U+200B>` look alike, yet a principal kill switch on one misses the other."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME
        and name.isprintable()
        and name == name.strip()
        and not _CONTROL.search(name)
    )


def client_id(claims: dict[str, Any], settings: OAuthSettings) -> str | None:
    for name in settings.client_id_claims:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def subject(verified: Verified, settings: OAuthSettings) -> str:
    """The token's `sub`; a machine token without one (introspection of a client credentials
    token may leave it out) is its client's."""
    value = verified.claims.get("sub")
    return value if isinstance(value, str) and value else client_id(verified.claims, settings) or ""


def team_of(claims: dict[str, Any], settings: OAuthSettings) -> str | None:
    client = client_id(claims, settings)
    if client is not None and client in settings.client_teams:
        return settings.client_teams[client]
    groups = set(_strings(claims.get(settings.team_claim)))
    for group, team in settings.teams.items():
        if group in groups:
            return team
    return None


def principal_of(verified: Verified, settings: OAuthSettings) -> Principal:
    """The principal a verified token stands for; `NoTeam` if it maps to none."""
    claims = verified.claims
    sub = subject(verified, settings)
    name = sub if settings.principal_claim == "sub" else claims.get(settings.principal_claim)
    if not _usable(name):
        raise NoTeam(f"the token has no usable {settings.principal_claim!r} claim to name the caller", sub)
    team = team_of(claims, settings)
    if team is None:
        groups = [g[:64] for g in _strings(claims.get(settings.team_claim))[:5]]
        client = (client_id(claims, settings) or "")[:64]
        raise NoTeam(
            f"the token maps to no team: client {client!r} has no team and its "
            f"{settings.team_claim!r} ({', '.join(groups) or 'none'}) match none configured",
            sub,
        )
    return Principal(
        id=f"{team}/{name}",
        team=team,
        name=name,
        kind="agent" if client_id(claims, settings) == sub else "person",
        subject=sub[:MAX_SUBJECT] or None,  # the audit column's size: a long `sub` cannot fail a batch
        issuer=settings.issuer,
        expires_at=verified.expires_at,
    )


def role_of(verified: Verified, settings: OAuthSettings) -> Role | None:
    """The highest operator role the token's `role_claim` maps to, if any."""
    found = [settings.roles[v] for v in _strings(verified.claims.get(settings.role_claim)) if v in settings.roles]
    return max(found, key=lambda r: r.rank) if found else None


def actor_of(verified: Verified, settings: OAuthSettings) -> str:
    """How the audit names an operator who came with a token: `oidc:<principal claim value>`."""
    name = verified.claims.get(settings.principal_claim)
    if not _usable(name):
        name = subject(verified, settings)
        name = name if _usable(name) else "".join(c for c in str(name) if c.isprintable()).strip() or "?"
    return f"oidc:{name}"[:MAX_NAME]
