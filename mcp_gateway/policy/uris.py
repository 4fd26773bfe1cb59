"""Resource URIs in one normal form, so that a rule names a resource in one way only.

`normalize` applies RFC 3986 §6.2.2 (syntax-based normalisation): the scheme and host in
lower case; percent-encodings of unreserved characters decoded (`%31` -> `1`, `%7E` ->
`~`) and every other percent-encoding in upper case (`%2f` stays encoded, as `%2F`); dot
segments of a hierarchical path removed (`/a/./b/../c` -> `/a/c`). Characters that may
not appear raw in a URI (space, non-ASCII, `"<>^`|`) are percent-encoded as UTF-8, so the
raw and the encoded spelling of one name meet (`café` and `caf%C3%A9`); `{` and `}` stay
as they are because URI templates use them.

What cannot be normalised without guessing how the upstream reads it is refused
(`AmbiguousURI`): control characters (NUL included, raw or `%00`), a backslash (a path
separator to some parsers), a malformed `%`, an encoded `/` or `\\` in the authority or
path (`%2F` splits a segment for one server and not for another), an encoded dot segment
(`%2E%2E`: resolved before or after decoding?), a fragment (`#part`: RFC 3986 §3.5 makes
it the client's business, never sent to the server that holds the resource, so `x#a` and
`x` would be two names for one resource), and a URI without a scheme. So is an
authority that parsers read differently: userinfo (`test://@host/`, `user:pw@host`), a
port that is empty or not a number (`host:/`), a default port a WHATWG parser drops
(`https://h:443/`), a host that is not a plain name or dotted IPv4 (`0x7f.1`, `2130706433`:
numbers a parser may turn into an address), and `file://localhost/`, which `file:` readers
take as `file:///`. A URI longer than `MAX_URI` is refused before any of this (a rule has
no business naming one, and normalising is linear in its length).

The gateway routes, decides and forwards the normal form: what was decided is what is sent.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX = frozenset(string.hexdigits)
# RFC 3986 reserved characters and `%`: legal raw. `{` and `}` are kept raw for templates.
_RAW = _UNRESERVED | frozenset(":/?#[]@!$&'()*+,;=%{}")
_TRIPLET = re.compile(r"%[0-9a-f]{2}")


MAX_URI = 8192
"""Characters; longer URIs are refused, not normalised (nor remembered)."""
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21"}
_LABEL = r"(?:[a-z0-9_~!$&'()*+,;={}-]|%[0-9A-F]{2})+"  # braces: a template's `{host}`
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_NUMERIC = re.compile(r"[0-9.]+|0x[0-9a-f.x]*", re.IGNORECASE)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


class AmbiguousURI(ValueError):
    """A URI that has no single reading; the message says what is wrong with it."""


def _encode(char: str) -> str:
    try:
        data = char.encode("utf-8")
    except UnicodeEncodeError:
        raise AmbiguousURI(f"a lone surrogate ({char!r}) that is no character") from None
    return "".join(f"%{byte:02X}" for byte in data)


def _percent(text: str, component: str) -> str:
    """One component with its percent-encodings normalised and illegal characters encoded."""
    out: list[str] = []
    i, size = 0, len(text)
    while i < size:
        char = text[i]
        if char == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) < 2 or not (pair[0] in _HEX and pair[1] in _HEX):
                raise AmbiguousURI(f"malformed percent-encoding {text[i : i + 3]!r}")
            decoded = chr(int(pair, 16))
            if decoded == "\0":
                raise AmbiguousURI("an encoded NUL (%00)")
            if component in ("authority", "path") and decoded in "/\\":
                raise AmbiguousURI(f"an encoded {decoded!r} (%{pair}) in the {component}")
            out.append(decoded if decoded in _UNRESERVED else f"%{pair.upper()}")
            i += 3
            continue
        out.append(char if char in _RAW else _encode(char))
        i += 1
    return "".join(out)


def _path(path: str) -> str:
    segments = []
    for raw in path.split("/"):
        segment = _percent(raw, "path")
        if segment in (".", "..") and segment != raw:
            raise AmbiguousURI(f"an encoded dot segment {raw!r} in the path")
        segments.append(segment)
    if not path.startswith("/"):
        return "/".join(segments)  # rootless (opaque) paths have no dot segments to resolve
    return _remove_dot_segments(segments)


def _remove_dot_segments(segments: list[str]) -> str:
    """RFC 3986 §5.2.4 over a path already split at `/` (its first element is empty)."""
    out: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    # A path that ends in a dot segment names a directory: it keeps its final slash.
    tail = "/" if segments[-1] in (".", "..") and out else ""
    return "/" + "/".join(out) + tail


def _authority(authority: str, scheme: str) -> str:
    normal = _percent(authority, "authority")
    if "@" in normal:
        raise AmbiguousURI("userinfo in the authority (`user@host`): parsers disagree on what it names")
    hostport = _TRIPLET.sub(lambda m: m.group(0).upper(), normal.lower())
    port: str | None
    if hostport.startswith("["):  # an IP literal: kept as written, brackets and all
        literal, bracket, after = hostport.partition("]")
        host = literal + bracket
        if after and not after.startswith(":"):
            raise AmbiguousURI(f"text after an IP literal in the authority {authority!r}")
        port = after[1:] if after else None
    else:
        host, colon, port_text = hostport.partition(":")
        port = port_text if colon else None
        if host and not _HOST.fullmatch(host):
            raise AmbiguousURI(f"a host that is not a plain name ({host!r})")
        if host and _NUMERIC.fullmatch(host) and not _DOTTED_IPV4.fullmatch(host):
            raise AmbiguousURI(f"a numeric host that is not dotted IPv4 ({host!r}): parsers read it as an address")
    if port is not None:
        if not port.isdigit():
            raise AmbiguousURI(f"a port that is {'empty' if not port else 'not a number'} in {authority!r}")
        if _DEFAULT_PORTS.get(scheme) == port.lstrip("0"):
            raise AmbiguousURI(f"the default port {port} of {scheme}: written, some parsers drop it")
    if scheme == "file" and host == "localhost":
        raise AmbiguousURI("file://localhost/ is file:/// to file: readers: write file:///")
    return host if port is None else f"{host}:{port}"


def _check_characters(uri: str) -> None:
    for char in uri:
        if char < " " or char == "\x7f":
            raise AmbiguousURI(f"a control character ({char!r})")
        if char == "\\":
            raise AmbiguousURI("a backslash")


def normalize(uri: str) -> str:
    """`uri` in normal form; raises `AmbiguousURI` for what has no single reading."""
    if len(uri) > MAX_URI:
        raise AmbiguousURI(f"a resource URI longer than {MAX_URI} characters")
    _check_characters(uri)
    scheme, colon, rest = uri.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        raise AmbiguousURI("a resource URI starts with a scheme (RFC 3986), such as file: or https:")
    if "#" in rest:
        raise AmbiguousURI(
            "a fragment ('#...') is the client's, no part of the resource's name: send the URI without it"
        )
    hierarchy, question, query = rest.partition("?")
    authority = None
    path = hierarchy
    if hierarchy.startswith("//"):
        end = hierarchy.find("/", 2)
        end = len(hierarchy) if end < 0 else end
        authority, path = hierarchy[2:end], hierarchy[end:]
    parts = [scheme.lower(), ":"]
    if authority is not None:
        # `ns+file:` is the gateway's name for an upstream's `file:`: judged as what is sent.
        parts += ["//", _authority(authority, scheme.lower().rpartition("+")[2])]
    parts.append(_path(path))
    if question:
        parts += ["?", _percent(query, "query")]
    return "".join(parts)


_MEMO_URI = 512
"""Only URIs this short are remembered: a caller's long made-up ones would fill the memo."""


def normal_form(uri: str) -> str | AmbiguousURI:
    """`normalize`, memoised for short URIs, with the refusal returned rather than raised
    (for hot paths)."""
    return _remembered(uri) if len(uri) <= _MEMO_URI else _normal_or_refusal(uri)


def _normal_or_refusal(uri: str) -> str | AmbiguousURI:
    try:
        return normalize(uri)
    except AmbiguousURI as exc:
        return exc


_remembered = lru_cache(maxsize=8192)(_normal_or_refusal)


_PATTERN_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def pattern_problem(pattern: str) -> str | None:
    """Why a rule's resource pattern could never match a normalised URI, or None.

    A pattern that does not start with a literal scheme (`*`, `*://x`) is a glob over
    schemes and is left to itself; anything else must already be in normal form."""
    if not _PATTERN_SCHEME.match(pattern):
        return None
    try:
        normal = normalize(pattern)
    except AmbiguousURI as exc:
        return f"{pattern!r} is ambiguous: {exc}"
    if normal != pattern:
        return f"{pattern!r} is not in normal form (RFC 3986): write {normal!r}"
    return None
