"""What the CLI tests share: configs in a temporary directory, a store that cannot be
reached, and the shape of a failure (one `error:` line per problem, never a traceback)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import yaml


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_file(directory: Path, gateway: dict[str, Any], upstreams: dict[str, Any] | None = None) -> Path:
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump({"upstreams": upstreams or {}, "gateway": gateway}, sort_keys=False))
    return path


def error_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    """stderr's lines, asserted to be `error:` lines and no traceback."""
    text = result.stderr.decode()
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), text
    return lines
