"""What checking a token ends in: its claims, or why it was refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class TokenRejected(Exception):
    """The token is not one this gateway accepts (HTTP 401 `invalid_token`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Verified:
    """A token's claims, once everything about it checked out."""

    claims: dict[str, Any]

    @property
    def expires_at(self) -> float:
        return float(self.claims["exp"])

    @property
    def scopes(self) -> frozenset[str]:
        """`scope` (a space-separated string, RFC 9068) or `scp` (Okta, Entra ID: a list or a string)."""
        scopes: set[str] = set()
        for name in ("scope", "scp"):
            value = self.claims.get(name)
            if isinstance(value, str):
                scopes.update(value.split())
            elif isinstance(value, list):
                scopes.update(v for v in value if isinstance(v, str))
        return frozenset(scopes)
