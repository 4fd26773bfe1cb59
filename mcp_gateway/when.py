"""Points in time as people and scripts write them: epoch seconds or ISO 8601.

The CLI's `--since`/`--until` and the admin API's `since`/`until` read the same forms,
so a time copied from one works in the other.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

FORMS = "epoch seconds (1764460800) or an ISO 8601 time (2026-11-30T09:00:00Z; UTC when no offset)"


def parse_time(value: str) -> float:
    """Epoch seconds for `value`; `ValueError` naming the accepted forms otherwise."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a time: give {FORMS}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a time: give {FORMS}")
    return seconds


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_FORMS = "a duration: a whole number and a unit, s, m, h, d or w (90m, 12h, 30d)"


def parse_duration(value: str) -> float:
    """Seconds for a duration such as `30d`; `ValueError` naming the accepted forms otherwise."""
    text = value.strip().lower()
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit() or int(number) == 0:
        raise ValueError(f"{value!r} is not {DURATION_FORMS}")
    return int(number) * _UNITS[unit]


def parse_before(value: str, now: float) -> float:
    """A point in time (`FORMS`), or a duration back from `now` (`30d`: thirty days ago)."""
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        return parse_time(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither {FORMS} nor {DURATION_FORMS}") from None
