"""Who is calling the admin API, and with what role.

Authentication ends in an `Operator`: the name recorded as the actor in the audit, and the
`Role` that decides what the caller may do. `authenticate` is the one function that turns
a request into one; every admin route and `/readyz` ask it. A new way in (an identity
provider's access token whose role claim maps to a `Role`) is one more branch there; it is
a coroutine so such a branch may await (a key set, an introspection endpoint).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio
from starlette.requests import Request

from .. import auth
from ..oauth import claims
from ..oauth.verified import TokenRejected
from ..roles import Role
from ..runtime import Gateway
from ..store import identity as identity_store

log = logging.getLogger(__name__)

CONFIGURED = "admin-token"
"""The actor name of the `admin_token` setting."""
LOCAL_OPERATOR = "local-admin"
"""The actor name of a loopback caller of an `auth: none` gateway with no admin token."""


@dataclass(frozen=True)
class Operator:
    name: str
    """Recorded as the actor of what it does."""
    role: Role
    token_id: str | None = None
    """The stored admin token it presented (None for the `admin_token` setting and `local-admin`)."""


def tokenless(gw: Gateway) -> bool:
    """No admin token is configured or stored, and no identity provider vouches for operators."""
    return gw.settings.admin_token is None and not gw.snapshots.current.admin_tokens and gw.oauth is None


def peer_of(request: Request) -> str | None:
    """The caller's address, as the connection gives it (the gateway reads no proxy headers)."""
    return request.client.host if request.client else None


def local_caller(request: Request) -> bool:
    """The one caller let in without a credential: a loopback listener, peer and Host, on an
    `auth: none` gateway that has no admin token (development mode, this machine only).
    With API keys there is no open door at all: a reverse proxy on the same host has a
    loopback peer and may well pass `Host: localhost`, and must not hand this machine's
    privilege to its own clients."""
    gw: Gateway = request.app.state.gateway
    if gw.settings.auth != "none" or not tokenless(gw):
        return False
    authority = request.headers.get("host", "").lower()
    host = authority.rsplit(":", 1)[0].strip("[]")
    peer = request.client.host if request.client else ""
    local = host in ("127.0.0.1", "localhost", "::1") and peer in ("127.0.0.1", "::1", "localhost")
    # A browser page on another loopback port passes the Host and Origin check and may send
    # a simple (text/plain) POST without a preflight: only the gateway's own pages, or a
    # caller that sends no Origin (curl, the CLI), are this machine's admin.
    origin = request.headers.get("origin")
    own = origin is None or origin.lower() in (f"http://{authority}", f"https://{authority}")
    return gw.settings.is_loopback() and local and own


def by_admin_token(gw: Gateway, token: str) -> Operator | None:
    """The `admin_token` setting (`admin-token`, role admin), or a token made with
    `mcp-gateway admin-token create` and not revoked (its name and role)."""
    configured = gw.settings.admin_token
    if configured is not None and auth.any_matches(token, [auth.digest(configured.get_secret_value())]):
        return Operator(CONFIGURED, Role.admin)
    token_id = auth.key_id_of(token, auth.ADMIN_PREFIX)
    entry = gw.snapshots.current.admin_tokens.get(token_id) if token_id is not None else None
    if entry is not None and auth.matches(token, entry.digest):
        return Operator(entry.name, entry.role, token_id)
    return None


async def by_access_token(gw: Gateway, token: str, peer: str | None) -> Operator | None:
    """An operator who came with the identity provider's access token (`oauth:` configured):
    `oidc:<name>` and the highest role its `role_claim` maps to; None for an invalid token or
    one with no role. `peer`: the caller's address, whose share of introspection it takes."""
    if gw.oauth is None or token.startswith((auth.ADMIN_PREFIX, auth.KEY_PREFIX)):
        return None
    settings = gw.oauth.settings
    try:
        audience = [settings.admin_audience] if settings.admin_audience else None  # None: the /mcp audiences
        verified = await gw.oauth.verifier.verify(token, audience, peer=peer)
    except TokenRejected:
        return None
    role = claims.role_of(verified, settings)
    return Operator(claims.actor_of(verified, settings), role) if role is not None else None


async def by_token(gw: Gateway, token: str, peer: str | None) -> Operator | None:
    """Whoever `token` stands for now (checked on every use, so revocation and expiry hold at
    once), presented from address `peer` (None if unknown)."""
    return by_admin_token(gw, token) or await by_access_token(gw, token, peer)


async def authenticate(request: Request) -> Operator | None:
    """The caller of an admin route (or the dashboard's login), or None if it has no valid
    credential: a bearer admin token or operator access token (`by_token`), or the local
    admin of an `auth: none` loopback gateway (`local_caller`)."""
    if local_caller(request):
        return Operator(LOCAL_OPERATOR, Role.admin)
    token = auth.bearer(request.headers.get("authorization"))
    if token is None:
        return None
    return await by_token(request.app.state.gateway, token, peer_of(request))


USE_INTERVAL = 60.0
"""Seconds between two writes of one token's `last_used_at` by one replica."""


class TokenUses:
    """When each stored admin token was last used, written to the store at most once per
    `USE_INTERVAL` per token, in the background: a request never waits for it, and a store
    that does not answer costs a log line, not the request. Holds one entry per token that
    authenticated (tokens are few and made by operators)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._written: dict[str, float] = {}

    def note(self, token_id: str) -> None:
        now = time.monotonic()
        if now - self._written.get(token_id, float("-inf")) < USE_INTERVAL:
            return
        self._written[token_id] = now
        try:
            self._gateway.tg.start_soon(self._write, token_id, time.time())
        except RuntimeError:  # the gateway is stopping: its task group takes no more tasks
            pass

    async def _write(self, token_id: str, when: float) -> None:
        try:
            with anyio.fail_after(self._gateway.settings.store_timeout * 2):
                await identity_store.note_admin_token_use(self._gateway.engine, token_id, when)
        except Exception as exc:  # the top of a task: nothing here may end the gateway's task group
            log.warning("admin token %s: its last use was not recorded: %s", token_id, exc)


def note_use(request: Request, operator: Operator) -> None:
    """Record that `operator`'s stored token was used (see `TokenUses`)."""
    if operator.token_id is None:
        return
    state = request.app.state
    uses: TokenUses | None = getattr(state, "admin_token_uses", None)
    if uses is None:
        uses = state.admin_token_uses = TokenUses(state.gateway)
    uses.note(operator.token_id)
