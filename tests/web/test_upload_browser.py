"""The upload page in a real headless Chromium: /upload in the fake Discord gives a link, the browser uploads a
zip, and the dataset report lands in the user's channel; refusal pages and the cap as a browser sees them."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import discord
import pytest
from discord.ext import commands

from jobs.dataset import DatasetReport
from tests.web.browser import chrome  # noqa: F401 - fixture
from tests.web.upload_world import UploadWorld, dataset_zip
from tests.world.fake_discord import FakeDiscord, run_bot

pytestmark = pytest.mark.timeout(90)
LINK = re.compile(r"(http://127\.0\.0\.1:\d+/upload\?\S+)")


def upload_in_browser(driver: Any, link: str, zip_path: Path, timeout: float = 20) -> str:
    """Open the link, choose the file, press Upload, and return the status line once the server answered."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(link)
    driver.find_element(By.ID, "file").send_keys(str(zip_path))
    driver.find_element(By.ID, "send").click()
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, timeout).until(lambda _: status.get_attribute("class") in ("good", "bad"))
    return str(status.text)


def page_heading(driver: Any, link: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    driver.get(link)
    return driver.find_element(By.TAG_NAME, "h1").text, driver.find_element(By.ID, "reason").text


class UploadBot(commands.Bot):
    """The smallest bot that loads the real `/upload` extension and posts the report the page hands it."""

    def __init__(self, world: UploadWorld) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.upload_links = world.links
        self.public_url = world.base_url

    async def setup_hook(self) -> None:
        await self.load_extension("bot.cogs.upload")
        await self.tree.sync()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No 5 s pause before identifying in tests."""

    async def post_report(self, user_id: int, channel_id: int, sha256: str, report: DatasetReport) -> None:
        channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
        assert isinstance(channel, discord.abc.Messageable)
        await channel.send(f"<@{user_id}> your dataset `{sha256[:12]}` is ready: {report.image_count} images.")


async def test_upload_from_discord_through_the_browser_to_the_report(
    chrome: Any, fake_discord: FakeDiscord, tmp_path: Path  # noqa: F811
) -> None:
    world = UploadWorld(tmp_path / "server")
    bot = UploadBot(world)
    world.on_ready = bot.post_report  # type: ignore[method-assign]
    await world.start()
    bot.public_url = world.base_url
    zip_path = tmp_path / "kana.zip"
    zip_path.write_bytes(dataset_zip(4))
    try:
        async with run_bot(fake_discord, bot):
            interaction = await fake_discord.send_slash("upload")
            reply = await fake_discord.wait_for_reply(interaction)
            assert reply.ephemeral
            match = LINK.search(reply.content)
            assert match, reply.content

            status = await asyncio.to_thread(upload_in_browser, chrome, match.group(1), zip_path)
            assert status == "Got it: 4 images. The dataset report is in your Discord channel."
            report = await fake_discord.wait_for_message(
                lambda m: "is ready: 4 images" in m.content, channel=fake_discord.channel
            )
            assert report.content.startswith(f"<@{fake_discord.default_user.id}> your dataset `")

            heading = await asyncio.to_thread(page_heading, chrome, match.group(1))
            assert heading[0] == "This upload link was already used"
    finally:
        await world.stop()


async def test_refusal_pages_in_the_browser(chrome: Any, upload_world: UploadWorld) -> None:  # noqa: F811
    expired = upload_world.link()
    upload_world.advance(3600)
    assert (await asyncio.to_thread(page_heading, chrome, expired))[0] == "This upload link has expired"

    tampered = upload_world.link(user_id=1).replace("u=1&", "u=2&")
    title, reason = await asyncio.to_thread(page_heading, chrome, tampered)
    assert title == "This upload link is not valid" and "signature does not match" in reason


async def test_an_upload_over_the_cap_is_refused_in_the_browser(
    chrome: Any, upload_world: UploadWorld, tmp_path: Path  # noqa: F811
) -> None:
    big = tmp_path / "big.zip"
    big.write_bytes(b"PK\x03\x04" + bytes(5_000_000))
    status = await asyncio.to_thread(upload_in_browser, chrome, upload_world.link(), big)
    assert status == "The zip is 5.0 MB; the limit is 2.0 MB."
    assert upload_world.incoming_files() == [] and upload_world.ready == []
