"""Verifying one access token: a JWT signed by the issuer with an asymmetric key, for this
resource, within its lifetime (or, when configured, an opaque token by introspection).

Order of checks: shape, algorithm (allow-list, before any key is looked at), key by `kid`,
signature, then `iss`, `aud`, `exp`, `nbf`, `iat` with `clock_skew`. Every failure is one
`TokenRejected` whose reason is safe to show the caller.

A token that passed is remembered (by its SHA-256, in a bounded table) until the key set is
next fetched: its next requests only have `exp` checked again. Checking a signature costs
about 0.25 ms here, and an agent sends the same token on every request.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence

import jwt

from .. import auth
from .config import OAuthSettings
from .introspection import Introspector
from .keys import Keys, KeyUnavailable
from .verified import TokenRejected, Verified

_REQUIRED = ["exp", "iat", "iss", "aud"]
MAX_REMEMBERED = 10_000


class Verifier:
    """Checks access tokens against one issuer's keys."""

    def __init__(self, settings: OAuthSettings, keys: Keys | None = None) -> None:
        self.settings = settings
        self.keys = keys or Keys(settings)
        self.introspector: Introspector | None = None
        if settings.introspection is not None:
            audiences = [settings.audience, *settings.token_audiences]
            self.introspector = Introspector(
                settings.introspection, settings.issuer, audiences, settings.clock_skew, settings.fetch_timeout
            )

        self._passed: OrderedDict[tuple[bytes, tuple[str, ...]], tuple[Verified, int]] = OrderedDict()
        """(token digest, audiences) -> (claims, the key set fetch they were checked against)."""

    async def aclose(self) -> None:
        await self.keys.aclose()
        if self.introspector is not None:
            await self.introspector.aclose()

    async def verify(self, token: str, audience: Sequence[str] | None = None, *, peer: str | None) -> Verified:
        """The token's claims if it is valid for `audience` (default: the configured ones).
        `peer`, the caller's address (None if the transport names none), is used only when
        an opaque token is introspected: whose share of the open questions it takes."""
        settings = self.settings
        if token.startswith((auth.KEY_PREFIX, auth.ADMIN_PREFIX)):
            # This gateway's own secret: never handed to the provider's introspection endpoint.
            raise TokenRejected("an API key or admin token of this gateway is not an access token")
        if self.introspector is not None and token.count(".") != 2:
            return await self.introspector.verify(token, list(audience) if audience else None, peer=peer)
        audiences = tuple(audience) if audience else (settings.audience, *settings.token_audiences)
        remembered = (hashlib.sha256(token.encode()).digest(), audiences)
        passed = self._passed.get(remembered)
        if passed is not None and passed[1] == self.keys.fetches:
            if passed[0].expires_at + settings.clock_skew < time.time():
                raise TokenRejected("the token has expired")
            return passed[0]
        verified = await self._check(token, audiences)
        self._passed[remembered] = (verified, self.keys.fetches)
        self._passed.move_to_end(remembered)
        while len(self._passed) > MAX_REMEMBERED:
            self._passed.popitem(last=False)
        return verified

    async def _check(self, token: str, audiences: tuple[str, ...]) -> Verified:
        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise TokenRejected("the token is not a JWT") from None
        alg = header.get("alg")
        if alg not in settings.algorithms:
            raise TokenRejected(f"the token's algorithm {str(alg)[:32]!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("the token's key id is not a string")
        try:
            jwk = await self.keys.key(kid)
        except KeyUnavailable as exc:
            raise TokenRejected(f"the token is not signed by a key of the issuer ({exc})") from None
        if jwk.alg is not None and jwk.alg != alg:
            raise TokenRejected(f"the key {kid!r} is not for {alg}")
        try:
            claims = jwt.decode(
                token,
                key=jwk.key,
                algorithms=[alg],
                audience=list(audiences),
                issuer=settings.issuer,
                leeway=settings.clock_skew,
                options={"require": _REQUIRED, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("the token is not for this resource (aud)") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("the token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("the token's signature is not valid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidKeyError:
            # A key set that names no `alg` (Entra ID's) lets a header name any accepted
            # algorithm over any key: EdDSA over an RSA key is PyJWT's InvalidKeyError, which
            # is no InvalidTokenError (it was a 500 with a traceback per made-up token).
            raise TokenRejected(f"the token's algorithm {alg!r} does not fit its key") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise TokenRejected(f"the token is not valid ({type(exc).__name__})") from None
        return Verified(claims)
