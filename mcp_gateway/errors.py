"""The gateway's error tree.

Every error the gateway raises on purpose derives from `GatewayError` and carries the
JSON-RPC code it is rendered with, so one place (`to_error`) turns it into a wire error;
the admin API's errors carry their HTTP status instead, and one exception handler renders
them::

    GatewayError                       -32603 unless a subclass says otherwise
    ├── ProtocolError                  a malformed or unsupported request (-32600 / -32602 / -32601 ...)
    ├── Denied                         the gateway refuses the call: policy, kill switch, no audit (-32050)
    │   ├── AuditUnavailable           its audit row could not be committed, so the call is not made
    │   └── limits.LimitReached        a principal holds as much as its limit allows
    ├── UpstreamError                  the upstream could not answer (-32051); `UpstreamTimeout` (-32052)
    │   ├── UpstreamTimeout
    │   └── proxy.payload.ResponseRefused  an answer too large to hold (its own code)
    ├── RpcError                       an error *received* from a peer, forwarded as it came (its code
    │                                  is the peer's)
    ├── ConfigError                    a config or policy file is wrong; carries file:line problems
    └── ApiError                       an admin API request refused or failed: its HTTP status and
                                       the API's own error code (`not_found`, `forbidden` ...)

Denials and upstream failures carry a `data` object naming the reason, so agents
and people can see why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .protocol import INTERNAL_ERROR

# The gateway's own codes, stable across releases: clients may match on them. The
# protocol's codes (JSON-RPC's, MCP's) are in `protocol`.
GATEWAY_DENIED = -32050
UPSTREAM_UNAVAILABLE = -32051
UPSTREAM_TIMEOUT = -32052
RESPONSE_REFUSED = -32053
"""An upstream's answer the gateway will not hold (see `proxy.payload`)."""


class GatewayError(Exception):
    """Base of every error the gateway raises deliberately."""

    code: int = INTERNAL_ERROR

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_error(self) -> dict[str, Any]:
        """The JSON-RPC `error` member."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ProtocolError(GatewayError):
    """A request the gateway cannot serve as sent."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message, data)
        self.code = code


class Denied(GatewayError):
    """The gateway refuses the request; `data` names the reason, rule and policy version."""

    code = GATEWAY_DENIED


class AuditUnavailable(Denied):
    """The audit row could not be committed; the call it described does not happen."""


class UpstreamError(GatewayError):
    """The upstream server failed to answer: down, crashed, or broke the protocol."""

    code = UPSTREAM_UNAVAILABLE


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within its timeout."""

    code = UPSTREAM_TIMEOUT


class RpcError(GatewayError):
    """An error response received from a peer, kept verbatim so it can be forwarded."""

    def __init__(self, error: dict[str, Any]) -> None:
        code = error.get("code")
        message = error.get("message")
        super().__init__(message if isinstance(message, str) else "error", error.get("data"))
        self.code = code if isinstance(code, int) and not isinstance(code, bool) else INTERNAL_ERROR
        self.error = error

    def to_error(self) -> dict[str, Any]:
        return self.error


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a file: where, and what."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class ConfigError(GatewayError):
    """A configuration or policy file is invalid; `problems` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = list(problems)


class ApiError(GatewayError):
    """An admin API request refused or failed. Routes raise it; the admin API's one exception
    handler answers HTTP `status` with `{"error": to_error()}` and `headers`. `api_code` is
    the API's own error code (`not_found`, `invalid_request` ...): the JSON-RPC `code` of the
    base means nothing on this API, and is not sent."""

    def __init__(
        self,
        status: int,
        api_code: str,
        message: str,
        *,
        fields: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.api_code = api_code
        self.fields = fields
        """More members of the error object, after `code` and `message` (403 names the roles)."""
        self.headers = headers

    def to_error(self) -> dict[str, Any]:
        """The response's `error` object."""
        error: dict[str, Any] = {"code": self.api_code, "message": self.message}
        if self.fields is not None:
            error.update(self.fields)
        return error
