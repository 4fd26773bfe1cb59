"""The admin API's `since`/`until` read the same times as the CLI's flags: epoch seconds
or ISO 8601, and anything else is a 400 that names both forms."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ..support import admin_client, create_key, serve, write_config

pytestmark = pytest.mark.anyio


async def test_since_and_until_take_epoch_seconds_or_iso_8601_alike(tmp_path: Path) -> None:
    config = write_config(tmp_path, {}, auth="keys", policies=None)
    async with serve(config) as (url, _):
        before = time.time() - 1
        await create_key(url, "alpha", "bot")  # an audited admin action
        after = time.time() + 1
        async with admin_client(url) as admin:
            forms = [
                {"since": str(before), "until": str(after)},
                {  # with an offset, and without one (UTC)
                    "since": datetime.fromtimestamp(before, UTC).isoformat(),
                    "until": datetime.fromtimestamp(after, UTC).replace(tzinfo=None).isoformat(),
                },
            ]
            for params in forms:
                response = await admin.get("/audit", params=params)
                assert response.status_code == 200, response.text
                assert [row["method"] for row in response.json()["items"]] == ["key.create"], params
            iso = datetime.fromtimestamp(after, UTC).isoformat().replace("+00:00", "Z")
            response = await admin.get("/audit", params={"since": iso})
            assert response.status_code == 200, response.text
            assert response.json()["items"] == []
            response = await admin.get("/audit", params={"since": "yesterday"})
            assert response.status_code == 400
            assert "epoch seconds" in response.text and "ISO 8601" in response.text
