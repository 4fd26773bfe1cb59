"""Dashboard sessions: an admin token exchanged for a cookie.

The token may be an admin token or, with `oauth:` configured, an operator's access token
from the identity provider (its role from the role claim; the session ends when it
expires). The cookie holds the token itself, encrypted and authenticated (Fernet, with a key derived
from the replicas' shared secret, so any replica can read it), with the time it was issued
and a CSRF token. Nothing is kept server-side, and the token is checked again on every
request exactly as the REST API checks a bearer token: revoking the token, or lowering its
role, takes effect on the next page. Someone who can read the store but holds no token
cannot make a session (the cookie must carry a token whose digest the store holds).

The cookie is `HttpOnly`, `SameSite=Strict`, scoped to `/admin`, `Secure` behind HTTPS;
forms carry the CSRF token besides, so a page elsewhere cannot act through the browser of
an operator who is logged in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from starlette.requests import Request
from starlette.responses import Response

from ..admin.common import gateway
from ..admin.operators import LOCAL_OPERATOR, Operator, by_token, local_caller, note_use
from ..roles import Role
from ..runtime import Gateway

COOKIE = "mcp_gateway_session"
LIFETIME = 8 * 3600
"""Seconds a login lasts, however active (an operator logs in again each working day)."""
_PURPOSE = b"mcp-gateway dashboard session v1"
MAX_COOKIE = 4096


@dataclass(frozen=True, slots=True)
class DashboardSession:
    operator: Operator
    csrf: str
    token: str | None
    """None for the local admin of an `auth: none` loopback gateway."""


def _fernet(gw: Gateway) -> Fernet:
    key = hmac.new(gw.secret, _PURPOSE, hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def seal(gw: Gateway, token: str | None) -> tuple[str, str]:
    """A new session's cookie value and its CSRF token."""
    csrf = secrets.token_urlsafe(24)
    payload = json.dumps({"t": token, "c": csrf}).encode()
    return _fernet(gw).encrypt_at_time(payload, int(time.time())).decode(), csrf


async def session_of(request: Request) -> DashboardSession | None:
    """The request's valid session, or None (absent, tampered with, expired, or its token no
    longer valid)."""
    raw = request.cookies.get(COOKIE)
    if not raw or len(raw) > MAX_COOKIE:
        return None
    gw = gateway(request)
    try:
        data = json.loads(_fernet(gw).decrypt(raw.encode(), ttl=LIFETIME))
        token, csrf = data["t"], data["c"]
    except (InvalidToken, ValueError, KeyError, TypeError):
        return None
    if not isinstance(csrf, str) or not (token is None or isinstance(token, str)):
        return None
    if token is None:
        operator = Operator(LOCAL_OPERATOR, Role.admin) if local_caller(request) else None
    else:
        operator = await by_token(gw, token)
    if operator is None:
        return None
    note_use(request, operator)  # as the REST API does: `last_used_at` shows dashboard use too
    return DashboardSession(operator, csrf, token)


def csrf_ok(session: DashboardSession, sent: object) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), session.csrf.encode())


def set_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=LIFETIME,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=over_https(request),
    )


def over_https(request: Request) -> bool:
    """Whether the browser reached the dashboard over HTTPS: directly, or through a proxy
    that ended TLS (the gateway reads no proxy headers, so it sees http then) and says so
    in `X-Forwarded-Proto`, or as the form's `Origin` shows. A caller can only make its own
    cookie stricter with these, so they need no trust."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    origin = request.headers.get("origin", "").lower()
    return request.url.scheme == "https" or forwarded == "https" or origin.startswith("https://")


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/admin")
