"""Inputs for the fuzz harness: valid seed requests for `/mcp` (both protocol eras) and
`/admin/api`, and the mutations applied to them. Input `i` of seed `s` is a pure
function of `(s, i)`, so any input can be made again alone (`run.py --only i`)."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
ENVELOPE = "io.modelcontextprotocol/protocolVersion"
CAPS = "io.modelcontextprotocol/clientCapabilities"


@dataclass
class Context:
    """What the harness knows of the running gateway, for seeds that reach deep."""

    key: str
    other_key: str
    admin_token: str
    session: str = ""
    other_session: str = ""


@dataclass
class Input:
    """One HTTP request, as bytes-level parts (the harness frames it)."""

    method: str
    path: str
    headers: list[tuple[str, str | bytes]] = field(default_factory=list)
    body: bytes = b""
    content_length: int | None = None
    """Declared Content-Length when it should differ from the body's length."""
    note: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": [(k, v if isinstance(v, str) else v.decode("latin-1")) for k, v in self.headers],
            "body": self.body.decode("utf-8", "backslashreplace")[:20000],
            "body_bytes": len(self.body),
            "content_length": self.content_length,
            "note": self.note,
        }


TOOLS = [
    "alpha__read_file",
    "alpha__search",
    "alpha__delete_file",
    "beta__read_file",
    "beta__write_file",
    "alpha__poke",
    "beta__ask",
    "alpha__ask",
    "nosuch__tool",
]
PROMPTS = ["alpha__greet", "beta__admin_reset", "beta__summarize"]
URIS = [
    "alpha+file:///srv/public/readme.txt",
    "alpha+file:///srv/secret/keys.txt",
    "beta+test://static/1",
    "beta+test://template/%31/data",
    "alpha+file:///srv/public/../secret/keys.txt",
    "beta+test://template/1/data",
]


def _seed_messages(r: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """(method, params) of valid-looking requests for every method."""
    tool = r.choice(TOOLS)
    path = r.choice(["/srv/public/a.txt", "/etc/passwd", "/srv/public/../secret", "C:\\x"])
    return [
        ("tools/list", {}),
        ("prompts/list", {}),
        ("resources/list", {}),
        ("resources/templates/list", {}),
        ("tools/call", {"name": tool, "arguments": {"path": path, "text": "hi"}}),
        ("tools/call", {"name": tool, "arguments": {"path": path}, "_meta": {"progressToken": r.randint(0, 9)}}),
        (
            "tools/call",
            {
                "name": tool,
                "arguments": {},
                "requestState": "mcpgw:" + "A" * r.randint(0, 30),
                "inputResponses": {"r1": {"action": "accept", "content": {"ok": True}}},
            },
        ),
        ("prompts/get", {"name": r.choice(PROMPTS), "arguments": {"topic": "x"}}),
        ("resources/read", {"uri": r.choice(URIS)}),
        ("resources/subscribe", {"uri": r.choice(URIS)}),
        ("resources/unsubscribe", {"uri": r.choice(URIS)}),
        (
            "completion/complete",
            {"ref": {"type": "ref/prompt", "name": r.choice(PROMPTS)}, "argument": {"name": "topic", "value": "a"}},
        ),
        (
            "completion/complete",
            {"ref": {"type": "ref/resource", "uri": r.choice(URIS)}, "argument": {"name": "id", "value": "1"}},
        ),
        (
            "subscriptions/listen",
            {"notifications": {"resourceSubscriptions": r.sample(URIS, 2), "toolsListChanged": True}},
        ),
        ("logging/setLevel", {"level": "debug"}),
        ("ping", {}),
        ("server/discover", {}),
        ("initialize", {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "fuzz"}}),
        ("notifications/cancelled", {"requestId": r.choice([1, "x", [1], None])}),
        ("notifications/initialized", {}),
    ]


WEIRD_STRINGS = [
    "",
    " ",
    "\u0000",
    "\u202e",
    "\ufeff",
    "💥" * 50,
    "a" * 70000,
    "../" * 50,
    "%00",
    "%2e%2e%2f",
    "\r\nX-Injected: 1",
    '=HYPERLINK("http://x")',
    "\x1b[31mred",
    "null",
    "__",
    "alpha__",
    "+",
    "alpha+",
    "mcpgw:",
    "ns__" * 300,
]


