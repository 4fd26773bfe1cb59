"""A real browser for the dashboard's tests: Debian's Chromium, driven by Playwright.

The browser is found at `MCP_GATEWAY_CHROMIUM` or `/usr/bin/chromium` (`.ci/run` installs
Debian's `chromium` when it is missing). Without one these tests fail, saying so: a
dashboard nobody has clicked through is not tested.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    named = os.environ.get("MCP_GATEWAY_CHROMIUM")
    if named:
        return named
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "no Chromium for the dashboard's browser tests: install Debian's `chromium` "
        "(`apt-get install chromium`; `.ci/run` does) or set MCP_GATEWAY_CHROMIUM to a Chrome/Chromium binary"
    )


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


SCREENSHOTS = os.environ.get("MCP_GATEWAY_SCREENSHOTS")
"""A directory to save the README's screenshots into while the tests run (unset: none)."""


async def screenshot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        # Playwright makes the directory.
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)
