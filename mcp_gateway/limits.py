"""Per-principal limits: what one principal may hold open, so that it exhausts only itself.

The gateway-wide caps (`max_sessions`) stay as a backstop; these are checked first, so one
key opening sessions, streams or subscriptions in a loop is refused (HTTP 429 with
`Retry-After`, or a JSON-RPC error naming the limit) while every other principal is served.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Denied

RETRY_AFTER = 5
"""Seconds a refused client is told to wait: what it holds has to end first."""


@dataclass(frozen=True, slots=True)
class Limits:
    sessions_per_principal: int = 256
    streams_per_principal: int = 64
    subscriptions_per_principal: int = 4096


class LimitReached(Denied):
    """A principal holds as much as its limit allows; it may retry once something ends
    (HTTP 429 where the refusal is an HTTP answer)."""

    def __init__(self, setting: str, value: int, what: str) -> None:
        super().__init__(
            f"Too many {what} for this principal (limit {value}, setting {setting}); close some and retry",
            {"reason": "limit", "limit": setting, "value": value, "rule_id": None, "kill_switch_id": None},
        )
