"""Run a real discord.py client against the fake for the length of an `async with` block."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TypeVar

from .driver import FakeDiscord, patch_discord_py

if TYPE_CHECKING:
    import discord

ClientT = TypeVar("ClientT", bound="discord.Client")


@contextlib.asynccontextmanager
async def run_bot(
    fake: FakeDiscord, client: ClientT, *, timeout: float = 10.0, token: str | None = None
) -> AsyncIterator[ClientT]:
    """Start `client` with the fake's token, wait until it has identified, and close it afterwards.

    If the client dies while starting (bad token, crash in setup_hook), its exception is raised here.
    `token` overrides the token the client presents (to test a wrong one).
    """
    with patch_discord_py(fake):
        task = asyncio.create_task(client.start(token or fake.bot_token), name="fake-discord-bot")
        connected = asyncio.create_task(fake.wait_until_connected(timeout))
        try:
            done, _ = await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                connected.cancel()
                await asyncio.gather(connected, return_exceptions=True)
                task.result()  # raises the client's error
                raise RuntimeError("the bot stopped before it connected to the fake gateway")
            connected.result()
            yield client
        finally:
            await client.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout)
