"""The request path's own counters and histograms (records folded into plain dicts in
batches, and at each scrape) expose exactly what prometheus_client's `Counter` and
`Histogram` would for the same events, and a caller's made-up method is one label value,
not a series of its own. In process: this is the metrics' logic, not a deployment."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mcp_gateway.observe.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Metrics
from mcp_gateway.policy_model import Target

LATENCIES = (0.0, 0.00005, 0.0001, 0.0003, 0.0015, 0.002, 0.04, 0.7, 12.0, 31.0, 0.00025, 0.0001)
METHODS = ("tools/call", "resources/read", "tools/call", "made/up", "ping", "another/made-up")
TARGETS = (  # a target, and its server and tool labels: a resource's URI or a name nobody serves is no label
    (Target("x", "tool", "echo"), "x", "echo"),
    (Target("y", "resource", "file:///etc/motd"), "y", "_resource"),
    (Target("", "tool", "no_such_tool"), "_unknown", "_unknown"),
    (Target("z", "prompt", "greet"), "z", "greet"),
)


def _exposition(registry: CollectorRegistry) -> list[str]:
    """The exposition's lines, in order, without the `_created` samples only the library's
    own instruments have (the gateway's counters start with the process)."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_recorded_events_expose_as_prometheus_clients_own_instruments_would_for_the_same_events() -> None:
    metrics = Metrics()
    library = CollectorRegistry()

    def counter(ours: object) -> Counter:
        return Counter(ours.name, ours.documentation, ours.labels, registry=library)  # type: ignore[attr-defined]

    def histogram(ours: object, buckets: tuple[float, ...]) -> Histogram:
        name, doc, labels = ours.name, ours.documentation, ours.labels  # type: ignore[attr-defined]
        return Histogram(name, doc, labels, registry=library, buckets=buckets)

    requests, calls, denials = counter(metrics.requests), counter(metrics.calls), counter(metrics.denials)
    added, upstream = histogram(metrics.added, LATENCY_BUCKETS), histogram(metrics.upstream, LATENCY_BUCKETS)
    batch, commit = histogram(metrics.audit_batch, BATCH_BUCKETS), histogram(metrics.audit_commit, LATENCY_BUCKETS)
    failures = counter(metrics.audit_failures)

    for n, seconds in enumerate(LATENCIES * 12):  # more than FOLD_AT of each: batches folded, and a rest at the scrape
        method = METHODS[n % len(METHODS)]
        label = method if "/made" not in method and "made/" not in method else "_other"
        team, result, server = ("ops", "dev")[n % 2], ("ok", "error")[n % 3 == 0], ("x", "y", "z")[n % 3]
        metrics.request(method, team, result, seconds)
        requests.labels(label, team, result).inc()
        added.labels(label).observe(seconds)
        target, server_label, tool_label = TARGETS[n % len(TARGETS)]
        metrics.call(target, team, method, "allow", "ok")
        calls.labels(server_label, tool_label, team, label, "allow", "ok").inc()
        metrics.upstream_latency(server, seconds * 2)
        upstream.labels(server).observe(seconds * 2)
        if n % 4 == 0:
            metrics.denied("rule")
            denials.labels("rule").inc()
        metrics.audit_committed(n % 40, seconds, ok=n % 5 != 0)
        batch.observe(n % 40)
        commit.observe(seconds)
        if n % 5 == 0:
            failures.inc()

    assert _exposition(metrics.registry) == _exposition(library)


def test_a_made_up_method_is_counted_under_other_and_adds_no_series_or_cache_entry_of_its_own() -> None:
    metrics = Metrics()
    for n in range(500):
        metrics.request(f"made/up/{n}", "ops", "ok", 0.001)
        metrics.call(Target("x", "tool", "echo"), "ops", f"made/up/{n}", "allow", "ok")
    text = generate_latest(metrics.registry).decode()
    assert 'mcp_gateway_requests_total{method="_other",result="ok",team="ops"} 500.0' in text
    assert 'mcp_gateway_added_latency_seconds_count{method="_other"} 500.0' in text
    assert (
        'mcp_gateway_calls_total{decision="allow",method="_other",outcome="ok",server="x",team="ops",tool="echo"} 500.0'
        in text
    )
    assert "made/up" not in text
    assert len(metrics._answered) == 1  # what each fold looks up stays as bounded as the labels
