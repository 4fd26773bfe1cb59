"""DNS-rebinding protection: refuse requests whose Host or Origin is not this gateway's.

A page on evil.example whose name resolves to 127.0.0.1 can make a browser post to a
gateway on loopback; checking Host (and Origin, when a browser sends one) stops it.
Patterns are `host`, `host:port` or `host:*`.
"""

from __future__ import annotations

from collections.abc import Iterable

LOOPBACK_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]")
LOOPBACK_ORIGINS = tuple(f"{scheme}://{h}" for scheme in ("http", "https") for h in LOOPBACK_HOSTS)


def _matches(value: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if pattern == "*" or value == pattern:
            return True
        if pattern.endswith(":*") and value.startswith(pattern[:-1]) and value[len(pattern) - 1 :].isdigit():
            return True
    return False


class HostCheck:
    """Decides whether a request's Host and Origin headers may reach the gateway."""

    def __init__(self, hosts: Iterable[str], origins: Iterable[str], enabled: bool = True) -> None:
        self.hosts = (*LOOPBACK_HOSTS, *hosts)
        self.origins = (*LOOPBACK_ORIGINS, *origins)
        self.enabled = enabled

    def problem(self, host: str | None, origin: str | None) -> tuple[int, str] | None:
        """None when allowed, else the HTTP status and reason."""
        if not self.enabled:
            return None
        if not host or not _matches(host.lower(), self.hosts):
            return 421, f"Host {host!r} is not allowed (see allowed_hosts)"
        if origin is not None and not _matches(origin.lower(), self.origins):
            return 403, f"Origin {origin!r} is not allowed (see allowed_origins)"
        return None
