"""Protocol facts: the MCP revisions the gateway speaks, the reserved `_meta` keys, the HTTP
header names and the JSON-RPC and MCP error codes, each defined once.

Where the SDK's `mcp_types` exports a fact it is taken from there, under the SDK's name, so
the gateway and the SDK cannot disagree. The rest is defined here: the SDK keeps some in
`mcp.shared` or `mcp.server` modules, whose import (the whole `mcp` package, ~250 ms) every
command line call would pay, since this module sits at the bottom of the package;
`tests/unit/test_protocol.py` holds those copies equal to the SDK's. The gateway's own error
codes (denied, upstream down...) are not protocol facts: they live in `errors`.
"""

from __future__ import annotations

from typing import Final

from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
)
from mcp_types.jsonrpc import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    LATEST_MODERN_VERSION,
    MODERN_PROTOCOL_VERSIONS,
)

__all__ = [
    "CLIENT_CAPABILITIES_META_KEY",
    "CLIENT_INFO_META_KEY",
    "ENVELOPE_META_KEYS",
    "HANDSHAKE_PROTOCOL_VERSIONS",
    "HEADER_MISMATCH",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "LAST_EVENT_ID_HEADER",
    "LATEST_HANDSHAKE_VERSION",
    "LATEST_MODERN_VERSION",
    "LOG_LEVEL_META_KEY",
    "MCP_METHOD_HEADER",
    "MCP_NAME_HEADER",
    "MCP_PARAM_HEADER_PREFIX",
    "MCP_PROTOCOL_VERSION_HEADER",
    "MCP_SESSION_ID_HEADER",
    "METHOD_NOT_FOUND",
    "MISSING_REQUIRED_CLIENT_CAPABILITY",
    "MODERN_PROTOCOL_VERSIONS",
    "PARSE_ERROR",
    "PROTOCOL_VERSION_META_KEY",
    "RELATED_TASK_META_KEY",
    "RESOURCE_NOT_FOUND",
    "SERVER_INFO_META_KEY",
    "SUBSCRIPTION_ID_META_KEY",
    "TASKS_EXTENSION",
    "UNSUPPORTED_PROTOCOL_VERSION",
    "X_MCP_HEADER_KEY",
]

# -- revisions (mcp_types.version) ------------------------------------------------------
# MODERN_PROTOCOL_VERSIONS: the per-request era (2026-07-28), no sessions.
# HANDSHAKE_PROTOCOL_VERSIONS: reached with `initialize` (2024-11-05 ... 2025-11-25).
# LATEST_MODERN_VERSION: what the gateway speaks to modern clients and upstreams.
# LATEST_HANDSHAKE_VERSION: what it offers an upstream at `initialize`, and answers a client
# that asked for a revision it does not know.

# -- `_meta` keys -----------------------------------------------------------------------
# From mcp_types: PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY,
# CLIENT_INFO_META_KEY, LOG_LEVEL_META_KEY (the 2026-07-28 request envelope) and
# SERVER_INFO_META_KEY (the server's stamp on each result).

ENVELOPE_META_KEYS: Final = frozenset(
    {PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, LOG_LEVEL_META_KEY}
)
"""The 2026-07-28 per-request envelope: what the sender of a request sets, about itself."""

SUBSCRIPTION_ID_META_KEY: Final = "io.modelcontextprotocol/subscriptionId"
"""On every frame of a `subscriptions/listen` stream: the id of the listen request
(`mcp.shared.subscriptions`)."""

RELATED_TASK_META_KEY: Final = "io.modelcontextprotocol/related-task"
"""On a 2025-11-25 task's result and messages: the task they belong to."""

TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"
"""The tasks extension (SEP-2663), as named in `capabilities.extensions`."""

# -- HTTP headers, lowercase as the gateway compares them --------------------------------

MCP_PROTOCOL_VERSION_HEADER: Final = "mcp-protocol-version"
MCP_METHOD_HEADER: Final = "mcp-method"
MCP_NAME_HEADER: Final = "mcp-name"
"""The SEP-2243 routing headers (`mcp.shared.inbound`)."""

MCP_PARAM_HEADER_PREFIX: Final = "mcp-param-"
"""Headers mirroring a tool's arguments (`Mcp-Param-*`, SEP-2243)."""

X_MCP_HEADER_KEY: Final = "x-mcp-header"
"""The input-schema annotation that mirrors an argument into an `Mcp-Param-*` header."""

MCP_SESSION_ID_HEADER: Final = "mcp-session-id"
LAST_EVENT_ID_HEADER: Final = "last-event-id"
"""The handshake era's session and stream resumption headers (`mcp.server.streamable_http`)."""

# -- error codes ------------------------------------------------------------------------
# From mcp_types.jsonrpc: PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS,
# INTERNAL_ERROR (JSON-RPC); HEADER_MISMATCH, MISSING_REQUIRED_CLIENT_CAPABILITY,
# UNSUPPORTED_PROTOCOL_VERSION (2026-07-28).

RESOURCE_NOT_FOUND: Final = -32002
"""A resource no upstream serves (the code of the 2025-11-25 revisions; 2026-07-28 retired it
from new allocations, and the SDK exports no name for it)."""
