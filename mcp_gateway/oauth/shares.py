"""Open questions to the identity provider, counted in total and per client address.

A question about an opaque token waits for the provider (up to `fetch_timeout`), and
made-up tokens cost nothing to send: with one global cap, one peer sending fresh junk
keeps every slot busy and everyone else's new token is refused. So each client holds at
most `each` of the `total` slots, and the rest stay free for other addresses.

A client is its IPv4 address, or the /64 of its IPv6 address (a host is commonly handed a
whole /64: one share per address would be no share at all). Behind a reverse proxy every
request comes from the proxy's address (the gateway reads no forwarding headers): the
share then protects nothing, and the total still holds.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager

from .verified import TokenRejected

UNKNOWN = "?"
"""The client of a request whose transport names no peer address (one share for all such)."""


def client_of(peer: str | None) -> str:
    """Whose share a question counts against (see the module docstring)."""
    if not peer:
        return UNKNOWN
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return peer


class Shares:
    """At most `total` open at once, and at most `each` of them for one client.

    Plain counters, not semaphores: taking a slot never waits (a question past either
    bound is refused at once, before the provider is asked), and the event loop runs one
    task at a time, so the check and the count cannot interleave. The table holds only
    clients with a question open: an entry goes when its count returns to 0, so it never
    holds more than `total` entries however many addresses send tokens.
    """

    def __init__(self, total: int, each: int) -> None:
        self.total, self.each = total, min(each, total)
        self.open = 0
        self.by_client: dict[str, int] = {}

    @contextmanager
    def slot(self, peer: str | None) -> Iterator[None]:
        """Hold one slot for `peer` for the block; TokenRejected at once if none is free."""
        client = client_of(peer)
        held = self.by_client.get(client, 0)
        if held >= self.each:
            raise TokenRejected("too many tokens from this address are being checked with the identity provider")
        if self.open >= self.total:
            raise TokenRejected("too many tokens are being checked with the identity provider")
        self.by_client[client] = held + 1
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1
            left = self.by_client[client] - 1
            if left:
                self.by_client[client] = left
            else:
                del self.by_client[client]
