from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .provider import Provider, install, oidc_provider


@pytest.fixture(scope="session")
def _installed() -> None:
    install()


@pytest.fixture
async def provider(_installed: None) -> AsyncIterator[Provider]:
    async with oidc_provider() as running:
        yield running
