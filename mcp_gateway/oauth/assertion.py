"""The caller's identity for an upstream that wants it: a short-lived JWT the gateway signs
with its own key, in a header the operator names per upstream (`identity_header`). Never the
caller's own token (no passthrough): the tool server trusts the gateway, checks the signature
against the gateway's published keys (`/.well-known/jwks.json`), and learns who is calling.

    {"iss": <gateway>, "aud": <upstream name>, "sub": <principal id>, "team": ..., "kind": ...,
     "idp_sub": <IdP sub>, "idp_iss": <IdP issuer>, "iat": ..., "exp": iat + 60, "jti": ...}
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ..identity import Principal

LIFETIME = 60.0
"""Seconds an identity assertion is valid: long enough for one call, too short to replay later."""


class IdentitySigner:
    def __init__(self, pem: str, issuer: str) -> None:
        try:
            key = load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"identity_signing_key is not an unencrypted PEM private key ({exc})") from None
        public: Any
        if isinstance(key, rsa.RSAPrivateKey):
            self.alg, public = "RS256", json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            self.alg, public = "ES256", json.loads(ECAlgorithm.to_jwk(key.public_key()))
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            self.alg, public = "EdDSA", json.loads(OKPAlgorithm.to_jwk(key.public_key()))
        else:
            raise ValueError("identity_signing_key must be an RSA, EC P-256 or Ed25519 private key")
        self._key = key
        self.issuer = issuer
        self.kid = _thumbprint(public)
        self.jwk = {**public, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk]}

    def sign(self, principal: Principal, audience: str) -> str:
        now = time.time()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "sub": principal.id,
            "team": principal.team,
            "kind": principal.kind,
            "iat": int(now),
            "exp": int(now + LIFETIME),
            "jti": secrets.token_hex(12),
        }
        if principal.subject is not None:
            claims["idp_sub"], claims["idp_iss"] = principal.subject, principal.issuer
        return jwt.encode(claims, self._key, algorithm=self.alg, headers={"kid": self.kid, "typ": "JWT"})


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint, the key's id."""
    members = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
