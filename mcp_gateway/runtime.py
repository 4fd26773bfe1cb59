"""The running gateway: store, snapshot, audit writer, upstream supervisors and router,
alive for one process.

Both front doors use it: the HTTP app enters it in its lifespan, `mcp-gateway stdio`
around its stdin loop.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from anyio.abc import TaskGroup
from sqlalchemy.ext.asyncio import AsyncEngine

from .audit.redact import ArgumentPolicy
from .audit.retention import retain
from .audit.writer import AuditWriter
from .config import Config
from .errors import ConfigError, Problem
from .governance import Governance
from .limits import Limits
from .oauth.assertion import IdentitySigner
from .oauth.resource import ResourceServer
from .observe import gauges, tracing
from .observe.metrics import Metrics
from .observe.observer import Observer
from .policy.snapshot import Snapshots
from .policy.watch import PolicyDirectory
from .proxy import http11, http_client, payload, rpc
from .proxy.router import Router
from .proxy.upstream import Events, Upstream
from .sensitive import mask_urls
from .settings import Settings
from .store import audit as audit_store
from .store import current_revision, is_sqlite, open_engine, upgrade
from .store import state as state_store
from .store.engine import HEAD
from .store.notify import listen
from .tasks import supervised

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Gateway:
    config: Config
    settings: Settings
    engine: AsyncEngine
    snapshots: Snapshots
    governance: Governance
    upstreams: dict[str, Upstream]
    router: Router
    tg: TaskGroup
    started_at: float
    policies: PolicyDirectory | None = None
    secret: bytes = b""
    """The replicas' shared secret (the store's seal key), from which per-purpose keys derive."""
    oauth: ResourceServer | None = None
    """The identity provider's tokens, checked for /mcp (`auth: oauth`) and the admin API."""
    metrics: Metrics | None = None
    """None when `metrics: false`."""

    def policy_reload_status(self) -> dict[str, Any] | None:
        return self.policies.status if self.policies is not None else None

    async def reload_policies(self, actor: str) -> dict[str, Any]:
        assert self.policies is not None
        return await self.policies.reload(actor)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until every enabled upstream has connected once, or `timeout` passes."""
        with anyio.move_on_after(timeout):
            for upstream in self.upstreams.values():
                if upstream.config.enabled:
                    await upstream.ready.wait()
            return True
        return False


def identity_signer(config: Config, settings: Settings) -> IdentitySigner | None:
    """The signer of identity assertions, if configured; an upstream that wants them needs it."""
    wanting = [name for name, u in config.upstreams.items() if getattr(u, "identity_header", None)]
    if settings.identity_signing_key is None:
        if wanting:
            message = f"upstreams {', '.join(wanting)} set identity_header: set gateway.identity_signing_key"
            raise ConfigError([Problem(str(config.path or "config"), None, message)])
        return None
    try:
        return IdentitySigner(settings.identity_signing_key.get_secret_value(), settings.identity_issuer)
    except ValueError as exc:
        raise ConfigError([Problem("settings", None, f"identity_signing_key: {exc}")]) from None


def chain_id(settings: Settings) -> str:
    """This process's audit chain: the configured replica id, or one unique to this process."""
    return settings.replica_id or f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"


async def prepare_store(engine: AsyncEngine, settings: Settings) -> None:
    """Migrate (or check the schema is current), then apply the policy directory if set."""
    if settings.migrate:
        await upgrade(engine)
    else:
        if await current_revision(engine) != HEAD:
            raise ConfigError(
                [
                    Problem(
                        mask_urls(str(settings.database_url)),
                        None,
                        "the store's schema is not current: run `mcp-gateway db upgrade`",
                    )
                ]
            )


