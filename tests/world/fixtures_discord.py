"""pytest fixtures for the fake Discord (auto-loaded by tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.world.fake_discord import FakeDiscord


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started fake Discord; teardown fails the test on any failure it recorded that the test did not clear
    (unknown routes, interactions not acknowledged within 3 s, errors inside the fake). Teardown first lets
    interactions still inside their 3 s either get answered or fail."""
    async with FakeDiscord() as fake:
        yield fake
        await fake.settle()
        fake.assert_no_failures()
