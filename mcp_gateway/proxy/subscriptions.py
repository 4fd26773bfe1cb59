"""Who follows which resource, and the upstream subscriptions that serve them.

A holder is a handshake session (`resources/subscribe`) or a 2026-07-28 listen stream.
Upstream subscriptions are reference counted across all holders: the first holder of a
URI subscribes upstream, the last one to let go unsubscribes, whatever made it let go
(unsubscribe, the session or stream closing, a kill switch, revocation). The route is
remembered from the first subscribe, so an upstream that has left the catalog meanwhile
is still told.

Also here: the check of a listen request's `notifications` filter, so that nothing is
registered for a filter the gateway cannot honour.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .upstream import Upstream

LIST_FLAGS = ("toolsListChanged", "promptsListChanged", "resourcesListChanged")
RESOURCES = "resourceSubscriptions"


def listen_filter(wants: Any) -> dict[str, Any]:
    """The filter of a `subscriptions/listen` request, checked: its known keys with their
    values (resource URIs deduplicated, in order). Raises `ValueError` naming the problem."""
    if not isinstance(wants, dict):
        raise ValueError("subscriptions/listen needs params.notifications, an object")
    out: dict[str, Any] = {}
    for flag in LIST_FLAGS:
        if flag in wants:
            if not isinstance(wants[flag], bool):
                raise ValueError(f"notifications.{flag} must be a boolean")
            out[flag] = wants[flag]
    if RESOURCES in wants:
        uris = wants[RESOURCES]
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            raise ValueError(f"notifications.{RESOURCES} must be a list of strings (resource URIs)")
        out[RESOURCES] = list(dict.fromkeys(uris))
    return out


class Subscriptions:
    """Holders per gateway URI, counted per principal; says when to (un)subscribe upstream."""

    def __init__(self) -> None:
        self._holders: dict[str, set[object]] = {}
        self._routes: dict[str, tuple[Upstream, str]] = {}
        self._per_principal: Counter[str] = Counter()

    def __len__(self) -> int:
        """URIs someone follows (each one upstream subscription)."""
        return len(self._holders)

    def holders(self, uri: str) -> set[object]:
        return self._holders.get(uri, set())

    def count(self, principal_id: str) -> int:
        """Subscriptions `principal_id` holds, over all its sessions and streams."""
        return self._per_principal[principal_id]

    def add(self, holder: object, principal_id: str, uri: str, route: tuple[Upstream, str]) -> bool:
        """`holder` follows `uri`; True when it is the first (subscribe upstream)."""
        holders = self._holders.get(uri)
        if holders is None:
            self._holders[uri] = {holder}
            self._routes[uri] = route
            self._per_principal[principal_id] += 1
            return True
        if holder not in holders:
            holders.add(holder)
            self._per_principal[principal_id] += 1
        return False

    def remove(self, holder: object, principal_id: str, uri: str) -> tuple[Upstream, str] | None:
        """`holder` stops following `uri`; the upstream route when it was the last (unsubscribe)."""
        holders = self._holders.get(uri)
        if holders is None or holder not in holders:
            return None
        holders.discard(holder)
        self._per_principal[principal_id] -= 1
        if self._per_principal[principal_id] <= 0:
            del self._per_principal[principal_id]
        if holders:
            return None
        del self._holders[uri]
        return self._routes.pop(uri)
