from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.fetch.https_world import HttpsWorld, started_world


@pytest_asyncio.fixture
async def https_world(tmp_path: Path) -> AsyncIterator[HttpsWorld]:
    """A local HTTPS server answering as huggingface.co, drive.google.com, www.dropbox.com and friends."""
    async for world in started_world(tmp_path):
        yield world
