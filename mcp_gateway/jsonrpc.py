"""JSON-RPC 2.0 messages as plain dicts: parsing, building and the shape checks the proxy needs.

The gateway relays messages rather than re-modelling them: what an upstream sends is
forwarded with only the fields the gateway owns rewritten (ids, names, progress tokens),
so fields it does not know about survive. orjson keeps parsing and encoding off the
profile.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import orjson

from .errors import GatewayError, ProtocolError
from .protocol import INVALID_REQUEST, PARSE_ERROR

Message = dict[str, Any]
RequestId = str | int

MAX_DEPTH = 64
"""The deepest nesting of objects and arrays a message may have (the envelope counts as
one level; a tool's arguments start at three). No MCP message needs more; orjson would
take 1024 but cannot write back more than 255, and deep values make every later walk over
them (schema checks, redaction, hashing, encoding) recursive work an attacker chooses."""


def dumps(message: Message) -> bytes:
    return orjson.dumps(message)


Data = bytes | bytearray | memoryview | str


def loads(data: Data) -> Any:
    """Decode JSON; raises `ProtocolError(PARSE_ERROR)` on anything that is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(PARSE_ERROR, f"Parse error: {exc}") from None


def is_request_id(value: Any) -> TypeGuard[RequestId]:
    return isinstance(value, str | int) and not isinstance(value, bool)


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests objects and arrays more than `limit` levels deep (iteratively:
    the check itself must not recurse)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _may_nest_deeper(data: Data, limit: int) -> bool:
    # Fewer brackets than the limit cannot nest deeper than it: most messages skip the walk.
    if isinstance(data, str):
        return data.count("{") + data.count("[") > limit
    if isinstance(data, memoryview):
        data = data.obj if isinstance(data.obj, bytes | bytearray) and len(data) == len(data.obj) else bytes(data)
    return data.count(b"{") + data.count(b"[") > limit


def parse_incoming(data: Data, *, max_depth: int = MAX_DEPTH) -> Message:
    """Decode one JSON-RPC message from a peer and check its envelope.

    Batches are refused (MCP dropped them); so is anything that is not a request,
    notification or response, and anything nested deeper than `max_depth`.
    """
    decoded = loads(data)
    if isinstance(decoded, dict | list) and _may_nest_deeper(data, max_depth) and depth_exceeds(decoded, max_depth):
        raise ProtocolError(
            INVALID_REQUEST, f"Invalid request: the message nests objects and arrays more than {max_depth} levels deep"
        )
    if isinstance(decoded, list):
        raise ProtocolError(INVALID_REQUEST, "Batches are not supported: send one JSON-RPC message per request")
    if not isinstance(decoded, dict):
        raise ProtocolError(INVALID_REQUEST, "A JSON-RPC message must be an object")
    check_envelope(decoded)
    return decoded


def check_envelope(msg: Message) -> None:
    if msg.get("jsonrpc") != "2.0":
        raise ProtocolError(INVALID_REQUEST, 'Invalid request: "jsonrpc" must be "2.0"')
    if "method" in msg:
        if not isinstance(msg["method"], str) or not msg["method"]:
            raise ProtocolError(INVALID_REQUEST, 'Invalid request: "method" must be a non-empty string')
        if "id" in msg and not is_request_id(msg["id"]):
            raise ProtocolError(INVALID_REQUEST, 'Invalid request: "id" must be a string or an integer')
        params = msg.get("params")
        if params is not None and not isinstance(params, dict):
            raise ProtocolError(INVALID_REQUEST, 'Invalid request: "params" must be an object')
    elif "result" in msg or "error" in msg:
        if not is_request_id(msg.get("id")):
            raise ProtocolError(INVALID_REQUEST, "Invalid response: missing id")
    else:
        raise ProtocolError(INVALID_REQUEST, "Invalid message: neither a request, a notification nor a response")


def is_request(msg: Message) -> bool:
    return "method" in msg and "id" in msg


def is_notification(msg: Message) -> bool:
    return "method" in msg and "id" not in msg


def is_response(msg: Message) -> bool:
    return "method" not in msg and ("result" in msg or "error" in msg)


def request(id: RequestId, method: str, params: dict[str, Any] | None = None) -> Message:
    msg: Message = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def notification(method: str, params: dict[str, Any] | None = None) -> Message:
    msg: Message = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def result(id: RequestId | None, value: dict[str, Any]) -> Message:
    return {"jsonrpc": "2.0", "id": id, "result": value}


def error(id: RequestId | None, exc: GatewayError) -> Message:
    return {"jsonrpc": "2.0", "id": id, "error": exc.to_error()}


def params_of(msg: Message) -> dict[str, Any]:
    params = msg.get("params")
    return params if isinstance(params, dict) else {}


def meta_of(params: dict[str, Any]) -> dict[str, Any]:
    meta = params.get("_meta")
    return meta if isinstance(meta, dict) else {}
