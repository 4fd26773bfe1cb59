"""Prometheus metrics: the instruments the request path records into, and the registry
`/metrics` exposes.

Every gateway has its own `CollectorRegistry` (tests run several in one process). Label
sets are bounded: servers and teams are configured; a tool or prompt is labelled by name
only when it came from the catalog (a name the catalog does not have is `_unknown`, a
resource is `_resource`: URIs under a template are unbounded); methods outside the
protocol's are `_other`; principals are never labels.

The request path records into plain dicts on the event loop's thread (see `_Counter`); the
registry turns them into prometheus_client metric families when scraped, so the exposition
is the library's. Every request pays for what it records (`bench/observe_micro.py` times
it), so a request only appends its records to a list, and they are added up in batches
(`Metrics.fold`), and before every scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from ..policy_model import Target

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

FOLD_AT = 64
"""Records a kind holds before they are added up (see `Metrics.fold`): enough that a fold
runs with its dicts and code in the cache, few enough that the request that folds them
waits only some tens of microseconds."""

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


class _Counter:
    """A counter family kept as a dict of label values to counts, read at scrape time.

    prometheus_client's own `Counter` locks for every increment (it may be shared by
    threads); here every increment and every scrape happen on the event loop's thread, so
    a dict update is enough: a fifth of the cost, on a path every request takes. Each count
    is a one-item list, so a caller that found it once may keep it and add in place."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple[str, ...], list[float]] = {}

    def cell(self, key: tuple[str, ...]) -> list[float]:
        """The count for `key`, as a one-item list (made at zero if new)."""
        cell = self.values.get(key)
        if cell is None:
            cell = self.values[key] = [0.0]
        return cell

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        self.cell(key)[0] += amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, cell in list(self.values.items()):
            family.add_metric(list(key), cell[0])
        return family


