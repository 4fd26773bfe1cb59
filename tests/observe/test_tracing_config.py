"""Where spans go, and what a client's trace context is taken to be."""

from __future__ import annotations

from mcp_gateway.observe import tracing


def test_the_endpoint_is_the_setting_else_the_standard_variables_and_none_without_them() -> None:
    assert tracing.endpoint(None, {}) is None
    assert tracing.endpoint("http://collector:4318", {}) == "http://collector:4318/v1/traces"
    assert tracing.endpoint("http://collector:4318/v1/traces", {}) == "http://collector:4318/v1/traces"
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318/"}
    assert tracing.endpoint(None, base) == "http://otel:4318/v1/traces"
    both = {**base, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom"}
    assert tracing.endpoint(None, both) == "http://traces:4318/custom"
    assert tracing.endpoint("http://mine:4318", both) == "http://mine:4318/v1/traces"


def test_without_an_endpoint_nothing_is_built_and_a_malformed_traceparent_is_no_parent() -> None:
    assert tracing.Tracing(None).tracer is None
    assert tracing.parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") is not None
    for bad in (None, "", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"):
        assert tracing.parent(bad) is None
    assert tracing.trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert tracing.trace_id("x" * 10_000) is None