def _deep(depth: int, kind: str) -> Any:
    """A value nested `depth` deep. Deeper than the json module can write, it is a marker
    that `_json_bytes` expands in the text."""
    if depth > 500:
        return f"__deep_{kind}_{depth}__"
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


_DEEP_MARKER = re.compile(rb'"__deep_(list|dict)_(\d+)__"')


def _expand_deep(match: re.Match[bytes]) -> bytes:
    depth = int(match.group(2))
    if match.group(1) == b"list":
        return b"[" * depth + b'"bottom"' + b"]" * depth
    return b'{"a":' * depth + b'"bottom"' + b"}" * depth


def _weird_value(r: random.Random) -> Any:
    choice = r.randrange(16)
    if choice == 0:
        return None
    if choice == 1:
        return r.choice([True, False])
    if choice == 2:
        return r.choice([0, -1, 2**63, 2**64 + 1, -(2**70), 10**400])
    if choice == 3:
        return r.choice([1e308, -0.0, 1.5, 5e-324])
    if choice == 4:
        return r.choice(WEIRD_STRINGS)
    if choice == 5:
        return []
    if choice == 6:
        return {}
    if choice == 7:
        return _deep(r.choice([10, 100, 300, 600, 1000, 3000]), r.choice(["list", "dict"]))
    if choice == 8:
        return [r.randrange(10)] * r.choice([10, 1000, 50000])
    if choice == 9:
        return {f"k{i}": i for i in range(r.choice([10, 1000, 20000]))}
    if choice == 10:
        return "".join(chr(r.randrange(0x20, 0x2FFFF)) for _ in range(r.randrange(1, 40)))
    if choice == 11:
        return r.choice(TOOLS + PROMPTS + URIS)
    if choice == 12:
        return {"type": r.choice(["ref/prompt", "ref/resource", "x"]), "name": r.choice(PROMPTS), "uri": r.choice(URIS)}
    if choice == 13:
        return r.choice(["2026-07-28", "2025-11-25", "1999-01-01", ""])
    if choice == 14:
        return {"_meta": _weird_value(r)}
    return r.randrange(-5, 5)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict) and len(prefix) < 6:
        for k, v in list(value.items())[:20]:
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list) and len(prefix) < 6:
        for i, v in enumerate(value[:5]):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _set(value: Any, path: tuple[Any, ...], new: Any, delete: bool = False) -> Any:
    if not path:
        return new
    container = value
    for step in path[:-1]:
        container = container[step]
    if delete:
        if isinstance(container, dict):
            container.pop(path[-1], None)
        elif isinstance(container, list) and container:
            container.pop(path[-1])
    else:
        container[path[-1]] = new
    return value


def mutate_json(r: random.Random, message: dict[str, Any]) -> Any:
    for _ in range(r.choice([1, 1, 1, 2, 3])):
        paths = _paths(message)
        path = r.choice(paths)
        action = r.randrange(6)
        if action == 0 and path:
            message = _set(message, path, None, delete=True)
        elif action == 1 and isinstance(message, dict):
            target = message
            for step in path:
                target = target[step] if isinstance(target, dict | list) else target
            if isinstance(target, dict):
                target[r.choice(["_meta", "extra", "requestState", "arguments", "cursor", "name", "uri", ""])] = (
                    _weird_value(r)
                )
        else:
            message = _set(message, path, _weird_value(r))
    return message


def _json_bytes(value: Any) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (RecursionError, ValueError):
        return b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}'
    return _DEEP_MARKER.sub(_expand_deep, text)


def _raw_mutation(r: random.Random, body: bytes) -> tuple[bytes, str]:
    choice = r.randrange(12)
    if choice == 0 and body:
        return body[: r.randrange(len(body))], "truncated"
    if choice == 1:
        return body.replace(b'"method"', b'"method": "ping", "method"', 1), "duplicated key"
    if choice == 2:
        return body.replace(b'"id"', b'"id": {"x": 1}, "id"', 1), "duplicated id"
    if choice == 3:
        return b"[" + body + b"," + body + b"]", "batch"
    if choice == 4:
        return b"\xef\xbb\xbf" + body, "bom"
    if choice == 5:
        i = r.randrange(len(body) + 1)
        return body[:i] + bytes(r.randrange(256) for _ in range(r.randrange(1, 8))) + body[i:], "random bytes"
    if choice == 6:
        return body.replace(b"1", b"NaN", 1), "nan literal"
    if choice == 7:
        return b"", "empty"
    if choice == 8:
        return b"[" * 100000, "deep brackets"
    if choice == 9:
        return body + b" " * r.choice([10, 100000]), "trailing space"
    if choice == 10:
        return b'"\\ud800"', "lone surrogate"
    return body.replace(b"2.0", b"1.0", 1), "version"


