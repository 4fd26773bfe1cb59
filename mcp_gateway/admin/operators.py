"""Who is calling the admin API, and with what role.

Authentication ends in an `Operator`: the name recorded as the actor in the audit, and the
`Role` that decides what the caller may do. `authenticate` is the one function that turns
a request into one; every admin route and `/readyz` ask it. A new way in (an identity
provider's access token whose role claim maps to a `Role`) is one more branch there; it is
a coroutine so such a branch may await (a key set, an introspection endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from .. import auth
from ..roles import Role
from ..runtime import Gateway

CONFIGURED = "admin-token"
"""The actor name of the `admin_token` setting."""
LOCAL = "local-admin"
"""The actor name of a loopback caller of an `auth: none` gateway with no admin token."""


@dataclass(frozen=True)
class Operator:
    name: str
    """Recorded as the actor of what it does."""
    role: Role


async def authenticate(request: Request) -> Operator | None:
    """The caller of an admin route, or None if it has no valid credential.

    - the `admin_token` setting: `admin-token`, role admin;
    - a token made with `mcp-gateway admin-token create` and not revoked: its name and role;
    - no admin token at all, an `auth: none` gateway, a loopback listener, peer and Host:
      `local-admin`, role admin (development mode, this machine only).
    """
    gw: Gateway = request.app.state.gateway
    configured = gw.settings.admin_token
    tokens = gw.snapshots.current.admin_tokens
    if configured is None and not tokens:
        # Open only in `auth: none` development mode, and only to this machine: a loopback
        # listener, peer and Host. With API keys there is no open door at all: a reverse
        # proxy on the same host has a loopback peer and may well pass `Host: localhost`,
        # and must not hand this machine's privilege to its own clients.
        if gw.settings.auth != "none":
            return None
        host = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower()
        peer = request.client.host if request.client else ""
        local = host in ("127.0.0.1", "localhost", "::1") and peer in ("127.0.0.1", "::1", "localhost")
        return Operator(LOCAL, Role.admin) if gw.settings.is_loopback() and local else None
    token = auth.bearer(request.headers.get("authorization"))
    if token is None:
        return None
    if configured is not None and auth.any_matches(token, [auth.digest(configured.get_secret_value())]):
        return Operator(CONFIGURED, Role.admin)
    token_id = auth.key_id_of(token, auth.ADMIN_PREFIX)
    entry = tokens.get(token_id) if token_id is not None else None
    if entry is not None and auth.matches(token, entry.digest):
        return Operator(entry.name, entry.role)
    return None
