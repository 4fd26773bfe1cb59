"""A stdio MCP server that writes down every message it receives, for the property tests
and the fuzz harness: the log is the ground truth of what reached an upstream.

Plain JSON-RPC over stdin/stdout, no SDK, so nothing between the gateway and the log can
drop, merge or rewrite a message. `RECORDER_LOG` names the log (one JSON object a line:
the message as received); `RECORDER_ERA=modern` makes it answer `server/discover` (and so
be spoken to at 2026-07-28), otherwise it only knows the `initialize` handshake.

What it serves (the same on every instance, so rules over server names matter):
tools `read_file`, `write_file`, `delete_file`, `search` (record and echo); `poke`, which
sends `notifications/resources/updated` for its `uri` argument before answering (how a test
makes an upstream event happen); `ask`, which needs client input (an elicitation request
at handshake revisions, an `input_required` result at 2026-07-28); prompts `greet`,
`summarize`, `admin_reset`; resources under `file:///srv/public/`, `file:///srv/secret/`
and `test://static/`; a template `test://template/{id}/data`; completions for all.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

MODERN = "2026-07-28"
LOG = os.environ.get("RECORDER_LOG")
ERA = os.environ.get("RECORDER_ERA", "handshake")

_OPEN = {"type": "object", "properties": {"path": {"type": "string"}, "text": {"type": "string"}}}
TOOLS = [
    {"name": name, "description": f"{name} (recorded)", "inputSchema": _OPEN}
    for name in ("read_file", "write_file", "delete_file", "search", "poke", "ask")
]
PROMPTS = [
    {"name": name, "description": f"{name} (recorded)", "arguments": [{"name": "topic", "required": False}]}
    for name in ("greet", "summarize", "admin_reset")
]
RESOURCES = [
    {"uri": uri, "name": uri.rsplit("/", 1)[-1], "mimeType": "text/plain"}
    for uri in (
        "file:///srv/public/readme.txt",
        "file:///srv/public/notes.txt",
        "file:///srv/secret/keys.txt",
        "test://static/1",
        "test://static/2",
    )
]
TEMPLATES = [{"uriTemplate": "test://template/{id}/data", "name": "template", "mimeType": "text/plain"}]
CAPABILITIES = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "completions": {},
}


def _write(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _record(message: dict[str, Any]) -> None:
    if LOG:
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(message) + "\n")


def _text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}], "isError": False}


_pending_asks: dict[str, Any] = {}
_ask_ids = iter(range(1, 1 << 62))


def _tool(request_id: Any, params: dict[str, Any]) -> dict[str, Any] | None:
    name = params.get("name")
    arguments = params.get("arguments") or {}
    if name == "poke":
        _write({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": arguments.get("uri")}})
        return _text("poked")
    if name == "ask":
        if ERA == MODERN:
            if "inputResponses" in params:
                return _text(f"answered {json.dumps(params['inputResponses'], sort_keys=True)}")
            return {
                "resultType": "input_required",
                "inputRequests": {"q": {"method": "elicitation/create", "params": _ELICIT}},
                "requestState": "recorder-state",
            }
        ask_id = f"rec-{next(_ask_ids)}"
        _pending_asks[ask_id] = request_id
        _write({"jsonrpc": "2.0", "id": ask_id, "method": "elicitation/create", "params": _ELICIT})
        return None  # answered when the client's answer comes back
    return _text(f"{name} {json.dumps(arguments, sort_keys=True)}")


_ELICIT = {
    "mode": "form",
    "message": "Proceed?",
    "requestedSchema": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
}


def _answer(method: str, request_id: Any, params: dict[str, Any]) -> dict[str, Any] | None:
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": CAPABILITIES,
            "serverInfo": {"name": "recorder", "version": "1"},
        }
    if method == "server/discover":
        if ERA != MODERN:
            raise LookupError(method)
        return {
            "supportedVersions": [MODERN],
            "capabilities": CAPABILITIES,
            "serverInfo": {"name": "recorder", "version": "1"},
        }
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "prompts/list":
        return {"prompts": PROMPTS}
    if method == "resources/list":
        return {"resources": RESOURCES}
    if method == "resources/templates/list":
        return {"resourceTemplates": TEMPLATES}
    if method == "tools/call":
        return _tool(request_id, params)
    if method == "prompts/get":
        text = f"{params.get('name')} {json.dumps(params.get('arguments') or {}, sort_keys=True)}"
        return {"messages": [{"role": "user", "content": {"type": "text", "text": text}}]}
    if method == "resources/read":
        uri = params.get("uri")
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": f"contents of {uri}"}]}
    if method in ("resources/subscribe", "resources/unsubscribe"):
        return {}
    if method == "completion/complete":
        return {"completion": {"values": ["alpha", "beta"], "total": 2, "hasMore": False}}
    if method == "subscriptions/listen":
        return None  # a stream: it stays open until the gateway cancels it
    raise LookupError(method)


def main() -> None:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        _record(message)
        if not isinstance(message, dict):
            continue
        method = message.get("method")
        request_id = message.get("id")
        if method is None:
            waiting = _pending_asks.pop(request_id, None) if isinstance(request_id, str) else None
            if waiting is not None:
                answer = message.get("result") or message.get("error")
                _write({"jsonrpc": "2.0", "id": waiting, "result": _text(f"answered {json.dumps(answer)}")})
            continue
        if request_id is None:
            continue  # a notification
        raw = message.get("params")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        try:
            result = _answer(method, request_id, params)
        except LookupError:
            _write({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"no {method}"}})
            continue
        if result is not None:
            _write({"jsonrpc": "2.0", "id": request_id, "result": result})


if __name__ == "__main__":
    main()
