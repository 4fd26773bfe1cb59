"""kill: engage a kill switch on the running gateway, through its admin API.

Through the API, not the store: the gateway audits the action, applies it at once (calls
in flight end) and checks that the server or tool it names exists, which a write to the
store could do none of.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from .common import add_config, load_all

EXIT_FAILED = 1
EXIT_UNAVAILABLE = 3
TIMEOUT = 30.0


def register(sub: Any) -> None:
    kill = sub.add_parser(
        "kill",
        help="engage a kill switch on the running gateway (its admin API): a server, a tool, a team, "
        "a principal or everything",
    )
    add_config(kill)
    target = kill.add_mutually_exclusive_group(required=True)
    target.add_argument("--server", help="stop this upstream (with --tool: only that tool of it)")
    target.add_argument("--team", help="stop this team")
    target.add_argument("--principal", help="stop this principal (TEAM/NAME)")
    target.add_argument("--global", dest="everything", action="store_true", help="stop everything")
    kill.add_argument("--tool", help="with --server: the tool's name on that upstream")
    kill.add_argument("--reason", required=True, help="why (recorded with the switch and in the audit)")
    kill.add_argument("--expires-in", dest="expires_in", type=float, metavar="SECONDS", help="release it after this")
    kill.add_argument(
        "--allow-unknown",
        action="store_true",
        help="engage it though the server or tool is not configured (yet); without this, a name the "
        "gateway does not have is refused",
    )
    kill.add_argument(
        "--url",
        help="the gateway's base URL (default: http://HOST:PORT from the config); the admin token is "
        "$MCP_GATEWAY_ADMIN_TOKEN or the config's admin_token",
    )
    kill.set_defaults(run=run_kill)


def _switch(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"reason": args.reason}
    if args.server:
        body.update(scope="tool" if args.tool else "server", server=args.server)
        if args.tool:
            body["tool"] = args.tool
    elif args.team:
        body.update(scope="team", team=args.team)
    elif args.principal:
        body.update(scope="principal", principal=args.principal)
    else:
        body["scope"] = "global"
    if args.expires_in is not None:
        body["expires_in_seconds"] = args.expires_in
    if args.allow_unknown:
        body["unconfigured"] = True
    return body


def run_kill(args: argparse.Namespace) -> int:
    if args.tool and not args.server:
        print("error: --tool needs --server (the upstream the tool belongs to)", file=sys.stderr)
        return 2
    _, settings = load_all(args)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = (args.url or f"http://{host}:{settings.port}").rstrip("/")
    token = os.environ.get("MCP_GATEWAY_ADMIN_TOKEN") or (
        settings.admin_token.get_secret_value() if settings.admin_token is not None else None
    )
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"{base}/admin/api/kill-switches", data=json.dumps(_switch(args)).encode(), headers=headers, method="POST"
    )
    # No proxy from the environment and no redirect: the admin token goes to the gateway
    # and nowhere else (urllib would resend it to wherever a redirect points, as a GET
    # whose answer would then read as the switch engaged).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            row = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        print(f"error: {_message(exc)}", file=sys.stderr)
        return EXIT_UNAVAILABLE if exc.code >= 500 else EXIT_FAILED
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"error: the gateway's admin API at {base} cannot be reached: {reason}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if not isinstance(row, dict) or "id" not in row or "scope" not in row:
        print(f"error: {base} answered, but not with a kill switch: is it the gateway's admin API?", file=sys.stderr)
        return EXIT_FAILED
    if row.get("warning"):
        print(f"warning: {row['warning']}", file=sys.stderr)
    target = f" {row['target']!r}" if row.get("target") else ""
    print(f"engaged {row['id']}: {row['scope']}{target}")
    return 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the error it is here (`HTTPError` with its 3xx status)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _message(exc: urllib.error.HTTPError) -> str:
    """The admin API's error message (one line), or the HTTP status if it sent none."""
    try:
        error = json.loads(exc.read())["error"]
        return f"{error['message']} ({exc.code} {error['code']})"
    except (ValueError, KeyError, TypeError):
        return f"the admin API answered {exc.code} {exc.reason}"
