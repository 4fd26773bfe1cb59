"""What looks secret: names (of arguments, headers, query parameters) and values (token
shapes), and URLs shown with their credentials masked.

Names: a pattern matches a name when it is a substring of the name lowercased with `_`,
`-`, `.` and spaces removed (`pass_word`, `Pass-Word` and `PASSWORD` all read
`password`; `x-api-key` reads `xapikey`). A pattern of four letters or fewer (`pwd`,
`pass`, `auth`) must instead be a whole word of the name (`db_pass`, `basicAuth`,
`x-auth-token`), so that `author`, `compass` or `oauth_provider` are not taken for secrets.

Values: token shapes found anywhere in a string are replaced by a marker, keeping what
names the kind (`Bearer `, a PEM block's BEGIN and END lines, the id of a gateway key):
AWS access key ids, JWTs, `Bearer`/`Basic` credentials, PEM private keys, GitHub, Slack
and Stripe-style keys, the gateway's own keys, URL passwords and secret-looking query
parameters. One compiled expression finds them all in one pass (this runs on every
audited call's arguments), and none can take more than linear time on a crafted string.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

DEFAULT_REDACT_KEYS = (
    "password",
    "passwd",
    "passphrase",
    "pass",
    "pwd",
    "secret",
    "token",
    "apikey",
    "auth",
    "authorization",
    "bearer",
    "cookie",
    "credential",
    "privatekey",
    "accesskey",
    "session",
)
"""Secret-looking name patterns (see the module docstring for how they match)."""

REDACTED = "[REDACTED]"
MASK = "***"
"""What replaces a password in a URL shown in a log or on a terminal."""

_WHOLE_WORD = 4
_SEPARATORS = str.maketrans("", "", "_-. ")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def normalise(name: str) -> str:
    return name.lower().translate(_SEPARATORS)


class NamePatterns:
    """Decides whether a name (an argument key, a header name) looks secret."""

    def __init__(self, patterns: Iterable[str] = DEFAULT_REDACT_KEYS) -> None:
        normalised = {normalise(p) for p in patterns} - {""}
        self.words = frozenset(p for p in normalised if len(p) <= _WHOLE_WORD)
        self.substrings = tuple(sorted(normalised - self.words))

    def __call__(self, name: str) -> bool:
        flat = normalise(name)
        if any(p in flat for p in self.substrings):
            return True
        return bool(self.words) and any(w.lower() in self.words for w in _WORDS.findall(name))


_SECRET_PARAM = r"(?:[A-Za-z0-9_.-]*?(?i:password|passwd|pwd|secret|token|api[_-]?key|signature|sig)|key)"
# Each alternative starts with a literal character and ends with an empty group naming its
# kind (`lastgroup`): with literal starts the regex engine scans a string for those
# characters only, so a string holding no candidate is passed over by one fast search.
# Runs that can fail late are possessive, bounded, or anchored at the start of a run, so
# that no crafted string (`eyJeyJeyJ...`, `://a:://a:...`) costs quadratic time.
_URL_CREDENTIALS = (
    r"://(?P<userinfo_user>[^\s/?#@:]{0,256}+):(?:[^\s@:]|:(?!//)){1,256}+(?=@)(?P<userinfo>)"
    rf"|\?(?P<query_name>{_SECRET_PARAM})=[^&#\s]+(?P<query>)"
    rf"|&(?P<query2_name>{_SECRET_PARAM})=[^&#\s]+(?P<query2>)"
)
_SHAPES = re.compile(
    r"-----BEGIN (?P<pem_kind>[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?)-----"
    r"[\s\S]*?(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z)(?P<pem>)"
    r"|A(?:KIA|SIA)[0-9A-Z]{16}(?![0-9A-Za-z])(?P<aws>)"
    r"|e(?<![A-Za-z0-9_-]e)yJ[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]*+(?P<jwt>)"
    r"|B(?:earer|EARER|asic|ASIC)[ \t]+(?P<auth_value>[A-Za-z0-9._~+/-]{8,}=*)(?P<auth>)"
    r"|b(?:earer|asic)[ \t]+(?P<auth_value2>[A-Za-z0-9._~+/-]{8,}=*)(?P<auth2>)"
    r"|g(?:h[pousr]_[A-Za-z0-9]{30,}|ithub_pat_[A-Za-z0-9_]{30,})(?P<github>)"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}(?P<slack>)"
    r"|s(?:k_live_|k_test_)[A-Za-z0-9]{10,}(?P<stripe>)"
    r"|r(?:k_live_|k_test_)[A-Za-z0-9]{10,}(?P<stripe2>)"
    r"|mgw(?P<gateway_id>a?_[0-9a-f]{12}_)[A-Za-z0-9_-]{16,}(?P<gateway>)"
    rf"|{_URL_CREDENTIALS}"
)
_WORDLIKE = frozenset(("aws", "jwt", "auth", "auth2", "github", "slack", "stripe", "stripe2", "gateway"))
_SHORTEST = 6
SCAN_LIMIT = 65_536
"""Token shapes are looked for in the first this many characters of a string."""
_URL = re.compile(_URL_CREDENTIALS)


def _basic_credential(value: str) -> bool:
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def _replace(match: re.Match[str]) -> str:
    kind, start = match.lastgroup, match.start()
    if kind in _WORDLIKE and start and match.string[start - 1].isalnum():
        # Inside a longer word (`disk_test_...`): not a token; what follows may hold one.
        matched = match.group()
        return matched[0] + _SHAPES.sub(_replace, matched[1:])
    if kind == "pem":
        kind_name = match["pem_kind"]
        return f"-----BEGIN {kind_name}-----{REDACTED}-----END {kind_name}-----"
    if kind in ("auth", "auth2"):
        group = "auth_value" if kind == "auth" else "auth_value2"
        value, head = match[group], match.group()[: match.start(group) - start]
        # "Basic" must carry base64 of user:password, and "bearer" more than an English word.
        secret = _basic_credential(value) if head.lower().startswith("basic") else not value.isalpha()
        return head + (REDACTED if secret else _SHAPES.sub(_replace, value))
    if kind == "gateway":
        return "mgw" + match["gateway_id"] + REDACTED
    return _url_part(match, REDACTED) if kind in ("userinfo", "query", "query2") else REDACTED


def _url_part(match: re.Match[str], marker: str) -> str:
    kind = match.lastgroup
    if kind == "userinfo":
        return f"://{match['userinfo_user']}:{marker}"
    if kind == "query":
        return f"?{match['query_name']}={marker}"
    return f"&{match['query2_name']}={marker}"


def scrub(text: str, limit: int = SCAN_LIMIT) -> str:
    """`text` with every token-shaped secret in its first `limit` characters replaced by
    `REDACTED` (the bound keeps a multi-megabyte argument from stalling the call)."""
    if len(text) < _SHORTEST:
        return text
    if len(text) > limit:
        head = text[:limit]
        return text if _SHAPES.search(head) is None else _SHAPES.sub(_replace, head) + text[limit:]
    return text if _SHAPES.search(text) is None else _SHAPES.sub(_replace, text)


def _masked(match: re.Match[str]) -> str:
    return _url_part(match, MASK)


def mask_urls(text: str) -> str:
    """`text` (a URL, or a message naming URLs) with URL passwords and secret-looking
    query values replaced by `***`: `postgresql://gateway:***@db/gw`."""
    if "://" not in text and "=" not in text:
        return text
    return _URL.sub(_masked, text)
