"""The gateway as an OAuth resource server on /mcp: an access token -> the principal it
stands for, or the HTTP refusal with its challenge.

    no token, or not valid        401  error="invalid_token", resource_metadata=...
    valid, lacks required_scope   403  error="insufficient_scope", scope=...
    valid, maps to no team        403  (audited: who the provider said it was, and why refused)

Checked on every request: an expired token ends a session's next request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..identity import Principal
from . import claims, metadata
from .config import OAuthSettings
from .tokens import Verifier
from .verified import TokenRejected

Refusal = tuple[int, str, list[tuple[bytes, bytes]]]
AuditRefusal = Callable[[str, str, str], Awaitable[None]]
"""(subject, issuer, reason): records a caller refused after its token was verified."""


class ResourceServer:
    def __init__(self, settings: OAuthSettings, verifier: Verifier | None = None) -> None:
        self.settings = settings
        self.verifier = verifier or Verifier(settings)

    def missing(self, hint: str) -> Refusal:
        """What a request without a bearer token gets."""
        return 401, f"Unauthorized: {hint}", [(b"www-authenticate", metadata.challenge(self.settings))]

    async def principal(self, token: str, audit: AuditRefusal, *, peer: str | None) -> Principal | Refusal:
        """Who `token` stands for, or the refusal; `peer` is the caller's address (see `Verifier.verify`)."""
        settings = self.settings
        try:
            verified = await self.verifier.verify(token, peer=peer)
        except TokenRejected as exc:
            header = metadata.challenge(settings, "invalid_token", exc.reason)
            return 401, f"Unauthorized: {exc.reason}", [(b"www-authenticate", header)]
        if settings.required_scope and settings.required_scope not in verified.scopes:
            reason = f"the token lacks the scope {settings.required_scope!r}"
            header = metadata.challenge(settings, "insufficient_scope", reason)
            return 403, f"Forbidden: {reason}", [(b"www-authenticate", header)]
        try:
            return claims.principal_of(verified, settings)
        except claims.NoTeam as exc:
            await audit(exc.subject, settings.issuer, exc.reason)
            return 403, f"Forbidden: {exc.reason}", []
