"""/try: images from a finished job's LoRA at chosen epochs, after an estimate its owner (or an admin) confirms."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.actions import Refused, parse_job
from bot.permissions import DM_REFUSAL
from bot.trying import TRY_ITEMS, offer_try

if TYPE_CHECKING:
    from bot.client import LorabotBot


class Try(commands.Cog):
    def __init__(self, bot: LorabotBot) -> None:
        self.bot = bot

    @app_commands.command(name="try", description="Images from a finished job's LoRA at chosen epochs (a GPU pod)")
    @app_commands.describe(
        job="job id, like j42",
        prompt="what to draw; several prompts separated by | (one grid row each)",
        epochs='which epochs, like "3", "1-3" or "2,5,8" (default: the picked epoch, else the last three)',
        seed="the seed (default: the job's sample seed)",
        negative="negative prompt (default: the job's sample negative prompt)",
        strength="the LoRA's multiplier, 0 to 2 (default 1)",
        steps="sampling steps (default: the job's sample steps)",
        compare="put beside each row the training image whose caption shares the most tags with the prompt",
    )
    async def try_(
        self,
        interaction: discord.Interaction[Any],
        job: str,
        prompt: app_commands.Range[str, 1, 2000],
        epochs: app_commands.Range[str, 1, 100] | None = None,
        seed: app_commands.Range[int, 0, 2**31 - 1] | None = None,
        negative: app_commands.Range[str, 0, 1000] | None = None,
        strength: app_commands.Range[float, 0, 2] | None = None,
        steps: app_commands.Range[int, 1, 100] | None = None,
        compare: bool = False,
    ) -> None:
        if interaction.guild is None:
            await interaction.response.send_message(DM_REFUSAL, ephemeral=True)
            return
        # Deferred first: the estimate reads the store and RunPod's prices, and Discord wants an answer within 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            job_id = parse_job(job)
        except Refused as exc:
            await interaction.followup.send(str(exc), ephemeral=True)
            return
        await offer_try(
            self.bot,
            interaction,
            job_id,
            prompt=prompt,
            epochs=epochs,
            seed=seed,
            negative=negative,
            strength=strength,
            steps=steps,
            compare=compare,
        )


async def setup(bot: LorabotBot) -> None:
    await bot.add_cog(Try(bot))
    # The estimate's Confirm/Cancel and the window's Close now answer after a restart: the ids are in custom_id.
    bot.add_dynamic_items(*TRY_ITEMS)
