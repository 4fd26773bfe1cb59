"""The gateway's HTTP limits come from its settings: the config file's `gateway:` section
reaches the protocol that `serve` runs (the limits themselves: tests/adversarial/test_http_limits.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest

from mcp_gateway.errors import ConfigError
from mcp_gateway.settings import load_settings
from mcp_gateway.transport.server import ConnectionLimits

from ..support import serve, write_config

pytestmark = pytest.mark.anyio


async def test_the_configured_header_limit_refuses_a_head_at_mcp(tmp_path: Path) -> None:
    config = write_config(tmp_path, {}, max_header_bytes=2048, header_timeout=30)

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer " + b"k" * 4096)
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass
            return data

    async with serve(config) as (url, _):
        with anyio.fail_after(20):
            answer = await anyio.to_thread.run_sync(client, int(url.rsplit(":", 1)[1].split("/")[0]))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]


def test_the_limits_are_read_from_the_settings_of_the_same_names() -> None:
    settings = load_settings(
        {"max_header_bytes": 4096, "max_headers": 50, "header_timeout": 3, "body_timeout": 7, "max_connections": 9}
    )
    assert ConnectionLimits.of(settings) == ConnectionLimits(4096, 50, 3.0, 7.0, 9)


def test_a_header_limit_too_small_for_any_real_client_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_header_bytes"):
        load_settings({"max_header_bytes": 100})
