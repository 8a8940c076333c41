"""/caption: tag a dataset on a CPU pod only (a few cents, estimate before Confirm), for users who want to review
the captions before paying for a GPU; /edit_captions: a one-time caption editor link for a stored dataset.

The dataset comes the way /train takes it (attachment, link or `dataset_from`), through the same intake, ingest and
planner (bot/intake.py); the plan is then priced as a CPU stage alone (bot/captioning.py) and confirmed with the same
buttons, which queue a caption-only job (jobs/caption_job.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.actions import Refused, offer_plan
from bot.captioning import caption_estimate, editor_link_text, volume_holds_env
from bot.cogs.train import earlier_datasets, source_refusal
from bot.ingest import IngestRefused, new_workdir
from bot.intake import remove_workdir
from bot.permissions import DM_REFUSAL, role_names, train_refusal
from jobs.caption_job import NothingToTag
from jobs.captions import caption_mode
from jobs.dataset import DatasetError
from jobs.presets import load_presets
from jobs.rules import PlanRefused
from jobs.spec import UserOptions

if TYPE_CHECKING:
    from bot.client import LorabotBot

# `off` tags nothing, so it is no choice here.
TAGGING_MODES = ("keep", "auto")
_PRESETS = load_presets().names


class Caption(commands.Cog):
    def __init__(self, bot: LorabotBot) -> None:
        self.bot = bot

    @app_commands.command(name="caption", description="Tag a dataset on a CPU pod (a few cents), to review it")
    @app_commands.describe(
        dataset="a .zip of images (captions optional)",
        dataset_url="a link to a .zip (Hugging Face, Google Drive, Dropbox or direct)",
        dataset_from="an earlier job or dataset of yours (start typing)",
        captions="keep: tag only images without a caption (default); auto: tag every image",
        trigger="the trigger word captions start with",
        class_word="the class of the subject (e.g. 1girl, person), second in every caption",
        preset="preset whose tagger thresholds and undesired tags apply",
        name="a name for this job (shown in the thread)",
    )
    @app_commands.choices(
        captions=[app_commands.Choice(name=mode, value=mode) for mode in TAGGING_MODES],
        preset=[app_commands.Choice(name=p, value=p) for p in _PRESETS[:25]],
    )
    async def caption(
        self,
        interaction: discord.Interaction[Any],
        dataset: discord.Attachment | None = None,
        dataset_url: app_commands.Range[str, 1, 2000] | None = None,
        dataset_from: app_commands.Range[str, 1, 100] | None = None,
        captions: str | None = None,
        trigger: app_commands.Range[str, 1, 64] | None = None,
        class_word: app_commands.Range[str, 1, 64] | None = None,
        preset: str | None = None,
        name: app_commands.Range[str, 1, 64] | None = None,
    ) -> None:
        if interaction.guild is None:
            await interaction.response.send_message(DM_REFUSAL, ephemeral=True)
            return
        refusal = train_refusal(role_names(interaction.user), self.bot.settings.discord) or source_refusal(
            dataset, dataset_url, dataset_from
        )
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        workdir = new_workdir(self.bot.runtime.workdir)
        options = UserOptions(
            preset=preset,
            trigger=trigger,
            class_word=class_word,
            captions=caption_mode(captions) or "keep",
        )
        try:
            await self.bot.runtime.planner.prices.refresh()
            # The same ingest and planner as /train (one code path for attachments, links and stored datasets).
            prepared = await self.bot.intake.prepare(interaction, workdir, options, dataset, dataset_url, dataset_from)
            prepared.caption_only = True
            prepared.env_ready = await volume_holds_env(self.bot, prepared)
            caption_estimate(self.bot, prepared)  # refuses a dataset with nothing to tag before any button
        except (Refused, IngestRefused, NothingToTag) as exc:
            await self._refuse(interaction, workdir, "Not planned", [str(exc)])
            return
        except DatasetError as exc:
            await self._refuse(interaction, workdir, "The dataset was refused", [str(exc)])
            return
        except PlanRefused as exc:
            await self._refuse(interaction, workdir, "The plan was refused", exc.reasons)
            return
        except BaseException:
            await asyncio.to_thread(remove_workdir, workdir)
            raise
        await offer_plan(self.bot, interaction, prepared, name or f"captions {prepared.dataset_sha256[:8]}")

    async def _refuse(
        self, interaction: discord.Interaction[Any], workdir: Any, title: str, reasons: list[str]
    ) -> None:
        await asyncio.to_thread(remove_workdir, workdir)
        await interaction.followup.send(render.refusal_text(title, reasons))

    @caption.autocomplete("dataset_from")
    async def caption_dataset_choices(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        return await asyncio.to_thread(earlier_datasets, self.bot, interaction.user.id, current)

    @app_commands.command(name="edit_captions", description="Edit a stored dataset's captions in your browser")
    @app_commands.describe(dataset="a job or dataset of yours (start typing)")
    async def edit_captions(
        self, interaction: discord.Interaction[Any], dataset: app_commands.Range[str, 1, 100]
    ) -> None:
        try:
            stored = await asyncio.to_thread(self.bot.intake.stored_dataset, interaction.user, dataset)
        except Refused as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        text = await asyncio.to_thread(editor_link_text, self.bot, interaction.user.id, stored.sha256)
        await interaction.response.send_message(text, ephemeral=True)

    @edit_captions.autocomplete("dataset")
    async def edit_dataset_choices(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        return await asyncio.to_thread(earlier_datasets, self.bot, interaction.user.id, current)


async def setup(bot: LorabotBot) -> None:
    await bot.add_cog(Caption(bot))
