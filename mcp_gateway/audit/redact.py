"""What of a call's arguments the audit keeps.

By default, arguments are stored with secret-looking fields redacted (matched by key
name, at any depth) and capped in size; `digest` mode stores only a SHA-256. The digest
is stored in both modes, so identical calls can be matched without the content; it is
taken over the redacted arguments, so it cannot be used to confirm a guessed secret.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from typing import Any, Literal

import orjson

DEFAULT_REDACT_KEYS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "credential",
    "private_key",
    "access_key",
)
REDACTED = "[REDACTED]"


def _redact(value: Any, secret: Callable[[Any], bool], depth: int = 0) -> Any:
    if depth > 32:
        return "[TOO DEEP]"
    if isinstance(value, dict):
        return {k: REDACTED if secret(k) else _redact(v, secret, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secret, depth + 1) for v in value]
    return value


class ArgumentPolicy:
    """Turns call arguments into what the audit row stores."""

    def __init__(
        self,
        mode: Literal["redacted", "digest"],
        redact_keys: Iterable[str] = DEFAULT_REDACT_KEYS,
        max_bytes: int = 4096,
    ) -> None:
        self.mode = mode
        self.keys = tuple(k.lower() for k in redact_keys)
        self.max_bytes = max_bytes
        # Argument names repeat from call to call: remember each one's answer, up to a bound.
        self._secret = functools.lru_cache(maxsize=4096)(self._looks_secret)

    def _looks_secret(self, name: Any) -> bool:
        lowered = str(name).lower()
        return any(s in lowered for s in self.keys)

    def render(self, arguments: dict[str, Any] | None) -> tuple[str | None, str | None]:
        """(stored arguments JSON or None, digest)."""
        if arguments is None:
            return None, None
        redacted = _redact(arguments, self._secret)
        try:
            data = orjson.dumps(redacted, option=orjson.OPT_SORT_KEYS)  # what is digested is what is kept
        except TypeError:
            return None, None
        hashed = hashlib.sha256(data).hexdigest()
        if self.mode == "digest":
            return None, hashed
        if len(data) > self.max_bytes:
            # The first `max_bytes` bytes of the JSON, cut at a character boundary.
            preview = data[: self.max_bytes].decode("utf-8", "ignore")
            data = orjson.dumps({"_truncated": True, "preview": preview})
        return data.decode(), hashed
