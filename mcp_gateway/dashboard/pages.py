"""The dashboard's page, its live parts, and its actions.

One page (`GET /admin`) shows every part; the browser refreshes each part every two
seconds from `GET /admin/part/<name>` (the same template, rendered alone), so the in-flight
calls and the audit log stay live without a front-end build. Forms post plain HTML forms;
each action goes through the REST route's own function (audited first, then applied) after
the session's role and CSRF token are checked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import jinja2
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..admin.common import gateway
from ..admin.models import EngageSwitch, ReleaseSwitch
from ..admin.operators import LOCAL_OPERATOR, Operator, by_token, local_caller, peer_of
from ..admin.policy import reload_policy
from ..admin.switches import engage_switch, release_switch
from ..errors import ApiError, AuditUnavailable
from ..roles import Role
from ..store import audit as audit_store
from ..store import identity as identity_store
from ..store import rules as rule_store
from ..store import switches as switch_store
from . import login
from .login import DashboardSession

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_env.filters["when"] = lambda ts: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else ""

PARTS = ("upstreams", "inflight", "switches", "audit", "policy", "identity")
AUDIT_FILTERS = ("team", "principal", "server", "tool", "decision", "kind")
AUDIT_ROWS = 50
MAX_FORM = 16 * 1024
"""A dashboard form is a few short fields; a larger body is refused unread."""


def _render(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(template).render(**context), status_code=status)


def _filters(request: Request) -> dict[str, str]:
    return {
        name: value[:200]
        for name in AUDIT_FILTERS
        if (value := request.query_params.get(name, "").strip()) and value.isprintable()
    }


async def _part(request: Request, name: str, session: DashboardSession) -> dict[str, Any]:
    """What one part shows, read now."""
    gw = gateway(request)
    if name == "upstreams":
        return {
            "upstreams": [
                {**u.status(), "tool_names": sorted(str(t.get("name", "")) for t in u.catalog.tools)}
                for u in gw.upstreams.values()
            ]
        }
    if name == "inflight":
        now = time.time()
        return {
            "flights": [
                {"principal": f.principal.id, "team": f.principal.team, "target": f.target, "age": now - f.started}
                for f in gw.governance.inflight.flights()
            ]
        }
    if name == "switches":
        return {"switches": await switch_store.listing(gw.engine)}
    if name == "audit":
        filters = audit_store.Filters(**_filters(request))  # type: ignore[arg-type]
        return {"rows": await audit_store.query(gw.engine, filters, limit=AUDIT_ROWS)}
    if name == "policy":
        return {
            "policy_version": gw.snapshots.current.policy.policy_version,
            "history": await rule_store.policy_history(gw.engine, limit=5),
            "reload": gw.policy_reload_status(),
            "stale": gw.snapshots.stale(),
        }
    return {
        "principals": await identity_store.list_principals(gw.engine),
        "api_keys": await identity_store.list_keys(gw.engine),
    }


async def _page(
    request: Request, session: DashboardSession, *, status: int = 200, notice: str | None = None
) -> Response:
    parts = {name: await _part(request, name, session) for name in PARTS}
    return _render(
        "index.html",
        status,
        session=session,
        can_act=session.operator.role.allows(Role.operator),
        parts=parts,
        filters=_filters(request),
        notice=notice,
        scopes=("global", "team", "principal", "server", "tool"),
    )


def _to_login() -> Response:
    return RedirectResponse("/admin/login", status_code=303)


async def index(request: Request) -> Response:
    session = await login.session_of(request)
    if session is None:
        if not local_caller(request):
            return _to_login()
        # The local admin of an `auth: none` loopback gateway needs no token, but still a
        # session: its CSRF token is what keeps other sites' pages from acting through it.
        operator = Operator(LOCAL_OPERATOR, Role.admin)
        value, csrf = await login.open_session(gateway(request), operator, None)
        session = DashboardSession(operator, csrf, None, value)
        response = await _page(request, session)
        login.set_cookie(response, request, value)
        return response
    return await _page(request, session)


async def part(request: Request) -> Response:
    session = await login.session_of(request)
    name = request.path_params["name"]
    if session is None:
        return HTMLResponse("", status_code=401)
    if name not in PARTS:
        return HTMLResponse("", status_code=404)
    return _render(
        f"_{name}.html",
        session=session,
        can_act=session.operator.role.allows(Role.operator),
        filters=_filters(request),
        part=await _part(request, name, session),
    )


async def login_form(request: Request) -> Response:
    # The local admin of an `auth: none` loopback gateway has no token to type: its page
    # opens a new session (after a logout, or eight hours, it lands here).
    if local_caller(request) or await login.session_of(request) is not None:
        return RedirectResponse("/admin", status_code=303)
    return _render("login.html", error=None)


async def _form(request: Request) -> dict[str, str] | None:
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > MAX_FORM:
        return None
    form = await request.form(max_files=0, max_fields=32)
    return {k: v for k, v in form.items() if isinstance(v, str)}


LOG_INTERVAL = 60.0
"""Seconds between two log lines about one kind of thing anyone can make happen."""


class Occasional:
    """A WARNING about something anyone can cause at will (a refused login; a request the
    store did not answer, during an outage), logged at once and then at most once per
    `LOG_INTERVAL` with how many there were: a line each would let an unauthenticated
    caller write the log as fast as it can send, and every open tab asks for six parts
    every two seconds."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.unlogged = 0
        self.logged_at = float("-inf")

    def note(self, latest: str) -> None:
        self.unlogged += 1
        now = time.monotonic()
        if now - self.logged_at < LOG_INTERVAL:
            return
        log.warning(
            "dashboard: %d %s, the latest %s (one such line a minute at most)", self.unlogged, self.what, latest
        )
        self.unlogged, self.logged_at = 0, now


