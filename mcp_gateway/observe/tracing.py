"""OpenTelemetry traces, exported over OTLP/HTTP when an endpoint is configured.

Without an endpoint nothing is built: `Tracing.tracer` is None and the request path skips
every span (the OpenTelemetry SDK is not even imported, so it is an optional extra:
`pip install 'mcp-gateway[otel]'`). With one, each request is a SERVER span whose parent
is the client's W3C trace context (`params._meta.traceparent`, as MCP clients send it, else
the HTTP `traceparent` header), with child spans for the audit wait and the upstream call;
the upstream call's span is what the upstream is told as its parent.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..errors import ConfigError, Problem

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACES_PATH = "/v1/traces"
_SHAPE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_propagator = TraceContextTextMapPropagator()

SERVER, CLIENT, INTERNAL = SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL


def endpoint(configured: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """Where spans go: the `otlp_endpoint` setting, else the standard variables
    (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, `OTEL_EXPORTER_OTLP_ENDPOINT` with
    `/v1/traces` added, as the OTLP/HTTP specification says); None for nowhere. A setting
    that does not end in `/v1/traces` is a base URL, like the second variable."""
    if configured:
        base = configured.rstrip("/")
        return base if base.endswith(_TRACES_PATH) else base + _TRACES_PATH
    traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip().rstrip("/")
    return base + _TRACES_PATH if base else None


def trace_id(traceparent: str | None) -> str | None:
    """The trace id a W3C `traceparent` names, if it is well formed."""
    if traceparent is None:
        return None
    match = _SHAPE.match(traceparent)
    return match.group(1) if match is not None else None


class Tracing:
    """A tracer provider with its OTLP/HTTP exporter, or nothing (`tracer` None)."""

    def __init__(self, url: str | None, service_name: str = "mcp-gateway", replica: str | None = None) -> None:
        self.url = url
        self.tracer: Tracer | None = None
        self._provider: Any = None
        if url is None:
            return
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            raise ConfigError(
                [
                    Problem(
                        "settings",
                        None,
                        "otlp_endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT) is set but the OpenTelemetry SDK is not "
                        "installed: pip install 'mcp-gateway[otel]'",
                    )
                ]
            ) from None
        attributes = {"service.name": service_name}
        if replica:
            attributes["service.instance.id"] = replica
        provider = TracerProvider(resource=Resource.create(attributes))
        # Batched on the SDK's own thread: the request path only hands a finished span over.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url, timeout=5)))
        self._provider = provider
        self.tracer = provider.get_tracer("mcp_gateway")

    def shutdown(self) -> None:
        """Export what is still queued (bounded by the exporter's timeout), then stop."""
        if self._provider is not None:
            self._provider.shutdown()


def parent(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The client's trace context as a parent, or None when it sent none (or a malformed one)."""
    if traceparent is None:
        return None
    carrier = {TRACEPARENT: traceparent}
    if tracestate:
        carrier[TRACESTATE] = tracestate
    context = _propagator.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def child_context(span: Span) -> Context:
    return trace.set_span_in_context(span)


def traceparent_of(span: Span) -> str | None:
    """`span` as the `traceparent` an upstream is told."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT)
