"""Dashboard sessions: an admin token exchanged for a cookie.

The token may be an admin token or, with `oauth:` configured, an operator's access token
from the identity provider (its role from the role claim; the session ends when it
expires). A login opens a session in the store (`store.dashboard_sessions`), so any replica
finds it and logging out ends it everywhere, a copy of the cookie included. The cookie
carries the session id and a key; the store holds the id's digest and the token encrypted
with that key (Fernet, the key also bound to the replicas' shared secret). The CSRF token
is derived from the key too. So neither half alone is a credential: someone who reads the
store finds no token (nor a CSRF token to forge a form with), and a cookie whose row is
gone opens nothing. The cookie stays small whatever the token's size
(an identity provider's access token can be several kilobytes). The token is checked again
on every request exactly as the REST API checks a bearer token: revoking the token, or
lowering its role, takes effect on the next page.

The cookie is `HttpOnly`, `SameSite=Strict`, scoped to `/admin`, `Secure` behind HTTPS;
forms carry the CSRF token besides, so a page elsewhere cannot act through the browser of
an operator who is logged in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from starlette.requests import Request
from starlette.responses import Response

from ..admin.common import gateway
from ..admin.operators import LOCAL_OPERATOR, Operator, by_token, local_caller, note_use, peer_of
from ..roles import Role
from ..runtime import Gateway
from ..store import dashboard_sessions as store

COOKIE = "mcp_gateway_session"
LIFETIME = 8 * 3600
"""Seconds a login lasts, however active (an operator logs in again each working day)."""
_PURPOSE = b"mcp-gateway dashboard session v2"
MAX_COOKIE = 256
"""A session cookie is two 43-character halves; anything longer is not one."""


@dataclass(frozen=True, slots=True)
class DashboardSession:
    operator: Operator
    csrf: str
    token: str | None
    """None for the local admin of an `auth: none` loopback gateway."""
    cookie: str
    """The cookie's value, so logging out can end this session."""


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _fernet(gw: Gateway, key: str) -> Fernet:
    derived = hmac.new(gw.secret, _PURPOSE + key.encode(), hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def _csrf(key: str) -> str:
    """The session's CSRF token: from the cookie's key, so the store holds none."""
    mac = hmac.new(key.encode(), _PURPOSE + b" csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def _split(value: str) -> tuple[str, str] | None:
    session_id, dot, key = value.partition(".")
    return (session_id, key) if dot and session_id and key else None


async def open_session(gw: Gateway, operator: Operator, token: str | None) -> tuple[str, str]:
    """Open `operator`'s session in the store: the cookie's value and the session's CSRF
    token. Raises what the store raises when it does not answer (the caller shows a 503)."""
    session_id, key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = time.time()
    sealed = None if token is None else _fernet(gw, key).encrypt_at_time(token.encode(), int(now)).decode()
    await store.open_session(gw.engine, _digest(session_id), operator.name, sealed, now, now + LIFETIME)
    return f"{session_id}.{key}", _csrf(key)


async def session_of(request: Request) -> DashboardSession | None:
    """The request's valid session, or None (absent, malformed, ended, expired, or its token
    no longer valid). Raises what the store raises when it does not answer."""
    raw = request.cookies.get(COOKIE)
    parts = _split(raw) if raw and len(raw) <= MAX_COOKIE else None
    if parts is None:
        return None
    session_id, key = parts
    gw = gateway(request)
    live, sealed = await store.find_session(gw.engine, _digest(session_id), time.time())
    if not live:
        return None
    if sealed is None:
        operator = Operator(LOCAL_OPERATOR, Role.admin) if local_caller(request) else None
        token = None
    else:
        try:
            token = _fernet(gw, key).decrypt(sealed.encode(), ttl=LIFETIME).decode()
        except (InvalidToken, UnicodeDecodeError):
            return None
        operator = await by_token(gw, token, peer_of(request))
    if operator is None:
        return None
    note_use(request, operator)  # as the REST API does: `last_used_at` shows dashboard use too
    return DashboardSession(operator, _csrf(key), token, raw or "")


async def end_session(gw: Gateway, session: DashboardSession) -> None:
    """Logging out: the session's row goes, so no copy of its cookie opens anything."""
    parts = _split(session.cookie)
    if parts is not None:
        await store.end_session(gw.engine, _digest(parts[0]))


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
