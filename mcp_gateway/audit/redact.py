"""What of a call's arguments the audit keeps.

By default, arguments are stored with secrets redacted and capped in size; `digest` mode
stores only a SHA-256. Redacted, at any depth, are: the value of every secret-looking
key (`password`, `Pass-Word`, `x-api-key`, ...: the patterns and how they match are
`mcp_gateway.sensitive`'s), the `value` of a name/value pair whose name looks secret
(`{"name": "Authorization", "value": ...}`, also `key` or `header`, or capitalised), and
token-shaped parts of any string (`AKIA...`, JWTs, `Bearer ...`, PEM private keys, URL
passwords, ...). The digest is stored in both modes, so identical calls can be matched
without the content; it is taken over the redacted arguments, so it cannot be used to
confirm a guessed secret.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from typing import Any, Literal

import orjson

from ..sensitive import DEFAULT_REDACT_KEYS, REDACTED, SCAN_LIMIT, NamePatterns, scrub

__all__ = ["DEFAULT_REDACT_KEYS", "REDACTED", "ArgumentPolicy"]

_PAIR_NAMES = ("name", "key", "header", "Name", "Key", "Header")
_PAIR_VALUES = ("value", "Value")


def _redact(value: Any, secret: Callable[[Any], bool], limit: int, depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub(value, limit)
    if depth > 32:
        return "[TOO DEEP]"
    if isinstance(value, dict):
        redacted = {k: REDACTED if secret(k) else _redact(v, secret, limit, depth + 1) for k, v in value.items()}
        for field in _PAIR_VALUES:
            if field in value and any(isinstance(n := value.get(p), str) and secret(n) for p in _PAIR_NAMES):
                redacted[field] = REDACTED  # {"name": "Authorization", "value": "..."}
        return redacted
    if isinstance(value, list):
        return [_redact(v, secret, limit, depth + 1) for v in value]
    return value


_MEMO_NAME = 128


class ArgumentPolicy:
    """Turns call arguments into what the audit row stores."""

    def __init__(
        self,
        mode: Literal["redacted", "digest"],
        redact_keys: Iterable[str] = DEFAULT_REDACT_KEYS,
        max_bytes: int = 4096,
    ) -> None:
        self.mode = mode
        self.names = NamePatterns(redact_keys)
        self.max_bytes = max_bytes
        # Whatever the row keeps (the first `max_bytes` of the JSON) is always looked through.
        self._scan_limit = max(SCAN_LIMIT, max_bytes)
        # Argument names repeat from call to call: remember each one's answer, up to a bound,
        # and only for names of a plausible length (a caller's made-up megabyte-long names
        # would otherwise fill the memo with megabytes each).
        self._remembered = functools.lru_cache(maxsize=4096)(self._looks_secret)

    def _looks_secret(self, name: str) -> bool:
        return self.names(name)

    def _secret(self, name: Any) -> bool:
        text = str(name)
        return self._remembered(text) if len(text) <= _MEMO_NAME else self.names(text)

    def render(self, arguments: dict[str, Any] | None) -> tuple[str | None, str | None]:
        """(stored arguments JSON or None, digest)."""
        if arguments is None:
            return None, None
        redacted = _redact(arguments, self._secret, self._scan_limit)
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
