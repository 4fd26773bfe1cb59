"""The protocol facts the gateway defines itself are the SDK's, and the revisions it serves
are the ones it was built for: an SDK upgrade that moves either fails here, not on the wire."""

from __future__ import annotations

import mcp.server.streamable_http as sdk_http
import mcp.shared.inbound as sdk_inbound
import mcp.shared.subscriptions as sdk_subscriptions

from mcp_gateway import protocol


def test_the_header_names_the_gateway_defines_are_the_sdks_in_lowercase() -> None:
    assert protocol.MCP_PROTOCOL_VERSION_HEADER == sdk_inbound.MCP_PROTOCOL_VERSION_HEADER
    assert protocol.MCP_METHOD_HEADER == sdk_inbound.MCP_METHOD_HEADER
    assert protocol.MCP_NAME_HEADER == sdk_inbound.MCP_NAME_HEADER
    assert sdk_inbound.MCP_PARAM_HEADER_PREFIX.lower() == protocol.MCP_PARAM_HEADER_PREFIX
    assert protocol.X_MCP_HEADER_KEY == sdk_inbound.X_MCP_HEADER_KEY
    assert protocol.MCP_SESSION_ID_HEADER == sdk_http.MCP_SESSION_ID_HEADER
    assert protocol.LAST_EVENT_ID_HEADER == sdk_http.LAST_EVENT_ID_HEADER


def test_the_subscription_id_key_is_the_sdks() -> None:
    assert protocol.SUBSCRIPTION_ID_META_KEY == sdk_subscriptions.SUBSCRIPTION_ID_META_KEY


def test_the_gateway_serves_the_revisions_it_was_built_for() -> None:
    assert protocol.MODERN_PROTOCOL_VERSIONS == ("2026-07-28",)
    assert protocol.HANDSHAKE_PROTOCOL_VERSIONS == ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
    assert protocol.LATEST_MODERN_VERSION == "2026-07-28"
    assert protocol.LATEST_HANDSHAKE_VERSION == "2025-11-25"


def test_the_envelope_is_the_four_request_keys_of_2026_07_28() -> None:
    assert {
        "io.modelcontextprotocol/protocolVersion",
        "io.modelcontextprotocol/clientCapabilities",
        "io.modelcontextprotocol/clientInfo",
        "io.modelcontextprotocol/logLevel",
    } == protocol.ENVELOPE_META_KEYS


def test_every_name_the_module_offers_exists() -> None:
    missing = [name for name in protocol.__all__ if not hasattr(protocol, name)]
    assert missing == []
