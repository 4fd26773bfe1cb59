"""The running gateway: upstream supervisors and the router, alive for one process.

Both front doors use it: the HTTP app enters it in its lifespan, `mcp-gateway stdio`
around its stdin loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from .config import Config
from .proxy import http_client
from .proxy.router import Router
from .proxy.upstream import Events, Upstream
from .settings import Settings


@dataclass(eq=False)
class Gateway:
    config: Config
    settings: Settings
    upstreams: dict[str, Upstream]
    router: Router
    tg: TaskGroup

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until every enabled upstream has connected once, or `timeout` passes."""
        with anyio.move_on_after(timeout):
            for upstream in self.upstreams.values():
                if upstream.config.enabled:
                    await upstream.ready.wait()
            return True
        return False


@asynccontextmanager
async def running(config: Config, settings: Settings) -> AsyncIterator[Gateway]:
    """Start every upstream's supervisor; stop them all on exit."""
    async with http_client.new_client() as http, anyio.create_task_group() as tg:
        upstreams = {name: Upstream(name, cfg, Events(), http) for name, cfg in config.upstreams.items()}
        router = Router(upstreams, tg)
        for upstream in upstreams.values():
            upstream.events = router
            tg.start_soon(upstream.run)
        try:
            yield Gateway(config, settings, upstreams, router, tg)
        finally:
            tg.cancel_scope.cancel()
