from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    """A store URL: each test using it runs once on SQLite and once on PostgreSQL."""
    from .stores import store_url as make

    async with make(request.param, tmp_path) as url:
        yield url
