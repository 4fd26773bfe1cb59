"""Resource URIs in one normal form (RFC 3986 §6.2.2), and ambiguous encodings refused:
the comparison every resource rule relies on (issue 11, break 5)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_gateway.policy.uris import AmbiguousURI, normalize, pattern_problem


@pytest.mark.parametrize(
    ("uri", "normal"),
    [
        ("test://template/%31/data", "test://template/1/data"),  # the bypass
        ("TEST://Template/1/data", "test://template/1/data"),  # scheme and host are case-blind
        ("x://h/%7euser/%7E", "x://h/~user/~"),  # unreserved characters decoded
        ("x://h/a%3fb%3Ac", "x://h/a%3Fb%3Ac"),  # the rest keeps its encoding, in upper case
        ("file:///a/./b/../c", "file:///a/c"),
        ("file:///a/b/..", "file:///a/"),
        ("file:///../../etc/passwd", "file:///etc/passwd"),
        ("x://h/a//b", "x://h/a//b"),  # empty segments are not dot segments (RFC 3986)
        ("x://HOST:8080/P", "x://host:8080/P"),  # the path keeps its case
        ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x"),  # dotted IPv4 and a port that is not the default
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("x://h/caf\u00e9 x", "x://h/caf%C3%A9%20x"),  # raw and encoded spellings of one name meet
        ("x://h/caf%c3%a9%20x", "x://h/caf%C3%A9%20x"),
        ("x://h/p?q=%2f&r=%7e", "x://h/p?q=%2F&r=~"),  # the query: same encoding rules
        ("urn:isbn:0451450523", "urn:isbn:0451450523"),
        ("urn:a/../b", "urn:a/../b"),  # a rootless path is opaque: no dot segments to remove
        ("test://template/{id}/data", "test://template/{id}/data"),  # templates keep their braces
        ("everything+test://template/%31/data", "everything+test://template/1/data"),
    ],
)
def test_a_uri_normalises_to_its_rfc_3986_normal_form(uri: str, normal: str) -> None:
    assert normalize(uri) == normal


_FRAGMENT = "a fragment ('#...') is the client's, no part of the resource's name: send the URI without it"


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("test://template/1%2Fdata", "an encoded '/' (%2F) in the path"),
        ("test://template/1%2fdata", "an encoded '/' (%2f) in the path"),
        ("file:///srv/public%5c..%5csecret", "an encoded '\\\\' (%5c) in the path"),
        ("x://h%2Fevil/a", "an encoded '/' (%2F) in the authority"),
        ("file:///srv/public/%2e%2e/secret", "an encoded dot segment '%2e%2e' in the path"),
        ("file:///srv/public/.%2E/secret", "an encoded dot segment '.%2E' in the path"),
        ("file:///srv/%2e/x", "an encoded dot segment '%2e' in the path"),
        ("x://h/a%00", "an encoded NUL (%00)"),
        ("x://h/a?q=%00", "an encoded NUL (%00)"),
        ("x://h/a\x00b", "a control character ('\\x00')"),
        ("x://h/a\nb", "a control character ('\\n')"),
        ("file:///srv/public\\..\\secret", "a backslash"),
        ("x://h/a%zz", "malformed percent-encoding '%zz'"),
        ("x://h/a%4", "malformed percent-encoding '%4'"),
        ("x://h/a%", "malformed percent-encoding '%'"),
        ("/etc/passwd", "a resource URI starts with a scheme (RFC 3986), such as file: or https:"),
        ("1x://h", "a resource URI starts with a scheme (RFC 3986), such as file: or https:"),
        ("x://h/\ud800", "a lone surrogate ('\\ud800') that is no character"),
        # Spellings a WHATWG parser (the TypeScript SDK's `new URL`) reads as another name:
        ("test://template:/1/data", "a port that is empty in 'template:'"),
        ("test://@template/1/data", "userinfo in the authority (`user@host`): parsers disagree on what it names"),
        ("test://:@template/1/data", "userinfo in the authority (`user@host`): parsers disagree on what it names"),
        ("x://User@HOST:8080/P", "userinfo in the authority (`user@host`): parsers disagree on what it names"),
        ("https://h:443/x", "the default port 443 of https: written, some parsers drop it"),
        ("http://h:080/x", "the default port 080 of http: written, some parsers drop it"),
        ("x://h:8o/x", "a port that is not a number in 'h:8o'"),
        ("file://localhost/srv/secret", "file://localhost/ is file:/// to file: readers: write file:///"),
        ("http://0x7f.1/", "a numeric host that is not dotted IPv4 ('0x7f.1'): parsers read it as an address"),
        ("http://2130706433/", "a numeric host that is not dotted IPv4 ('2130706433'): parsers read it as an address"),
        ("http://127.1/", "a numeric host that is not dotted IPv4 ('127.1'): parsers read it as an address"),
        ("x://h" + "/a" * 5000, "a resource URI longer than 8192 characters"),
        # A fragment is the client's (RFC 3986 §3.5): with it, one resource would have two names.
        ("test://static/resource/1#part", _FRAGMENT),
        ("test://static/resource/1#", _FRAGMENT),
        ("x://h/p?q=1#%61", _FRAGMENT),
        ("urn:isbn:0451450523#page=2", _FRAGMENT),
    ],
)
def test_an_ambiguous_uri_is_refused_naming_the_problem(uri: str, why: str) -> None:
    with pytest.raises(AmbiguousURI) as refused:
        normalize(uri)
    assert str(refused.value) == why


def test_an_encoded_dot_inside_a_segment_is_just_a_dot() -> None:
    assert normalize("x://h/a%2Eb/%2E%2Ex") == "x://h/a.b/..x"


def test_a_rule_pattern_must_be_in_normal_form_unless_it_globs_the_scheme() -> None:
    assert pattern_problem("test://template/*") is None
    assert pattern_problem("*") is None
    assert pattern_problem("*://x/%31") is None
    assert pattern_problem("TEST://x") == "'TEST://x' is not in normal form (RFC 3986): write 'test://x'"
    assert pattern_problem("x://h/%2F") == "'x://h/%2F' is ambiguous: an encoded '/' (%2F) in the path"


# -- properties --------------------------------------------------------------------------------

SEGMENT_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@ %\u00e9"
segments = st.text(alphabet=SEGMENT_CHARS, max_size=6) | st.sampled_from([".", "..", ""])
uris = st.builds(
    lambda scheme, host, path, query: f"{scheme}://{host}/{'/'.join(path)}{query}",
    st.sampled_from(["test", "TEST", "file", "x+y"]),
    st.sampled_from(["", "h", "H", "Host.Example", "%48ost"]),
    st.lists(segments, max_size=5),
    st.sampled_from(["", "?a=%2f", "?q=1&r=F", "?%7e"]),
)


def _normal_or_none(uri: str) -> str | None:
    try:
        return normalize(uri)
    except AmbiguousURI:
        return None


@settings(max_examples=500, deadline=None)
@given(uris)
def test_normalising_is_idempotent(uri: str) -> None:
    normal = _normal_or_none(uri)
    if normal is not None:
        assert normalize(normal) == normal


def _encode_some(text: str, choices: list[bool]) -> str:
    """`text` with some characters percent-encoded, in random case: spellings of one name."""
    out = []
    for i, char in enumerate(text):
        if i < len(choices) and choices[i] and char in string.ascii_letters + string.digits + "-_~":
            hex_ = f"{ord(char):02X}"
            out.append("%" + (hex_.lower() if i % 2 else hex_))
        else:
            out.append(char)
    return "".join(out)


NAMES = st.lists(st.text(alphabet=string.ascii_lowercase + string.digits + "-_~", min_size=1, max_size=5), min_size=1)


@settings(max_examples=500, deadline=None)
@given(NAMES, st.lists(st.booleans(), max_size=40), st.lists(st.sampled_from(["", ".", "..x"]), max_size=3))
def test_every_spelling_of_a_name_reaches_the_same_normal_form(
    parts: list[str], choices: list[bool], detours: list[str]
) -> None:
    # The name a rule is written with, and a request that reaches it through encodings,
    # case, `.` segments and `x/..` detours.
    name = "test://template/" + "/".join(parts)
    path = []
    for i, part in enumerate(parts):
        detour = detours[i] if i < len(detours) else ""
        if detour == ".":
            path.append(".")
        elif detour == "..x":
            path += ["elsewhere", ".."]
        path.append(_encode_some(part, choices[i * 5 : i * 5 + 5]))
    spelled = "TEST://TEMPLATE/" + "/".join(path)
    assert normalize(spelled) == normalize(name) == name


@settings(max_examples=300, deadline=None)
@given(uris)
def test_a_normal_form_has_no_dot_segments_and_no_lower_case_escapes(uri: str) -> None:
    normal = _normal_or_none(uri)
    if normal is None:
        return
    path = normal.split("://", 1)[1].partition("?")[0].partition("#")[0]
    assert "." not in path.split("/")[1:] and ".." not in path.split("/")[1:]
    for i, char in enumerate(normal):
        if char == "%":
            assert normal[i + 1 : i + 3] == normal[i + 1 : i + 3].upper()


def test_a_long_uri_is_refused_at_once_and_not_remembered() -> None:
    # Normalising is linear in the length, and the memo is shared by every caller.
    from mcp_gateway.policy import uris

    before = uris._remembered.cache_info().currsize
    for i in range(50):
        refused = uris.normal_form(f"x://h/{i}/" + "\u00e9" * 2_000_000)
        assert isinstance(refused, AmbiguousURI)
        assert isinstance(uris.normal_form(f"x://h/{i}/" + "a" * 600), str)
    assert uris._remembered.cache_info().currsize == before
