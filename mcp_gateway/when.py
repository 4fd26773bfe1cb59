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