@asynccontextmanager
async def running(config: Config, settings: Settings) -> AsyncIterator[Gateway]:
    """Start everything; stop it all on exit."""
    assert settings.database_url is not None
    payload.configure(settings.response_buffer_bytes, settings.max_response_bytes, settings.response_write_timeout)
    # The HTTP client's own caps (a whole body, one SSE event) never cut below the setting.
    http11.MAX_BODY = max(http11.MAX_BODY, settings.max_response_bytes)
    http_client.MAX_EVENT = max(http_client.MAX_EVENT, settings.max_response_bytes)
    rpc.configure(settings.notification_rate)
    metrics = Metrics() if settings.metrics else None
    traces = tracing.Tracing(tracing.endpoint(settings.otlp_endpoint), replica=settings.replica_id)
    engine = open_engine(settings.database_url, settings.store_timeout)
    try:
        await prepare_store(engine, settings)
        snapshots = Snapshots(
            engine,
            max_age=settings.snapshot_max_age,
            poll_interval=settings.snapshot_poll_interval,
            timeout=settings.store_timeout * 2,
        )
        if not await snapshots.refresh(force=True):
            raise ConfigError(
                [
                    Problem(
                        mask_urls(str(settings.database_url)),
                        None,
                        f"cannot read the store: {mask_urls(snapshots.last_error or '')}",
                    )
                ]
            )
        async with anyio.create_task_group() as tg:
            writer = AuditWriter(
                audit_store.appender(settings.database_url, settings.store_timeout),
                chain_id(settings),
                settings.audit_queue_size,
                timeout=settings.store_timeout,
                probe_interval=settings.audit_probe_interval,
            )
            await writer.start(tg)
            arguments = ArgumentPolicy(
                settings.audit_arguments, settings.audit_redact_keys, settings.audit_max_argument_bytes
            )
            governance = Governance(snapshots, writer, arguments, observer=Observer(metrics, traces))
            if metrics is not None:
                writer.on_commit = metrics.audit_committed
            upstreams = {name: Upstream(name, cfg, Events()) for name, cfg in config.upstreams.items()}
            secret = await state_store.seal_key(engine)
            router = Router(
                upstreams,
                governance,
                tg,
                max_parked_per_principal=settings.max_parked_calls_per_principal,
                seal_key=secret,
                max_tasks_per_principal=settings.max_tasks_per_principal,
                task_record_ttl=settings.task_record_ttl,
            )
            router.identity = identity_signer(config, settings)
            router.limits = Limits(
                settings.max_sessions_per_principal,
                settings.max_streams_per_principal,
                settings.max_subscriptions_per_principal,
            )
            governance.on_change = router.policy_changed
            for upstream in upstreams.values():
                upstream.events = router
                tg.start_soon(upstream.run)
            tg.start_soon(supervised("snapshot refresher", snapshots.run))
            if not is_sqlite(settings.database_url):
                listener = partial(listen, settings.database_url, snapshots.poke, settings.store_timeout)
                tg.start_soon(supervised("state listener", listener))
            keep = settings.audit_retention_seconds
            if keep is not None:
                pruner = partial(
                    retain,
                    engine,
                    writer,
                    governance.audit_admin,
                    keep,
                    settings.audit_prune_interval,
                    settings.audit_retention_export,
                )
                tg.start_soon(supervised("audit retention", pruner))
            policies = None
            if settings.policies is not None:
                policies = PolicyDirectory(settings.policies, engine, snapshots)
                outcome = await policies.reload("mcp-gateway (start)")
                if outcome["error"] and snapshots.current.policy.policy_version == 0:
                    # Nothing live to fall back on: starting would only deny everything.
                    raise ConfigError([Problem(str(settings.policies), None, "\n".join(outcome["error"]))])
                if settings.watch_policies:
                    tg.start_soon(supervised("policy watcher", policies.watch))
            oauth = ResourceServer(settings.oauth) if settings.oauth is not None else None
            log.info(
                "started: config %s, auth %s, store %s, policy version %d, %d upstream(s)",
                config.path.resolve() if config.path is not None else "(none)",
                settings.auth,
                mask_urls(settings.database_url),
                snapshots.current.policy.policy_version,
                len(upstreams),
            )
            try:
                gateway = Gateway(
                    config,
                    settings,
                    engine,
                    snapshots,
                    governance,
                    upstreams,
                    router,
                    tg,
                    time.time(),
                    policies,
                    secret,
                    oauth,
                    metrics,
                )
                if metrics is not None:
                    metrics.gauges(
                        lambda: gauges.read(
                            gateway.governance.inflight,
                            gateway.snapshots,
                            gateway.governance.writer,
                            gateway.router.sessions,
                            gateway.upstreams,
                        )
                    )
                yield gateway
            finally:
                if oauth is not None:
                    await oauth.verifier.aclose()
                await writer.drain(end=True)
                tg.cancel_scope.cancel()
    finally:
        await engine.dispose()
        # The last spans go out (bounded by the exporter's timeout), off the event loop.
        await anyio.to_thread.run_sync(traces.shutdown)
