"""`text.escape`: what a request or an upstream chose is shown as inert text."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.text import escape, escape_lines

BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4})")


def unescape(text: str) -> str:
    """The inverse of `escape`, as a reader of the log would apply it."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        return {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}.get(code) or chr(int(code[1:], 16))

    return _ESCAPE.sub(one, text)


def _inert(char: str) -> bool:
    return unicodedata.category(char) not in ("Cc", "Cs", "Zl", "Zp") and char not in BIDI


@given(st.text(alphabet=st.characters(codec=None)))
def test_escaped_text_holds_no_control_separator_or_bidi_character(text: str) -> None:
    assert all(_inert(c) for c in escape(text))


@given(st.text(alphabet=st.characters(codec=None)))
def test_escaping_is_reversible_so_two_values_never_look_alike(text: str) -> None:
    assert unescape(escape(text)) == text


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\\")))
def test_text_with_nothing_to_escape_is_shown_as_it_is(text: str) -> None:
    if not BIDI & set(text):
        assert escape(text) == text


def test_each_kind_of_active_character_has_a_readable_escape() -> None:
    assert escape("a\nb\rc\td\\e") == "a\\nb\\rc\\td\\\\e"
    assert escape("\x1b[2J\x00\x7f\x9b") == "\\x1b[2J\\x00\\x7f\\x9b"
    assert escape("\u202egpj.exe\u2028\ud800") == "\\u202egpj.exe\\u2028\\ud800"


def test_escape_lines_keeps_the_line_breaks_and_escapes_the_rest() -> None:
    assert escape_lines("one\r\ntwo\x1b") == "one\\r\ntwo\\x1b"
