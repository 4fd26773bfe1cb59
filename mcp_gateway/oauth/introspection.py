"""Opaque access tokens, checked by asking the issuer (RFC 7662 token introspection).

Used only for a token that is not a JWT, and only when `oauth.introspection` is configured.
Answers are cached by the token's SHA-256 for `cache_seconds` (never past the token's `exp`),
in bounded tables (refusals apart, so made-up tokens cannot push out real answers); at
most `max_concurrent` questions are open at once, at most `max_concurrent_per_client` of
them from one client address (shares.py), and a token beyond either is refused at once, so
made-up tokens cannot turn the gateway into a load on the identity provider, nor one peer's
made-up tokens keep everyone else's new ones out. Each question is bounded by
`fetch_timeout`: no answer, no access.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any, Self

import anyio
import httpx2
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from .shares import Shares
from .verified import TokenRejected, Verified

MAX_CACHED = 10_000
MAX_ANSWER_BYTES = 64 * 1024


class IntrospectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(pattern=r"^https?://")
    """The issuer's introspection endpoint (Okta: `<issuer>/v1/introspect`; Keycloak:
    `<issuer>/protocol/openid-connect/token/introspect`)."""
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    """The gateway's own client credentials at the issuer: a reference ({$env: NAME}) in the file."""
    cache_seconds: float = Field(default=10.0, ge=0, le=300)
    """How long an answer is reused: a token revoked at the provider is refused within this."""
    max_concurrent: int = Field(default=16, gt=0, le=1024)
    """Questions open at once; a token past them is refused at once (401)."""
    max_concurrent_per_client: int | None = Field(default=None, gt=0, le=1024)
    """Of those, how many one client address (an IPv6 /64) may hold: default a quarter of
    `max_concurrent`, at least 1, so one peer's made-up tokens leave the rest to others."""

    @model_validator(mode="after")
    def _share_within_total(self) -> Self:
        each = self.max_concurrent_per_client
        if each is not None and each > self.max_concurrent:
            raise ValueError(f"max_concurrent_per_client ({each}) is more than max_concurrent ({self.max_concurrent})")
        return self

    @property
    def per_client(self) -> int:
        return self.max_concurrent_per_client or max(1, self.max_concurrent // 4)


class Introspector:
    def __init__(
        self, settings: IntrospectionSettings, issuer: str, audiences: list[str], skew: float, timeout: float
    ) -> None:
        self.settings = settings
        self.issuer, self.audiences, self.skew, self.timeout = issuer, audiences, skew, timeout
        self._client = httpx2.AsyncClient(follow_redirects=False)
        self._cache: OrderedDict[str, tuple[float, Verified | str]] = OrderedDict()
        self._refused: OrderedDict[str, tuple[float, Verified | str]] = OrderedDict()
        self.shares = Shares(settings.max_concurrent, settings.per_client)
        self.asked = 0
        """How many questions were sent to the issuer (for tests)."""

    async def aclose(self) -> None:
        await self._client.aclose()

    async def verify(self, token: str, audiences: list[str] | None = None, *, peer: str | None) -> Verified:
        """The token's claims; `peer` (the caller's address, None if unknown) is whose share
        of the open questions it counts against, should the provider be asked."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is None or cached[0] <= now:
            cached = self._refused.get(key)
        if cached is not None and cached[0] > now:
            answer = cached[1]
        else:
            answer = await self._ask(token, peer)
            until = now + self.settings.cache_seconds
            if isinstance(answer, Verified):
                until = min(until, now + answer.expires_at - time.time())
            # Refusals in a table of their own: made-up tokens cost nothing to send, and
            # must not push out the answers for real ones (which would then be asked about
            # again, competing with the flood for `max_concurrent`).
            self._cache.pop(key, None)
            self._refused.pop(key, None)
            table = self._cache if isinstance(answer, Verified) else self._refused
            table[key] = (until, answer)
            table.move_to_end(key)
            while len(table) > MAX_CACHED:
                table.popitem(last=False)
        if isinstance(answer, str):
            raise TokenRejected(answer)
        self._check_audience(answer, audiences or self.audiences)
        return answer

    def _check_audience(self, verified: Verified, audiences: list[str]) -> None:
        aud = verified.claims.get("aud")
        held = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
        if not held & set(audiences):
            raise TokenRejected("the token is not for this resource (aud)")

    async def _ask(self, token: str, peer: str | None) -> Verified | str:
        """The token's claims if the issuer says it is active and it holds, else why not.
        Refused before the provider is asked when no slot is free for `peer` (not cached:
        the same token may pass once the flood is over)."""
        with self.shares.slot(peer):
            self.asked += 1
            return await self._question(token)

    async def _question(self, token: str) -> Verified | str:
        try:
            with anyio.fail_after(self.timeout):
                response = await self._client.post(
                    self.settings.endpoint,
                    data={"token": token, "token_type_hint": "access_token"},
                    auth=(self.settings.client_id, self.settings.client_secret.get_secret_value()),
                    headers={"accept": "application/json"},
                )
            if response.status_code != 200 or len(response.content) > MAX_ANSWER_BYTES:
                raise TokenRejected(f"the identity provider could not check the token ({response.status_code})")
            claims: Any = orjson.loads(response.content)
        except (TimeoutError, httpx2.HTTPError, OSError, orjson.JSONDecodeError):
            raise TokenRejected("the identity provider could not be asked about the token") from None
        return self._judge(claims)

    def _judge(self, claims: Any) -> Verified | str:
        if not isinstance(claims, dict) or claims.get("active") is not True:
            return "the token is not active"
        if claims.get("iss", self.issuer) != self.issuer:
            return "the token is from another issuer"
        exp, now = claims.get("exp"), time.time()
        if not isinstance(exp, int | float) or exp + self.skew < now:
            return "the token has expired"
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf - self.skew > now:
            return "the token is not valid yet"
        return Verified(claims)
