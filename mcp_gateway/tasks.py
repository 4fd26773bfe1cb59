"""Long-running background tasks that must not take the gateway down with them."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio

log = logging.getLogger(__name__)


def supervised(
    name: str, run: Callable[[], Awaitable[None]], backoff: float = 1.0
) -> Callable[[], Coroutine[Any, Any, None]]:
    """Wrap a task so an unexpected error is logged and the task restarted, not propagated."""

    async def task() -> None:
        while True:
            try:
                await run()
                return
            except Exception:  # the top of a task: log, wait, run again
                log.exception("%s failed; restarting in %.0fs", name, backoff)
                await anyio.sleep(backoff)

    return task
