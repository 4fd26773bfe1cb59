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
from ..roles import Role
from ..runtime import Gateway
from ..store import identity as identity_store

log = logging.getLogger(__name__)

CONFIGURED = "admin-token"
"""The actor name of the `admin_token` setting."""
LOCAL = "local-admin"
"""The actor name of a loopback caller of an `auth: none` gateway with no admin token."""


@dataclass(frozen=True)
class Operator:
    name: str
    """Recorded as the actor of what it does."""
    role: Role
    token_id: str | None = None
    """The stored admin token it presented (None for the `admin_token` setting and `local-admin`)."""


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
        return Operator(entry.name, entry.role, token_id)
    return None


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
