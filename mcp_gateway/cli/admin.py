"""db upgrade, keys, admin-token."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from ..roles import Role
from ..sensitive import mask_urls
from ..store import current_revision
from ..store import identity as identity_store
from ..text import escape
from .common import add_config, load_all, run_with_store, store

ROLES_HELP = (
    "Roles, each including the one below: viewer reads (status, kill switches, audit, keys, rules, "
    "policy); operator also engages and releases kill switches and reloads the policy; admin also "
    "manages teams, principals, keys, rules and admin tokens."
)


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="the store")
    db_sub = db.add_subparsers(dest="db_command", metavar="COMMAND")
    up = db_sub.add_parser("upgrade", help="migrate the store's schema to the latest revision")
    add_config(up)
    up.set_defaults(run=run_upgrade)

    keys = sub.add_parser("keys", help="agent API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND")
    create = keys_sub.add_parser("create", help="create a key for TEAM/NAME (created if needed); prints it once")
    add_config(create)
    create.add_argument("--team", required=True, help="the principal's team (lowercase letters, digits, '_', '-')")
    create.add_argument("--name", required=True, help="the principal's name within the team")
    create.add_argument(
        "--kind",
        choices=["agent", "person"],
        default="agent",
        help="what the principal is: %(choices)s (default agent)",
    )
    create.set_defaults(run=run_keys_create)
    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    add_config(listing)
    listing.add_argument("--principal", help="only this principal's keys (TEAM/NAME)")
    listing.set_defaults(run=run_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    add_config(revoke)
    revoke.add_argument("id", help="the key's id, as `keys list` and `keys create` print it")
    revoke.set_defaults(run=run_keys_revoke)

    token = sub.add_parser("admin-token", help="admin API tokens")
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND")
    make = token_sub.add_parser(
        "create", help="create an admin token with a role; prints it once", description=ROLES_HELP
    )
    add_config(make)
    make.add_argument("--name", required=True, help="who or what holds it (recorded as the actor)")
    make.add_argument(
        "--role",
        choices=[r.value for r in Role],
        help="what it may do: %(choices)s (default admin, as before roles existed; give it explicitly)",
    )
    make.set_defaults(run=run_token_create)
    tokens = token_sub.add_parser(
        "list", help="list admin tokens: id, name, role, created, last used, revoked (never secrets)"
    )
    add_config(tokens)
    tokens.set_defaults(run=run_token_list)
    withdraw = token_sub.add_parser("revoke", help="revoke an admin token by id (every replica refuses it)")
    add_config(withdraw)
    withdraw.add_argument("id", help="the token's id, as `admin-token list` and `admin-token create` print it")
    withdraw.set_defaults(run=run_token_revoke)


def run_upgrade(args: argparse.Namespace) -> int:
    _, settings = load_all(args)

    async def main() -> None:
        async with store(settings) as engine:
            print(f"{mask_urls(settings.database_url or '')}: at revision {await current_revision(engine)}")

    run_with_store(settings, main)
    return 0


def run_keys_create(args: argparse.Namespace) -> int:
    from ..admin.identity import make_key

    _, settings = load_all(args)

    async def main() -> dict[str, str]:
        async with store(settings) as engine:
            return await make_key(engine, args.team, args.name, args.kind)

    created = run_with_store(settings, main)
    print(f"created key {created['id']} for {created['principal']} (shown once, store it now):", file=sys.stderr)
    print(created["key"])
    return 0


def run_keys_list(args: argparse.Namespace) -> int:
    _, settings = load_all(args)

    async def main() -> list[dict[str, Any]]:
        async with store(settings) as engine:
            return await identity_store.list_keys(engine, args.principal)

    for key in run_with_store(settings, main):
        state = "revoked" if key["revoked_at"] else "active"
        print(f"{escape(key['id'])}  {escape(key['principal_id'])}  {state}")
    return 0


def run_keys_revoke(args: argparse.Namespace) -> int:
    _, settings = load_all(args)

    async def main() -> None:
        async with store(settings) as engine:
            await identity_store.revoke_key(engine, args.id)

    try:
        run_with_store(settings, main)
    except identity_store.NotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"revoked {args.id}")
    return 0


def run_token_create(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..admin.models import NewAdminToken
    from ..admin.tokens import NameTaken, make_admin_token

    role = args.role
    if role is None:
        role = Role.admin.value
        print(
            "note: no --role given, so this token is an admin (full rights, as every token was before "
            "roles); give --role viewer|operator|admin explicitly, a later version will require it",
            file=sys.stderr,
        )
    try:
        spec = NewAdminToken(name=args.name, role=role)
    except ValidationError:
        print(
            f"error: --name {escape(args.name)!r}: letters, digits and '_', '.', '@', '-', "
            "starting with a letter or digit, at most 128 characters",
            file=sys.stderr,
        )
        return 2
    _, settings = load_all(args)

    async def main() -> dict[str, object]:
        async with store(settings) as engine:
            return await make_admin_token(engine, spec.name, spec.role)

    try:
        created = run_with_store(settings, main)
    except NameTaken as exc:
        print(f"error: {escape(str(exc))}", file=sys.stderr)
        return 1
    print(
        f"created admin token {created['id']} for {spec.name}, role {spec.role} (shown once, store it now):",
        file=sys.stderr,
    )
    print(created["token"])
    return 0


def run_token_list(args: argparse.Namespace) -> int:
    _, settings = load_all(args)

    async def main() -> list[dict[str, Any]]:
        async with store(settings) as engine:
            return await identity_store.list_admin_tokens(engine)

    rows = run_with_store(settings, main)
    if settings.admin_token is not None:
        print("(the admin_token setting is an admin token too: name admin-token, role admin)", file=sys.stderr)
    for row in rows:
        revoked = f"revoked {_when(row['revoked_at'])}" if row["revoked_at"] else "active"
        created = f"created {_when(row['created_at'])}"
        used = f"last used {_when(row['last_used_at'])}" if row["last_used_at"] else "never used"
        print(f"{escape(row['id'])}  {escape(row['name'])}  {escape(row['role'])}  {created}  {used}  {revoked}")
    return 0


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def run_token_revoke(args: argparse.Namespace) -> int:
    _, settings = load_all(args)

    async def main() -> None:
        async with store(settings) as engine:
            await identity_store.revoke_admin_token(engine, args.id)

    try:
        run_with_store(settings, main)
    except identity_store.NotFound as exc:
        print(f"error: {escape(str(exc))}", file=sys.stderr)
        return 1
    print(f"revoked admin token {escape(args.id)}")
    return 0
