"""The gateway's state as Prometheus reads it at scrape time: nothing here is on the
request path, so what is open, engaged or up is counted when asked for."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sized
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..policy_model import SCOPES
from .metrics import PREFIX, gauge

if TYPE_CHECKING:
    from ..audit.writer import AuditWriter
    from ..killswitch import Inflight
    from ..policy.snapshot import Snapshots


class _Upstream(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def restarts(self) -> int: ...


def read(
    inflight: Inflight,
    snapshots: Snapshots,
    writer: AuditWriter,
    client_sessions: Sized,
    upstreams: Mapping[str, _Upstream],
) -> Iterable[Metric]:
    """The parts of the running gateway it reads are passed in (see `runtime`), so this
    module stays below the runtime that assembles them."""

    calls = gauge("calls_in_flight", "Calls forwarded and not yet answered.")
    calls.add_metric([], len(inflight))
    yield calls

    sessions = gauge("sessions_open", "Handshake-era client sessions open.")
    sessions.add_metric([], len(client_sessions))
    yield sessions
    streams = gauge("streams_open", "GET and subscriptions/listen streams open.")
    streams.add_metric([], inflight.open_count(kind="stream"))
    yield streams

    now = time.time()
    engaged = dict.fromkeys(SCOPES, 0)
    policy = snapshots.current.policy
    for switch in policy.switches:
        if switch.active(now):
            engaged[switch.scope] += 1
    switches = gauge("kill_switches_engaged", "Kill switches engaged, by scope.", ["scope"])
    for scope, count in engaged.items():
        switches.add_metric([scope], count)
    yield switches

    up = gauge("upstream_up", "1 while the upstream is connected and ready, else 0.", ["server"])
    restarts = CounterMetricFamily(
        f"{PREFIX}_upstream_restarts", "Times the upstream's connection was started again.", labels=["server"]
    )
    for name, upstream in upstreams.items():
        up.add_metric([name], 1 if upstream.state == "ready" else 0)
        restarts.add_metric([name], upstream.restarts)
    yield up
    yield restarts

    version = gauge("policy_version", "The live policy bundle's version.")
    version.add_metric([], policy.policy_version)
    yield version
    age = gauge("snapshot_age_seconds", "Seconds since the policy snapshot was last confirmed current.")
    age.add_metric([], max(0.0, snapshots.age()) if snapshots.age() != float("inf") else -1)
    yield age
    stale = gauge("snapshot_stale", "1 while the snapshot is past its bound (every call denied).")
    stale.add_metric([], 1 if snapshots.stale() else 0)
    yield stale

    queue = GaugeMetricFamily(f"{PREFIX}_audit_queue_depth", "Audit rows queued, not yet committed.")
    queue.add_metric([], writer.depth)
    yield queue
