"""Prometheus metrics: the instruments the request path records into, and the registry
`/metrics` exposes.

Every gateway has its own `CollectorRegistry` (tests run several in one process). Label
sets are bounded: servers and teams are configured; a tool or prompt is labelled by name
only when it came from the catalog (a name the catalog does not have is `_unknown`, a
resource is `_resource`: URIs under a template are unbounded); methods outside the
protocol's are `_other`; principals are never labels. The request path reaches a label
set's child through a dict lookup, not `labels()` (which validates and locks each time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "mcp_gateway"

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Seconds: 0.1-10 ms resolved finely (the gateway's own cost lives there), then coarser to
the upstream timeouts."""

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

METHODS = frozenset(
    {
        "initialize",
        "server/discover",
        "ping",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "tools/call",
        "prompts/get",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "completion/complete",
        "logging/setLevel",
        "subscriptions/listen",
    }
)
UNKNOWN = "_unknown"
RESOURCE = "_resource"
OTHER = "_other"


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def denial_reason(reason: str, rule_id: str | None, kill_switch_id: str | None) -> str:
    """A denial's reason as one of a few label values (the reason text itself is free)."""
    if kill_switch_id is not None or reason.startswith("kill switch"):
        return "kill_switch"
    if rule_id is not None:
        return "rule"
    if reason.startswith("the policy snapshot is stale"):
        return "stale_snapshot"
    if reason.startswith("ambiguous"):
        return "ambiguous_uri"
    if reason.startswith(("no such", "the request names no")):
        return "unknown_target"
    if reason == "audit unavailable":
        return "audit_unavailable"
    return "no_rule"


class Metrics:
    """The gateway's instruments, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "MCP requests answered, by method, team and result (ok, error).",
            ["method", "team", "result"],
            registry=r,
        )
        self.calls = Counter(
            f"{PREFIX}_calls",
            "Governed requests (calls, reads, prompts, subscriptions, completions) by target, decision and outcome.",
            ["server", "tool", "team", "method", "decision", "outcome"],
            registry=r,
        )
        self.denials = Counter(f"{PREFIX}_denials", "Requests denied, by reason.", ["reason"], registry=r)
        self.added = Histogram(
            f"{PREFIX}_added_latency_seconds",
            "Time the gateway added to a request: its whole time less the time spent waiting on upstreams.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream = Histogram(
            f"{PREFIX}_upstream_latency_seconds",
            "Time from forwarding a request upstream to its answer, by server.",
            ["server"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audit_batch = Histogram(
            f"{PREFIX}_audit_commit_batch_rows",
            "Audit rows written per commit.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.audit_commit = Histogram(
            f"{PREFIX}_audit_commit_seconds",
            "Time one audit commit took.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audit_failures = Counter(f"{PREFIX}_audit_commit_failures", "Audit commits that failed.", registry=r)
        self._requests: dict[tuple[str, str, str], Any] = {}
        self._calls: dict[tuple[str, str, str, str, str, str], Any] = {}
        self._denials: dict[str, Any] = {}
        self._added: dict[str, Any] = {}
        self._upstream: dict[str, Any] = {}

    def request(self, method: str, team: str, result: str, added: float) -> None:
        method = method_label(method)  # first: a caller's made-up method must not grow the caches
        key = (method, team, result)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(method, team, result)
        child.inc()
        hist = self._added.get(method)
        if hist is None:
            hist = self._added[method] = self.added.labels(method)
        hist.observe(added)

    def call(self, server: str, tool: str, team: str, method: str, decision: str, outcome: str) -> None:
        key = (server, tool, team, method_label(method), decision, outcome)
        child = self._calls.get(key)
        if child is None:
            child = self._calls[key] = self.calls.labels(*key)
        child.inc()

    def denied(self, reason: str) -> None:
        child = self._denials.get(reason)
        if child is None:
            child = self._denials[reason] = self.denials.labels(reason)
        child.inc()

    def upstream_latency(self, server: str, seconds: float) -> None:
        child = self._upstream.get(server)
        if child is None:
            child = self._upstream[server] = self.upstream.labels(server)
        child.observe(seconds)

    def audit_committed(self, rows: int, seconds: float, ok: bool) -> None:
        self.audit_batch.observe(rows)
        self.audit_commit.observe(seconds)
        if not ok:
            self.audit_failures.inc()

    def gauges(self, read: Callable[[], Iterable[Metric]]) -> None:
        """Register state read at scrape time (what is open, engaged, up), not on the request path."""
        self.registry.register(_Read(read))


class _Read(Collector):
    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return self._read()


def gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)