def _occasional(request: Request, what: str) -> Occasional:
    """This app's counter of `what`."""
    counters: dict[str, Occasional] | None = getattr(request.app.state, "dashboard_occasional", None)
    if counters is None:
        counters = request.app.state.dashboard_occasional = {}
    return counters.setdefault(what, Occasional(what))


async def login_submit(request: Request) -> Response:
    form = await _form(request)
    token = (form or {}).get("token", "").strip()
    gw = gateway(request)
    peer = peer_of(request)
    operator = await by_token(gw, token, peer) if token else None
    if operator is None:
        _occasional(request, "login(s) refused (not a valid admin token)").note(f"from {peer or '?'}")
        return _render("login.html", 401, error="That is not a valid admin token.")
    value, _ = await login.open_session(gw, operator, token)
    response = RedirectResponse("/admin", status_code=303)
    login.set_cookie(response, request, value)
    return response


async def _acting(request: Request, needed: Role, what: str) -> tuple[DashboardSession, dict[str, str]] | Response:
    """The session and form of an action, or the page that refuses it."""
    session = await login.session_of(request)
    if session is None:
        return _to_login()
    form = await _form(request)
    if form is None or not login.csrf_ok(session, form.get("csrf")):
        return _render("refused.html", 403, message="The form was stale or did not come from this dashboard.")
    if not session.operator.role.allows(needed):
        operator = session.operator
        await gateway(request).governance.audit_admin_refusal(
            operator.name, operator.role, f"dashboard: {what} needs {needed}"
        )
        return _render(
            "refused.html",
            403,
            message=f"Your role, {session.operator.role.value}, cannot {what}: that needs {needed.value}.",
        )
    if any("\x00" in value for value in form.values()):
        # As the REST API's `body` refuses them: a NUL reaching the audit row (written first)
        # fails its whole group commit on PostgreSQL, and the row saying who did it is lost.
        return _render("refused.html", 400, message="A field held a NUL character: nothing was done.")
    return session, form


async def _done(request: Request, session: DashboardSession, action: Any) -> Response:
    """Run an action; back to the page on success, the page with the reason otherwise."""
    try:
        await action
    except ApiError as exc:
        return await _page(request, session, status=exc.status, notice=exc.message)
    except AuditUnavailable:
        return await _page(request, session, status=503, notice="Not done: its audit record could not be written.")
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("dashboard: the store did not answer: %s", exc)
        return await _page(request, session, status=503, notice="Not done: the store did not answer in time.")
    return RedirectResponse("/admin", status_code=303)


async def engage(request: Request) -> Response:
    acting = await _acting(request, Role.operator, "engage kill switches")
    if isinstance(acting, Response):
        return acting
    session, form = acting
    fields: dict[str, Any] = {k: v.strip() for k, v in form.items() if k != "csrf" and v.strip()}
    if "expires_in_minutes" in fields:
        minutes = fields.pop("expires_in_minutes")
        try:
            fields["expires_in_seconds"] = float(minutes) * 60
        except ValueError:
            return await _page(request, session, status=400, notice="Expires in: a number of minutes.")
    try:
        spec = EngageSwitch.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "form"
        return await _page(request, session, status=400, notice=f"{where}: {first['msg']}")
    return await _done(request, session, engage_switch(gateway(request), session.operator, spec))


