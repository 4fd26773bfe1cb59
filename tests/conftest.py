from __future__ import annotations

import sys
from types import ModuleType

import pytest

REAL_PARTS = frozenset(
    {
        # helpers that start upstream processes, uvicorn, the CLI, or reach PostgreSQL
        "tests.support",
        "tests.stores",
        "tests.adversarial.common",
        "tests.admin.common",
        "tests.cli.common",
        "tests.policy.cli",
        "tests.policy.live",
        "tests.properties.rig",
        "tests.proxy.fidelity_rig",
        "tests.upstreams.wiretap",
        "subprocess",
        "uvicorn",
        "asyncpg",
    }
)
"""A test module that uses any of these starts real processes, sockets or PostgreSQL."""


def _uses_real_parts(module: ModuleType | None) -> bool:
    if module is None:
        return False
    for value in vars(module).values():
        name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
        if name in REAL_PARTS:
            return True
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that starts real parts (see REAL_PARTS, or the `store_url`
    fixture): `pytest -m "not slow"` runs the in-process tests alone."""
    seen: dict[str, bool] = {}
    for item in items:
        module = getattr(item, "module", None)
        name = getattr(module, "__name__", "")
        if name not in seen:
            seen[name] = _uses_real_parts(sys.modules.get(name, module))
        if seen[name] or "store_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    """A store URL: each test using it runs once on SQLite and once on PostgreSQL."""
    from .stores import store_url as make

    async with make(request.param, tmp_path) as url:
        yield url