def mcp_input(r: random.Random, ctx: Context) -> Input:
    era = r.choice([MODERN, HANDSHAKE])
    method, params = r.choice(_seed_messages(r))
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": r.choice([1, "a", 2**31]), "method": method, "params": params}
    if method.startswith("notifications/"):
        del message["id"]
    if era == MODERN:
        params["_meta"] = {**params.get("_meta", {}), ENVELOPE: MODERN, CAPS: r.choice([{}, {"elicitation": {}}])}
    headers: list[tuple[str, str | bytes]] = [
        ("host", "127.0.0.1"),
        ("authorization", f"Bearer {ctx.key}"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", era),
    ]
    if era == MODERN:
        headers.append(("mcp-method", method))
        name = params.get("uri" if method == "resources/read" else "name")
        if isinstance(name, str):
            headers.append(("mcp-name", name))
    elif method != "initialize":
        headers.append(("mcp-session-id", ctx.session))
    notes = [f"{era} {method}"]
    structural = r.random() < 0.75
    value: Any = message
    if structural:
        value = mutate_json(r, message)
        notes.append("json")
    body = _json_bytes(value)
    if r.random() < 0.15:
        body, note = _raw_mutation(r, body)
        notes.append(note)
    content_length = None
    if r.random() < 0.25:
        headers, note = _header_mutation(r, headers, ctx)
        notes.append(note)
    roll = r.random()
    if roll < 0.001:
        body = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * (5 * 1024 * 1024) + b'"}}'
        notes.append("oversized")
    elif roll < 0.004:
        content_length = len(body) // 2
        notes.append("short content-length")
    http_method = "POST" if r.random() < 0.95 else r.choice(["GET", "DELETE", "PUT", "OPTIONS", "PATCH"])
    return Input(
        http_method,
        r.choice(["/mcp"] * 20 + ["/mcp/", "/MCP", "/mcp?x=1"]),
        headers,
        body,
        content_length,
        " / ".join(notes),
    )


def _header_mutation(
    r: random.Random, headers: list[tuple[str, str | bytes]], ctx: Context
) -> tuple[list[tuple[str, str | bytes]], str]:
    headers = list(headers)
    choice = r.randrange(12)
    names = [k for k, _ in headers]
    if choice == 0:
        name = r.choice(names)
        return [(k, v) for k, v in headers if k != name], f"drop {name}"
    if choice == 1:
        name = r.choice(names)
        return [*headers, (name, r.choice(["", "x", MODERN, "tools/call", "alpha__read_file"]))], f"duplicate {name}"
    if choice == 2:
        return _replace(
            headers,
            "mcp-session-id",
            r.choice(["", "x" * 5000, "../../", ctx.other_session, ctx.session + "x", "\u00e9"]),
        ), "bad session"
    if choice == 3:
        return _replace(
            headers,
            "authorization",
            r.choice(
                [
                    "",
                    "Bearer",
                    "Bearer ",
                    "Basic Zm9vOmJhcg==",
                    f"Bearer {ctx.other_key}",
                    f"bearer  {ctx.key}",
                    f"Bearer {ctx.key}x",
                    "Bearer mgw_",
                    "Bearer mgw_a_b",
                    f"Bearer {ctx.admin_token}",
                ]
            ),
        ), "bad auth"
    if choice == 4:
        return _replace(
            headers,
            "mcp-protocol-version",
            r.choice(["", "2026-07-29", "2024-11-05", "2025-03-26", "x" * 1000, "2026-07-28, 2025-11-25"]),
        ), "bad version"
    if choice == 5:
        return _replace(
            headers,
            "content-type",
            r.choice(
                ["", "text/plain", "application/json; charset=latin-1", "application/jsonx", "multipart/form-data"]
            ),
        ), "ctype"
    if choice == 6:
        return _replace(
            headers, "accept", r.choice(["", "text/html", "text/event-stream", "*/*", "application/*"])
        ), "accept"
    if choice == 7:
        return _replace(headers, "mcp-name", r.choice(["", "other", "=?base64?eA==?=", "\u00e9"])), "mcp-name"
    if choice == 8:
        return _replace(headers, "host", r.choice(["evil.example", "127.0.0.1:1", "", "localhost"])), "host"
    if choice == 9:
        return [*headers, ("origin", r.choice(["http://evil.example", "null", "http://127.0.0.1"]))], "origin"
    if choice == 10:
        return [*headers, ("x-big", "a" * r.choice([1000, 8000, 60000]))], "big header"
    return [*headers, ("mcp-param-path", r.choice(["/etc/passwd", "=?base64?Lw==?="]))], "mcp-param"


def _replace(headers: list[tuple[str, str | bytes]], name: str, value: str) -> list[tuple[str, str | bytes]]:
    out: list[tuple[str, str | bytes]] = [(k, v) for k, v in headers if k != name]
    out.append((name, value.encode("utf-8")))
    return out


ADMIN_GETS = [
    "/status",
    "/kill-switches",
    "/audit",
    "/teams",
    "/principals",
    "/keys",
    "/rules",
    "/policy",
    "/admin-tokens",
    "/openapi.json",
]
ADMIN_QUERY = ["since", "until", "team", "principal", "server", "tool", "decision", "kind", "cursor", "limit", "all"]
QUERY_VALUES = [
    "nan",
    "inf",
    "-inf",
    "1e400",
    "-1",
    "0",
    "1" * 5000,
    "",
    "%00",
    "2026-11-01",
    "2026-13-45T99:99",
    "true",
    "x" * 300,
    "%ff%fe",
    "1.5",
    "😀",
    "+1",
    "0x10",
    "9" * 30,
    "'; drop table audit;--",
]
ADMIN_POSTS = {
    "/kill-switches": {
        "scope": "tool",
        "server": "alpha",
        "tool": "read_file",
        "reason": "fuzz",
        "expires_in_seconds": 60,
    },
    "/teams": {"id": "fuzz-team", "description": "x"},
    "/principals": {"team": "fuzz", "name": "p", "kind": "agent"},
    "/keys": {"team": "fuzz", "name": "k"},
    "/rules": {"id": "r", "team": "fuzz", "effect": "allow", "servers": ["*"]},
    "/policy/reload": {},
    "/kill-switches/ks_000000000000/release": {"reason": "fuzz"},
}


def admin_input(r: random.Random, ctx: Context) -> Input:
    headers: list[tuple[str, str | bytes]] = [("host", "127.0.0.1"), ("content-type", "application/json")]
    token = r.choice([ctx.admin_token] * 6 + ["", ctx.key, "mgwa_x_y"])
    if token:
        headers.append(("authorization", f"Bearer {token}"))
    if r.random() < 0.6:
        path = r.choice(ADMIN_GETS)
        query = "&".join(f"{r.choice(ADMIN_QUERY)}={r.choice(QUERY_VALUES)}" for _ in range(r.randrange(0, 4)))
        method = "GET" if r.random() < 0.95 else r.choice(["DELETE", "PUT"])
        if r.random() < 0.05:
            path, method = (
                r.choice(["/keys/" + r.choice(["x", "0" * 12, "%2e%2e", "a" * 500]), "/rules/" + "x"]),
                "DELETE",
            )
        return Input(method, "/admin/api" + path + ("?" + query if query else ""), headers, b"", None, f"admin {path}")
    path = r.choice(list(ADMIN_POSTS))
    value = mutate_json(r, json.loads(json.dumps(ADMIN_POSTS[path])))
    body = _json_bytes(value)
    note = "json"
    if r.random() < 0.2:
        body, note = _raw_mutation(r, body)
    return Input("POST", "/admin/api" + path, headers, body, None, f"admin POST {path} / {note}")


def make_input(seed: int, index: int, ctx: Context) -> Input:
    r = random.Random(f"{seed}:{index}")
    return admin_input(r, ctx) if r.random() < 0.2 else mcp_input(r, ctx)
