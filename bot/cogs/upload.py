"""/upload: a one-time link to the browser upload page (for datasets too big to attach), and the report that
lands in the channel when the upload is done, with a button to plan a training from it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.permissions import DM_REFUSAL, role_names, train_refusal
from bot.views import DatasetPlanButton
from jobs.dataset import DatasetReport

if TYPE_CHECKING:
    from bot.client import LorabotBot

NO_PAGE = (
    "The upload page is off: it needs `LORABOT_PUBLIC_URL` (the https address where this bot's web server is "
    "reachable). Until then, attach the zip to /train or give /train a `dataset_url`."
)


class Upload(commands.Cog):
    def __init__(self, bot: LorabotBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        hub = self.bot.runtime.uploads
        if hub is not None:
            hub.announce = self.announce

    async def cog_unload(self) -> None:
        hub = self.bot.runtime.uploads
        if hub is not None:
            hub.announce = None

    @app_commands.command(name="upload", description="Get a one-time link to upload a big dataset zip in a browser")
    async def upload(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.guild is None or interaction.channel_id is None:
            await interaction.response.send_message(DM_REFUSAL, ephemeral=True)
            return
        refusal = train_refusal(role_names(interaction.user), self.bot.settings.discord)
        hub = self.bot.runtime.uploads
        public_url = self.bot.settings.public_url
        if refusal or hub is None or public_url is None:
            await interaction.response.send_message(refusal or NO_PAGE, ephemeral=True)
            return
        link = hub.links.issue(public_url, interaction.user.id, interaction.channel_id)
        minutes = hub.links.lifetime_s // 60
        await interaction.response.send_message(
            f"Your upload link (works once, for {minutes} minutes; don't share it): {link}\n"
            "The dataset report will appear in this channel.",
            ephemeral=True,
        )

    async def announce(self, user_id: int, channel_id: int, sha256: str, report: DatasetReport) -> None:
        channel = self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)
        assert isinstance(channel, discord.abc.Messageable)
        embed = render.EmbedBuilder(
            f"Dataset uploaded: {report.image_count} images",
            render.code_block(report.render_text().strip(), render.DESCRIPTION_MAX - 200),
        )
        embed.footer(f"or: /train dataset_from:sha256:{sha256}")
        view = discord.ui.View(timeout=None)
        view.add_item(DatasetPlanButton(sha256))
        await channel.send(content=f"<@{user_id}>", embed=embed.build(), view=view)


async def setup(bot: LorabotBot) -> None:
    await bot.add_cog(Upload(bot))