class _Histogram:
    """A histogram family, as `_Counter` is a counter: per label values, the count in each
    bucket (found by bisection) and the sum; cumulated only when scraped."""

    def __init__(self, name: str, documentation: str, labels: list[str], buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.bounds = buckets
        self._les: list[str] = [floatToGoString(b) for b in buckets]  # type: ignore[no-untyped-call]
        self.series: dict[tuple[str, ...], list[float]] = {}
        """Per label values: a count per bucket, one for +Inf, then the sum."""

    def cell(self, key: tuple[str, ...]) -> list[float]:
        """The series for `key` (made empty if new), to add to in place as `observe` does."""
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = [0.0] * (len(self.bounds) + 2)
        return series

    def observe(self, key: tuple[str, ...], value: float) -> None:
        series = self.cell(key)
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, series in list(self.series.items()):
            total, buckets = 0.0, []
            for le, count in zip([*self._les, "+Inf"], series[:-1], strict=True):
                total += count
                buckets.append((le, total))
            family.add_metric(list(key), buckets, series[-1])
        return family


class Metrics:
    """The gateway's instruments, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = _Counter(
            f"{PREFIX}_requests",
            "MCP requests answered, by method, team and result (ok, error).",
            ["method", "team", "result"],
        )
        self.calls = _Counter(
            f"{PREFIX}_calls",
            "Governed requests (calls, reads, prompts, subscriptions, completions) by target, decision and outcome.",
            ["server", "tool", "team", "method", "decision", "outcome"],
        )
        self.denials = _Counter(f"{PREFIX}_denials", "Requests denied, by reason.", ["reason"])
        self.added = _Histogram(
            f"{PREFIX}_added_latency_seconds",
            "Time the gateway added to a request: its whole time less the time spent waiting on upstreams.",
            ["method"],
            LATENCY_BUCKETS,
        )
        self.upstream = _Histogram(
            f"{PREFIX}_upstream_latency_seconds",
            "Time from forwarding a request upstream to its answer, by server.",
            ["server"],
            LATENCY_BUCKETS,
        )
        self.audit_batch = _Histogram(
            f"{PREFIX}_audit_commit_batch_rows", "Audit rows written per commit.", [], BATCH_BUCKETS
        )
        self.audit_commit = _Histogram(
            f"{PREFIX}_audit_commit_seconds", "Time one audit commit took.", [], LATENCY_BUCKETS
        )
        self.audit_failures = _Counter(f"{PREFIX}_audit_commit_failures", "Audit commits that failed.", [])
        self._families = (
            self.requests,
            self.calls,
            self.denials,
            self.added,
            self.upstream,
            self.audit_batch,
            self.audit_commit,
            self.audit_failures,
        )
        self.registry.register(_Read(self._collect))
        # What was recorded since the last fold, as it was recorded.
        self._requests: list[tuple[str, str, str, float]] = []
        self._calls: list[tuple[Target, str, str, str, str]] = []
        self._upstreams: list[tuple[str, float]] = []
        self._answered: dict[tuple[str, str, str], tuple[list[float], list[float]]] = {}
        """(method label, team, result) -> its `requests` count and its method's `added`
        series, found by one lookup. Bounded as the labels are."""
        self._upstream_by_server: dict[str, list[float]] = {}
        """Server -> its `upstream` series, found without making a key tuple."""

    # What every request records is appended as it comes and added up in batches (`fold`):
    # the request path runs a lot of other code between its records, so the dicts, series
    # and code that add them up are out of the CPU's caches each time, and one request's
    # updates took about three times what the same updates take in a loop. A scrape folds
    # first: it reads every request recorded before it, as if each had been added at once.

    def request(self, method: str, team: str, result: str, added: float) -> None:
        """A request was answered (`result` ok or error) after `added` seconds of the gateway's own time."""
        pending = self._requests
        pending.append((method, team, result, added))
        if len(pending) >= FOLD_AT:
            self.fold()

    def call(self, target: Target, team: str, method: str, decision: str, outcome: str) -> None:
        """A governed request ended."""
        pending = self._calls
        pending.append((target, team, method, decision, outcome))
        if len(pending) >= FOLD_AT:
            self.fold()

    def upstream_latency(self, server: str, seconds: float) -> None:
        """A request sent upstream was answered (or failed) after `seconds`."""
        pending = self._upstreams
        pending.append((server, seconds))
        if len(pending) >= FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Add what was recorded since the last fold into the counts and series, in order."""
        if self._requests:
            answered = self._answered
            for method, team, result, added in self._requests:
                if method not in METHODS:
                    method = OTHER  # first: a caller's made-up method is one label value, one entry
                cells = answered.get((method, team, result))
                if cells is None:
                    cells = answered[(method, team, result)] = (
                        self.requests.cell((method, team, result)),
                        self.added.cell((method,)),
                    )
                count, series = cells
                count[0] += 1
                series[bisect_left(LATENCY_BUCKETS, added)] += 1
                series[-1] += added
            self._requests.clear()
        if self._calls:
            calls = self.calls
            for target, team, method, decision, outcome in self._calls:
                # A target's `tool` label is a catalog name (the decision point reaches a target
                # only with one), `_resource` for any resource (URIs under templates are
                # unbounded), `_unknown` for none, as its server is.
                server = target.server
                if not server:
                    server = tool = UNKNOWN
                else:
                    tool = RESOURCE if target.kind == "resource" else target.name
                calls.cell((server, tool, team, method if method in METHODS else OTHER, decision, outcome))[0] += 1
            self._calls.clear()
        if self._upstreams:
            by_server = self._upstream_by_server
            for server, seconds in self._upstreams:
                timed = by_server.get(server)
                if timed is None:
                    timed = by_server[server] = self.upstream.cell((server,))
                timed[bisect_left(LATENCY_BUCKETS, seconds)] += 1
                timed[-1] += seconds
            self._upstreams.clear()

    def _collect(self) -> list[Metric]:
        self.fold()
        return [f.family() for f in self._families]

    def denied(self, reason: str) -> None:
        self.denials.inc((reason,))

    def audit_committed(self, rows: int, seconds: float, ok: bool) -> None:
        self.audit_batch.observe((), rows)
        self.audit_commit.observe((), seconds)
        if not ok:
            self.audit_failures.inc(())

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
