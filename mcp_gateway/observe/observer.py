"""What the request path tells the observers (metrics, traces, the access log), in one place.

    Router.handle       begin(...) -> Observation ... end(observation, error)
    Governance          decided(...), completed(...), audit_wait()
    Router._forward     upstream(server, method) -> the traceparent to send upstream

The observation of the request being served is found through a context variable, so the
decision point needs no new parameters. Whatever is off costs a None check: no spans
without an exporter, no access record unless `mcp_gateway.access` logs at INFO. With
metrics on (the default) and neither of those, an observation holds only what the metrics
need (its start and its upstream time): the details a span or an access line shows are
neither kept nor looked up (`Observation.detailed`), as every request pays for them.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode

from ..policy_model import Decision, Target
from . import tracing
from .metrics import Metrics, denial_reason, method_label

access_log = logging.getLogger("mcp_gateway.access")
"""One line per request at INFO; off unless `access_log: true` (or this logger's level is set)."""

_MAX_TARGET = 256
"""A target as spans and access lines show it (a resource URI may be 8 KiB)."""

_current: ContextVar[Observation | None] = ContextVar("mcp_gateway_observation", default=None)


class Observation:
    """One request being served, as its observers see it. A plain class: the fields a
    request never sets stay class defaults, so making one costs four assignments."""

    detailed: bool = False
    """A span or an access line shows this request: the decision's details are kept."""
    logged: bool = False
    """The access log was on when the request began: it gets the request's line."""
    span: Span | None = None
    upstream: float = 0.0
    """Seconds spent waiting on upstreams: not the gateway's added latency."""
    server: str | None = None
    target: str | None = None
    decision: str | None = None
    rule_id: str | None = None
    policy_version: int | None = None
    kill_switch_id: str | None = None
    outcome: str | None = None
    traceparent: str | None = None
    """The client's, as received (read only for a span or an access line): the request
    span's parent, and the access line's trace id."""
    token: Token[Observation | None] | None = None

    def __init__(self, method: str, principal: str, team: str, started: float) -> None:
        self.method, self.principal, self.team, self.started = method, principal, team, started


def current() -> Observation | None:
    return _current.get()


class Observer:
    """Metrics (None: off), tracing (its tracer None: off) and the access log."""

    def __init__(self, metrics: Metrics | None = None, traces: tracing.Tracing | None = None) -> None:
        self.metrics = metrics
        self.tracer = traces.tracer if traces is not None else None

    # -- a request --------------------------------------------------------------------------

    def begin(
        self, method: str, principal: str, team: str, params: dict[str, Any], header: str | None
    ) -> Observation | None:
        """The request's observation (None when nothing observes it)."""
        logged = access_log.isEnabledFor(logging.INFO)
        detailed = logged or self.tracer is not None
        if not detailed and self.metrics is None:
            return None
        observation = Observation(method, principal, team, time.perf_counter())
        if detailed:
            observation.detailed, observation.logged = True, logged
            meta = params.get("_meta")
            sent = meta.get(tracing.TRACEPARENT) if isinstance(meta, dict) else None
            observation.traceparent = sent if isinstance(sent, str) else header
            if self.tracer is not None:
                observation.span = self.tracer.start_span(
                    method_label(method),  # a made-up method is not a span name of its own
                    context=tracing.parent(observation.traceparent),
                    kind=tracing.SERVER,
                    attributes={"mcp.method.name": method[:64], "mcp_gateway.team": team},
                )
        observation.token = _current.set(observation)
        return observation

    def end(self, observation: Observation | None, error: BaseException | None) -> None:
        if observation is None:
            return
        elapsed = time.perf_counter() - observation.started
        token = observation.token
        if token is not None:
            _current.reset(token)
            observation.token = None
        if self.metrics is not None:
            added = elapsed - observation.upstream
            self.metrics.request(
                observation.method, observation.team, "ok" if error is None else "error", added if added > 0 else 0.0
            )
        if not observation.detailed:
            return
        span = observation.span
        if span is not None:
            self._annotate(span, observation)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()
        if observation.logged:
            self._access(observation, elapsed, error)

    @staticmethod
    def _annotate(span: Span, o: Observation) -> None:
        attributes: dict[str, Any] = {"mcp_gateway.upstream_seconds": o.upstream}
        for key, value in (
            ("mcp_gateway.server", o.server),
            ("mcp_gateway.target", o.target),
            ("mcp_gateway.decision", o.decision),
            ("mcp_gateway.rule_id", o.rule_id),
            ("mcp_gateway.policy_version", o.policy_version),
            ("mcp_gateway.kill_switch_id", o.kill_switch_id),
            ("mcp_gateway.outcome", o.outcome),
        ):
            if value is not None:
                attributes[key] = value
        span.set_attributes(attributes)

    def _access(self, o: Observation, elapsed: float, error: BaseException | None) -> None:
        outcome = o.outcome or ("ok" if error is None else "error")
        span = o.span
        trace_id = (
            format(span.get_span_context().trace_id, "032x") if span is not None else tracing.trace_id(o.traceparent)
        )
        latency_ms = round(elapsed * 1000, 3)
        access_log.info(
            "%s %s %s %s %.3fms",
            o.method,
            o.target or "-",
            o.decision or "-",
            outcome,
            latency_ms,
            extra={
                "principal": o.principal,
                "team": o.team,
                "method": o.method,
                "target": o.target,
                "decision": o.decision,
                "outcome": outcome,
                "latency_ms": latency_ms,
                "trace_id": trace_id,
            },
        )

    # -- from the decision point --------------------------------------------------------------

    def decided(self, target: Target, decision: Decision) -> None:
        """The request's decision (its span and access line carry it; a denial is counted)."""
        o = _current.get()
        if o is not None and o.detailed:
            o.server, o.target = target.server or None, target.name[:_MAX_TARGET] or None
            o.decision, o.rule_id = decision.effect, decision.rule_id
            o.policy_version, o.kill_switch_id = decision.policy_version, decision.kill_switch_id
        if self.metrics is not None and not decision.allowed:
            self.metrics.denied(denial_reason(decision.reason, decision.rule_id, decision.kill_switch_id))

    def completed(self, target: Target, team: str, method: str, decision: str, outcome: str) -> None:
        """A governed request (or one leg of it) ended with `outcome`."""
        metrics = self.metrics
        if metrics is not None:
            metrics.call(target, team, method, decision, outcome)
        o = _current.get()
        if o is not None and o.detailed:
            o.outcome = outcome

    def unaudited(self, target: Target, team: str, method: str) -> None:
        """An allowed request refused because its decision could not be audited."""
        self.completed(target, team, method, "allow", "audit_unavailable")
        if self.metrics is not None:
            self.metrics.denied("audit_unavailable")

    def audit_wait(self) -> _Child:
        if self.tracer is None:
            return _UNTRACED
        return _Child(self.tracer, "audit commit", tracing.INTERNAL)

    def upstream(self, server: str, method: str) -> _Upstream:
        """Around one request sent upstream: its latency, its span; `.traceparent` is the
        span's, for the upstream (None without a span: the client's `_meta` goes as it came)."""
        if self.tracer is not None:
            return _Traced(self.metrics, self.tracer, server, method)
        if self.metrics is not None:
            return _Timed(self.metrics, server)
        return _UNOBSERVED  # the access line does not show upstream time


class _Child:
    __slots__ = ("_kind", "_name", "_tracer", "span")

    def __init__(self, tracer: Any, name: str, kind: Any) -> None:
        self._tracer, self._name, self._kind = tracer, name, kind
        self.span: Span | None = None

    def __enter__(self) -> _Child:
        if self._tracer is not None:
            o = _current.get()
            if o is not None and o.span is not None:
                self.span = self._tracer.start_span(self._name, context=tracing.child_context(o.span), kind=self._kind)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.span is not None:
            if exc is not None:
                self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            self.span.end()


_UNTRACED = _Child(None, "", tracing.INTERNAL)
"""Shared by every wait nobody traces: it never holds a span."""


class _Upstream:
    """An upstream request nobody measures; what the router reads of every kind (`.traceparent`)."""

    __slots__ = ()
    span: Span | None = None
    traceparent: str | None = None
    """The request span's, for the upstream (None: the client's `_meta` goes as it came)."""

    def __enter__(self) -> _Upstream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        return None


_UNOBSERVED = _Upstream()


class _Timed(_Upstream):
    """An upstream request timed for the metrics (and the request's added latency), with no
    span: what every request takes with metrics on, tracing off, so it does only that."""

    __slots__ = ("_metrics", "_server", "_started")

    def __init__(self, metrics: Metrics, server: str) -> None:
        self._metrics, self._server = metrics, server

    def __enter__(self) -> _Upstream:
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        seconds = time.perf_counter() - self._started
        o = _current.get()
        if o is not None:
            o.upstream += seconds
        self._metrics.upstream_latency(self._server, seconds)


class _Traced(_Upstream):
    """An upstream request with a span of its own (and timed, as `_Timed`, for the metrics if on)."""

    __slots__ = ("_method", "_metrics", "_server", "_started", "_tracer", "span", "traceparent")

    def __init__(self, metrics: Metrics | None, tracer: Any, server: str, method: str) -> None:
        self._metrics, self._tracer, self._server, self._method = metrics, tracer, server, method
        self.span = None
        self.traceparent = None

    def __enter__(self) -> _Upstream:
        o = _current.get()
        if o is not None and o.span is not None:
            self.span = self._tracer.start_span(
                f"{self._method} {self._server}",
                context=tracing.child_context(o.span),
                kind=tracing.CLIENT,
                attributes={"mcp_gateway.server": self._server},
            )
            self.traceparent = tracing.traceparent_of(self.span)
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        seconds = time.perf_counter() - self._started
        o = _current.get()
        if o is not None:
            o.upstream += seconds
        metrics = self._metrics
        if metrics is not None:
            metrics.upstream_latency(self._server, seconds)
        span = self.span
        if span is not None:
            if exc is not None:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
