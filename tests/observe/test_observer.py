"""The observer's calls for one request, in process: with metrics on and nothing else, the
time a request spends upstream is in the upstream histogram and left out of the gateway's
added latency; the access line still gets the decision when the access log is on."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import generate_latest

from mcp_gateway.observe.metrics import Metrics
from mcp_gateway.observe.observer import Observer, access_log
from mcp_gateway.policy_model import Decision, Target

TARGET = Target("x", "tool", "echo")
ALLOW = Decision("allow", "rule r", "r", 3)


def _request(observer: Observer, upstream_seconds: float) -> None:
    o = observer.begin("tools/call", "ops/bot", "ops", {}, None)
    observer.decided(TARGET, ALLOW)
    with observer.audit_wait():
        pass
    with observer.upstream("x", "tools/call"):
        time.sleep(upstream_seconds)
    observer.completed(TARGET, "ops", "tools/call", "allow", "ok")
    observer.end(o, None)


def _sample(text: str, line_start: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(line_start)).rsplit(" ", 1)[1])


def test_time_spent_upstream_is_in_the_upstream_histogram_and_not_in_the_added_latency() -> None:
    metrics = Metrics()
    _request(Observer(metrics), 0.05)
    text = generate_latest(metrics.registry).decode()
    assert _sample(text, 'mcp_gateway_upstream_latency_seconds_count{server="x"}') == 1
    assert _sample(text, 'mcp_gateway_upstream_latency_seconds_sum{server="x"}') >= 0.05
    assert _sample(text, 'mcp_gateway_added_latency_seconds_count{method="tools/call"}') == 1
    assert _sample(text, 'mcp_gateway_added_latency_seconds_sum{method="tools/call"}') < 0.025


def test_with_metrics_on_the_access_line_still_carries_the_decision_and_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    observer = Observer(Metrics())
    with caplog.at_level(logging.INFO, logger=access_log.name):
        _request(observer, 0.0)
    (record,) = [r for r in caplog.records if r.name == access_log.name]
    assert (record.target, record.decision, record.outcome, record.team) == ("echo", "allow", "ok", "ops")  # type: ignore[attr-defined]