async def release(request: Request) -> Response:
    acting = await _acting(request, Role.operator, "release kill switches")
    if isinstance(acting, Response):
        return acting
    session, form = acting
    try:
        spec = ReleaseSwitch(reason=form.get("reason", "").strip() or "released from the dashboard")
    except ValidationError as exc:
        return await _page(request, session, status=400, notice=f"reason: {exc.errors(include_url=False)[0]['msg']}")
    reason = spec.reason
    switch_id = request.path_params["id"][:64]
    return await _done(request, session, release_switch(gateway(request), session.operator, switch_id, reason))


async def reload(request: Request) -> Response:
    acting = await _acting(request, Role.operator, "reload the policy")
    if isinstance(acting, Response):
        return acting
    session, _ = acting

    async def reload_now() -> None:
        result = await reload_policy(gateway(request), session.operator)
        if result["error"]:
            raise ApiError(422, "invalid_policy", "The policy directory is invalid; the live policy stays.")

    return await _done(request, session, reload_now())


async def logout(request: Request) -> Response:
    session = await login.session_of(request)
    form = await _form(request)
    if session is not None and (form is None or not login.csrf_ok(session, form.get("csrf"))):
        return _render("refused.html", 403, message="The form was stale or did not come from this dashboard.")
    if session is not None:
        await login.end_session(gateway(request), session)
    response = _to_login()
    login.clear_cookie(response)
    return response


SECURITY_HEADERS = {
    # Nothing from elsewhere, no framing (a framed page could be clicked through by another
    # site), forms post only here, pages holding audit rows are not cached nor named to other
    # sites (`same-origin`, not `no-referrer`: with that, forms would send `Origin: null`, which
    # the Host and Origin check rightly refuses).
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

STORE_TIMEOUTS = 3
"""A page, part or login form answers within this many `store_timeout`s: its session and its
parts are a few store reads, each bounded, but waiting for one of the pool's connections is
not (SQLAlchemy waits 30 s), and during a partition a few open tabs (six parts every two
seconds) hold every connection until their own reads give up. Only reads are cut short:
an action is left to its own bounds, so a slow but healthy one (a large policy reload) is
not stopped halfway."""


def _guarded(
    endpoint: Callable[[Request], Awaitable[Response]], role: Role | None, reads: bool
) -> Callable[[Request], Awaitable[Response]]:
    async def guarded(request: Request) -> Response:
        bound = gateway(request).settings.store_timeout * STORE_TIMEOUTS if reads else None
        try:
            with anyio.fail_after(bound):
                response = await endpoint(request)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            # Sessions live in the store: without it no page can say who is asking.
            _occasional(request, "request(s) the store did not answer").note(type(exc).__name__)
            response = _render("refused.html", 503, message="The store did not answer in time: try again shortly.")
        response.headers.update(SECURITY_HEADERS)
        return response

    guarded.session_role = role  # type: ignore[attr-defined]
    return guarded


def session_role(endpoint: object) -> Role | None:
    """The least role a dashboard route serves (None: the login form, open to all)."""
    role = getattr(endpoint, "session_role", None)
    return role if isinstance(role, Role) else None


def dashboard_routes() -> list[BaseRoute]:
    """Each page and action with the least role it serves (checked from the session: the page
    and its parts by `session_of`, which any valid role passes; actions by `_acting`)."""
    pages: list[tuple[str, Callable[[Request], Awaitable[Response]], str, Role | None]] = [
        ("/admin", index, "GET", Role.viewer),
        ("/admin/login", login_form, "GET", None),
        ("/admin/login", login_submit, "POST", None),
        ("/admin/logout", logout, "POST", Role.viewer),
        ("/admin/part/{name}", part, "GET", Role.viewer),
        ("/admin/kill-switches", engage, "POST", Role.operator),
        ("/admin/kill-switches/{id}/release", release, "POST", Role.operator),
        ("/admin/policy/reload", reload, "POST", Role.operator),
    ]
    routes: list[BaseRoute] = [
        Route(path, _guarded(handler, role, method == "GET"), methods=[method]) for path, handler, method, role in pages
    ]
    routes.append(Mount("/admin/static", StaticFiles(directory=HERE / "static"), name="dashboard-static"))
    return routes
