"""OAuth 2.1 resource server: the gateway accepts access tokens an organisation's identity
provider issued for it (`auth: oauth` or `keys+oauth`).

    config.py    OAuthSettings: issuer, audience, algorithms, claims -> principal, team, role
    keys.py      the issuer's signing keys (discovery -> JWKS), cached, refreshed on an unknown kid
    tokens.py    verifying one access token (signature, iss, aud, exp, nbf, iat, scope)
    claims.py    verified claims -> Principal (and team), or an operator's Role
    metadata.py  RFC 9728 protected resource metadata and the WWW-Authenticate challenges
"""
