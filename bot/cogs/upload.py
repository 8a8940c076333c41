"""`/upload`: a one-time link to the upload page, for datasets too big to attach in Discord.

Needs on the bot: `upload_links` (bot.web.UploadLinks, or None when the web server is off) and `public_url`
(the bot's public base URL, or None). The page itself is bot/web/upload.py.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import discord
from discord import app_commands
from discord.ext import commands

from bot.web.links import UploadLinks

log = logging.getLogger(__name__)


class UploadCog(commands.Cog, name="Upload"):
    def __init__(self, links: UploadLinks | None, public_url: str | None) -> None:
        self.links = links
        self.public_url = public_url

    @app_commands.command(name="upload", description="Get a one-time link to upload a big dataset zip in a browser")
    async def upload(self, interaction: discord.Interaction) -> None:
        if self.links is None or not self.public_url:
            await interaction.response.send_message(
                "The upload page is off on this bot (the operator has not set LORABOT_PUBLIC_URL). "
                "Use /train with dataset_url: and a Hugging Face, Google Drive or Dropbox link instead.",
                ephemeral=True,
            )
            return
        channel_id = interaction.channel_id or interaction.user.id
        link = self.links.issue(self.public_url, interaction.user.id, channel_id)
        expires = datetime.now(UTC) + timedelta(seconds=self.links.lifetime_s)
        await interaction.response.send_message(
            f"Your upload link (works once, until {discord.utils.format_dt(expires, 't')}; do not share it):\n"
            f"{link}\nThe dataset report will appear in this channel.",
            ephemeral=True,
        )


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(UploadCog(getattr(bot, "upload_links", None), getattr(bot, "public_url", None)))
