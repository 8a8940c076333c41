from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.web.editor_world import EditorWorld
from tests.web.upload_world import UploadWorld


@pytest_asyncio.fixture
async def upload_world(tmp_path: Path) -> AsyncIterator[UploadWorld]:
    """The upload routes served on 127.0.0.1 with a 2 MB cap and a movable clock; `.ready` records callbacks."""
    world = await UploadWorld(tmp_path).start()
    try:
        yield world
    finally:
        await world.stop()


@pytest_asyncio.fixture
async def editor_world(tmp_path: Path) -> AsyncIterator[EditorWorld]:
    """The caption editor's routes on 127.0.0.1 over one stored, captioned dataset of four 640 px images."""
    world = await EditorWorld(tmp_path).start()
    try:
        yield world
    finally:
        await world.stop()
