from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.web.upload_world import UploadWorld


@pytest_asyncio.fixture
async def upload_world(tmp_path: Path) -> AsyncIterator[UploadWorld]:
    """The upload routes served on 127.0.0.1 with a 2 MB cap and a movable clock; `.ready` records callbacks."""
    world = await UploadWorld(tmp_path).start()
    try:
        yield world
    finally:
        await world.stop()
