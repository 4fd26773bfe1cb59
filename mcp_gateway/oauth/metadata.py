"""What the gateway tells OAuth clients: RFC 9728 protected resource metadata, and the
`WWW-Authenticate` challenges (RFC 6750) that point at it, so an MCP client that gets a 401
finds the authorization server by itself (MCP authorization spec)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .config import OAuthSettings

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_path(settings: OAuthSettings) -> str:
    """The path-suffixed well-known path for the resource (`/.well-known/oauth-protected-resource/mcp`)."""
    return WELL_KNOWN + urlsplit(settings.audience).path.rstrip("/")


def metadata_url(settings: OAuthSettings) -> str:
    parts = urlsplit(settings.audience)
    return f"{parts.scheme}://{parts.netloc}{metadata_path(settings)}"


def document(settings: OAuthSettings) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resource": settings.audience,
        "authorization_servers": [settings.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "mcp-gateway",
    }
    if settings.required_scope:
        doc["scopes_supported"] = [settings.required_scope]
    return doc


def _quoted(text: str, limit: int = 2048) -> str:
    """A quoted-string of printable characters, without quotes or backslashes, at most `limit`
    long (a description may echo what a token said about itself)."""
    return '"' + "".join(c for c in text if c.isprintable() and c not in '"\\')[:limit] + '"'


def challenge(settings: OAuthSettings, error: str | None = None, description: str | None = None) -> bytes:
    """`Bearer realm=..., [error=..., error_description=...,] [scope=...,] resource_metadata=...`."""
    parts = ['Bearer realm="mcp-gateway"']
    if error:
        parts.append(f"error={_quoted(error)}")
    if description:
        parts.append(f"error_description={_quoted(description, 200)}")
    if settings.required_scope and error in (None, "insufficient_scope"):
        parts.append(f"scope={_quoted(settings.required_scope)}")
    parts.append(f"resource_metadata={_quoted(metadata_url(settings))}")
    return ", ".join(parts).encode("latin-1", "replace")
