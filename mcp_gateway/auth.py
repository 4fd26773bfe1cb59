"""Credentials: agent API keys and admin tokens, and who they stand for.

    agent key    mgw_<id>_<secret>     bearer on /mcp, MCP_GATEWAY_KEY for `mcp-gateway stdio`
    admin token  mgwa_<id>_<secret>    bearer on /admin/api

Only SHA-256 digests are stored; the secret is shown once, when it is made. Keys are 256
random bits, so a fast hash is enough and comparison is constant-time. A client's key is
never forwarded upstream: upstream connections carry their own configured credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping

from .identity import Principal

KEY_PREFIX = "mgw_"
ADMIN_PREFIX = "mgwa_"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(prefix: str = KEY_PREFIX) -> tuple[str, str, str]:
    """A fresh credential: (id, the full secret to show once, its digest to store)."""
    key_id = secrets.token_hex(6)
    secret = f"{prefix}{key_id}_{secrets.token_urlsafe(32)}"
    return key_id, secret, digest(secret)


def key_id_of(secret: str, prefix: str = KEY_PREFIX) -> str | None:
    if not secret.startswith(prefix):
        return None
    key_id, sep, rest = secret[len(prefix) :].partition("_")
    return key_id if sep and key_id and rest else None


def matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def any_matches(secret: str, digests: Iterable[str]) -> bool:
    """Constant-time against each configured digest (no early exit on a match)."""
    found = False
    hashed = digest(secret)
    for stored in digests:
        found |= hmac.compare_digest(hashed, stored)
    return found


def principal_for(
    secret: str, keys: Mapping[str, tuple[str, str]], principals: Mapping[str, Principal]
) -> Principal | None:
    """The principal an agent key stands for, if the key is valid and not revoked."""
    key_id = key_id_of(secret)
    entry = keys.get(key_id) if key_id is not None else None
    if entry is None or not matches(secret, entry[0]):
        return None
    return principals.get(entry[1])
