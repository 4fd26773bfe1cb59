"""Text from requests and upstreams, made safe to show on a terminal or in a log.

A value an attacker chose (a resource URI, a tool name, an upstream's stderr line) is
stored as it came; where it is shown to a person, every character that could act instead
of being read is written as an escape: C0 and C1 controls and DEL (a newline forges a
line, ESC starts a terminal sequence, CR overwrites the line's head), the line and
paragraph separators, the Unicode bidirectional controls (U+202E shows text reversed),
and lone surrogates (which cannot be encoded at all). The backslash is escaped too, so
the escaping is reversible: two different values never look the same.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with every control, separator and bidi character (and `\\`) as an escape."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escaped, text)


def escape_lines(text: str) -> str:
    """`escape` for text whose own line breaks are wanted (a traceback): each line escaped."""
    return "\n".join(escape(line) for line in text.split("\n"))
