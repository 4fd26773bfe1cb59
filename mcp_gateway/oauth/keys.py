"""The issuer's signing keys: discovery document -> `jwks_uri` -> JWKS, cached by `kid`.

A token whose `kid` is not cached refetches the set (the issuer rotated its keys), at most
once per `jwks_min_refresh_interval`, one fetch at a time: a flood of tokens with made-up
kids costs the identity provider one request per interval, and each of those tokens is
refused at once meanwhile. Every fetch is bounded by `fetch_timeout`; a token whose key is
not cached when the provider cannot be reached is refused within that bound (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import orjson
from jwt import PyJWK
from jwt.exceptions import InvalidKeyError, PyJWKError

from .config import OAuthSettings

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 1024 * 1024
"""A discovery document or key set larger than this is refused (they are a few KiB)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    key: Any
    """The public key, as `cryptography` holds it."""
    alg: str | None
    """The algorithm the key set declares for it, if any (a token must then use that one)."""


class KeyUnavailable(Exception):
    """No key to verify a token with: unknown `kid`, or the keys could not be fetched."""


class Keys:
    """The cached key set of one issuer."""

    def __init__(self, settings: OAuthSettings, client: httpx2.AsyncClient | None = None) -> None:
        self.settings = settings
        self._client = client or httpx2.AsyncClient(follow_redirects=False)
        self._keys: dict[str, SigningKey] = {}
        self._unnamed: list[SigningKey] = []
        self._fetched_at = -float("inf")
        self._attempted_at = -float("inf")
        self._jwks_uri = settings.jwks_uri
        self._lock = asyncio.Lock()
        self.fetches = 0
        """How many times the key set was fetched (for tests and the status page)."""

    async def aclose(self) -> None:
        await self._client.aclose()

    async def key(self, kid: str | None) -> SigningKey:
        """The key named `kid` (a token without one: the only key of the set)."""
        found = self._cached(kid)
        stale = time.monotonic() - self._fetched_at > self.settings.jwks_max_age
        if found is not None and not stale:
            return found
        await self._refresh()
        found = self._cached(kid)
        if found is None:
            raise KeyUnavailable(f"no key {kid[:64]!r} in the issuer's key set" if kid else "the token names no key")
        return found

    def _cached(self, kid: str | None) -> SigningKey | None:
        if kid is not None:
            return self._keys.get(kid)
        everything = [*self._keys.values(), *self._unnamed]
        return everything[0] if len(everything) == 1 else None

    async def _refresh(self) -> None:
        """Refetch the key set, unless one was tried within the minimum interval."""
        before = self._attempted_at
        async with self._lock:
            if self._attempted_at != before:
                return  # another request fetched while this one waited: use its result
            if time.monotonic() - self._attempted_at < self.settings.jwks_min_refresh_interval:
                return
            self._attempted_at = time.monotonic()
            try:
                with anyio.fail_after(self.settings.fetch_timeout):
                    keys, unnamed = await self._fetch()
            except (TimeoutError, httpx2.HTTPError, OSError, ValueError) as exc:
                log.warning("oauth: no keys from %s: %s", self.settings.issuer, exc or type(exc).__name__)
                return  # the cached keys (if any) stay; a token needing another is refused
            self._keys, self._unnamed = keys, unnamed
            self._fetched_at = time.monotonic()
            self.fetches += 1

    async def _fetch(self) -> tuple[dict[str, SigningKey], list[SigningKey]]:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        document = await self._get(self._jwks_uri)
        keys: dict[str, SigningKey] = {}
        unnamed: list[SigningKey] = []
        for jwk in document.get("keys", []) if isinstance(document.get("keys"), list) else []:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                key = SigningKey(PyJWK(jwk).key, jwk.get("alg") if isinstance(jwk.get("alg"), str) else None)
            except (PyJWKError, InvalidKeyError):
                continue  # a key type this gateway cannot use (e.g. an encryption key)
            if isinstance(jwk.get("kid"), str):
                keys[jwk["kid"]] = key
            else:
                unnamed.append(key)
        return keys, unnamed

    async def _discover(self) -> str:
        issuer = self.settings.issuer.rstrip("/")
        problems = []
        for suffix in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
            try:
                document = await self._get(issuer + suffix)
            except (httpx2.HTTPError, ValueError) as exc:
                problems.append(f"{suffix}: {exc}")
                continue
            if document.get("issuer") != self.settings.issuer:
                raise ValueError(f"the discovery document names issuer {document.get('issuer')!r}")
            uri = document.get("jwks_uri")
            if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                raise ValueError("the discovery document has no jwks_uri")
            return uri
        raise ValueError("no discovery document: " + "; ".join(problems))

    async def _get(self, url: str) -> dict[str, Any]:
        async with self._client.stream("GET", url, headers={"accept": "application/json"}) as response:
            if response.status_code != 200:
                raise ValueError(f"{url} answered {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ValueError(f"{url}: larger than {MAX_DOCUMENT_BYTES} bytes")
        document = orjson.loads(body)
        if not isinstance(document, dict):
            raise ValueError(f"{url}: not a JSON object")
        return document
