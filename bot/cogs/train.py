"""/train: one dataset source (attachment, link or an earlier dataset) → ingest → plan → Confirm/Cancel buttons.

The command acknowledges at once (defer), streams the dataset to disk, then ingests and plans in the ingest thread
pool; the plan waits in memory for the Confirm button (`bot.actions.confirm_plan` queues it). The dataset intake
(attachment, link, `dataset_from`) is bot/intake.py's, shared with /caption.
"""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.actions import Refused, offer_plan
from bot.ingest import (
    IngestRefused,
    new_workdir,
)
from bot.intake import remove_workdir as _remove
from bot.permissions import DM_REFUSAL, role_names, train_refusal
from jobs.captions import CAPTION_MODES, caption_mode
from jobs.catalog import load_catalog
from jobs.dataset import DatasetError
from jobs.presets import load_presets
from jobs.rules import PlanRefused
from jobs.spec import UserOptions
from jobs.usertext import shown
from storage.db import session_scope
from storage.models import Dataset, Job

if TYPE_CHECKING:
    from bot.client import LorabotBot

SOURCES = ("dataset", "dataset_url", "dataset_from")
SMALL_FILE_CAP = 64 * 1024  # sample prompts and config files
_PRESETS = load_presets().names
_CATALOG = load_catalog()


def source_refusal(dataset: object | None, dataset_url: str | None, dataset_from: str | None) -> str | None:
    """Exactly one dataset source per /train; None when that holds, else the precise refusal."""
    given = [name for name, value in zip(SOURCES, (dataset, dataset_url, dataset_from), strict=True) if value]
    if len(given) == 1:
        return None
    if not given:
        return (
            "Give the dataset one way: `dataset` (attach a .zip), `dataset_url` (a link to a .zip) or "
            "`dataset_from` (an earlier job or dataset of yours)."
        )
    return f"Give only one dataset source; you gave {' and '.join(f'`{g}`' for g in given)}."


def parse_extra_options(text: str) -> dict[str, Any]:
    """A .toml of sd-scripts options: flat `key = value` only (the rules allow-list the keys when planning)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise Refused(f"the config file is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict | list):
            raise Refused(f"config option {shown(key)} must be a single value (tables and lists are not supported)")
        flat[key] = value
    return flat


class Train(commands.Cog):
    def __init__(self, bot: LorabotBot) -> None:
        self.bot = bot

    @app_commands.command(name="train", description="Train a LoRA from a dataset zip: shows the plan and its cost")
    @app_commands.describe(
        name="a name for this training (shown in the thread)",
        dataset="a .zip of images with .txt captions (flat or sd-scripts' 10_concept folders)",
        dataset_url="a link to a .zip (Hugging Face, Google Drive, Dropbox or direct)",
        dataset_from="an earlier job or dataset of yours (start typing)",
        base_model="base model from the catalog",
        preset="training preset",
        trigger="the trigger word the LoRA learns",
        class_word="the class of the subject (e.g. 1girl, person)",
        epochs="number of epochs",
        repeats="repeats per image",
        dim="network dim (rank)",
        alpha="network alpha",
        unet_lr="U-Net learning rate (e.g. 0.0001)",
        te_lr="text-encoder learning rate (0 = U-Net only)",
        resolution="training resolution in pixels",
        batch_size="batch size",
        sample_prompts="sample prompts, separated by |",
        sample_prompts_file="a .txt file of sample prompts, one per line",
        config="a .toml of extra sd-scripts options (allow-listed)",
        gpu="GPU (e.g. 4090, 3090); every GPU pod runs in RunPod's Secure Cloud",
        dry_run="only show the plan; no buttons, nothing is queued",
        captions="keep: your captions, images without one are tagged; auto: tag every image; off: no tagging",
        test_window="minutes the GPU pod stays up after training so /try answers in seconds (0 = none)",
    )
    @app_commands.choices(
        preset=[app_commands.Choice(name=p, value=p) for p in _PRESETS[:25]],
        captions=[app_commands.Choice(name=mode, value=mode) for mode in CAPTION_MODES],
    )
    async def train(
        self,
        interaction: discord.Interaction[Any],
        name: app_commands.Range[str, 1, 64],
        dataset: discord.Attachment | None = None,
        dataset_url: app_commands.Range[str, 1, 2000] | None = None,
        dataset_from: app_commands.Range[str, 1, 100] | None = None,
        base_model: str | None = None,
        preset: str | None = None,
        trigger: app_commands.Range[str, 1, 64] | None = None,
        class_word: app_commands.Range[str, 1, 64] | None = None,
        epochs: app_commands.Range[int, 1, 100] | None = None,
        repeats: app_commands.Range[int, 1, 1000] | None = None,
        dim: app_commands.Range[int, 1, 256] | None = None,
        alpha: app_commands.Range[float, 0, 256] | None = None,
        unet_lr: app_commands.Range[float, 0, 1] | None = None,
        te_lr: app_commands.Range[float, 0, 1] | None = None,
        resolution: app_commands.Range[int, 256, 2048] | None = None,
        batch_size: app_commands.Range[int, 1, 64] | None = None,
        sample_prompts: app_commands.Range[str, 1, 2000] | None = None,
        sample_prompts_file: discord.Attachment | None = None,
        config: discord.Attachment | None = None,
        gpu: app_commands.Range[str, 1, 64] | None = None,
        dry_run: bool = False,
        captions: str | None = None,
        test_window: app_commands.Range[int, 0, 24 * 60] | None = None,
    ) -> None:
        # Refusals that need no I/O are answered at once, privately.
        if interaction.guild is None:
            await interaction.response.send_message(DM_REFUSAL, ephemeral=True)
            return
        refusal = train_refusal(role_names(interaction.user), self.bot.settings.discord) or source_refusal(
            dataset, dataset_url, dataset_from
        )
        largest = self.bot.settings.limits.test_window_max_min
        if refusal is None and test_window is not None and test_window > largest:
            refusal = (
                f"test_window is {test_window} minutes; this server allows at most {largest} "
                "(limits.test_window_max_min). Nothing was planned."
            )
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        workdir = new_workdir(self.bot.runtime.workdir)
        try:
            prompts = list(filter(None, (p.strip() for p in (sample_prompts or "").split("|"))))
            if sample_prompts_file is not None:
                prompts += [line.strip() for line in (await self._small_text(sample_prompts_file)).splitlines()]
            extra = parse_extra_options(await self._small_text(config)) if config is not None else {}
            options = UserOptions(
                preset=preset,
                base_model=base_model,
                trigger=trigger,
                class_word=class_word,
                epochs=epochs,
                repeats=repeats,
                network_dim=dim,
                network_alpha=alpha,
                unet_lr=unet_lr,
                te_lr=te_lr,
                resolution=resolution,
                batch_size=batch_size,
                sample_prompts=tuple(p for p in prompts if p),
                gpu=gpu,
                extra_options=extra,
                captions=caption_mode(captions),
                test_window_min=test_window,
            )
            # Live RunPod prices (at most a few minutes old) for the estimate; the built-in table if RunPod fails.
            await self.bot.runtime.planner.prices.refresh()
            prepared = await self.bot.intake.prepare(interaction, workdir, options, dataset, dataset_url, dataset_from)
        except (Refused, IngestRefused) as exc:
            await self._refuse(interaction, workdir, "Not planned", [str(exc)])
            return
        except DatasetError as exc:
            await self._refuse(interaction, workdir, "The dataset was refused", [str(exc)])
            return
        except PlanRefused as exc:
            await self._refuse(interaction, workdir, "The plan was refused", exc.reasons)
            return
        except BaseException:
            await asyncio.to_thread(_remove, workdir)
            raise
        await offer_plan(self.bot, interaction, prepared, name, dry_run=dry_run)

    async def _refuse(
        self, interaction: discord.Interaction[Any], workdir: Path, title: str, reasons: list[str]
    ) -> None:
        await asyncio.to_thread(_remove, workdir)
        await interaction.followup.send(render.refusal_text(title, reasons))

    async def _small_text(self, attachment: discord.Attachment) -> str:
        if attachment.size > SMALL_FILE_CAP:
            raise Refused(f"{shown(attachment.filename)} is over {SMALL_FILE_CAP // 1024} KiB; that is not a config.")
        assert self.bot.session is not None
        async with self.bot.session.get(attachment.url) as response:
            data = await response.content.read(SMALL_FILE_CAP + 1)
        if len(data) > SMALL_FILE_CAP:
            raise Refused(f"{shown(attachment.filename)} is over {SMALL_FILE_CAP // 1024} KiB.")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(f"{shown(attachment.filename)} is not UTF-8 text.") from None

    @train.autocomplete("base_model")
    async def base_model_choices(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        typed = current.lower()
        return [
            app_commands.Choice(name=render.truncate(f"{m.name} ({m.id})", 100), value=m.id)
            for m in _CATALOG.models
            if typed in m.id or typed in m.name.lower()
        ][:25]

    @train.autocomplete("dataset_from")
    async def dataset_from_choices(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        return await asyncio.to_thread(earlier_datasets, self.bot, interaction.user.id, current)


def earlier_datasets(bot: LorabotBot, user_id: int, typed: str) -> list[app_commands.Choice[str]]:
    """The user's jobs (newest first) and then their stored datasets no job of theirs names."""
    typed = typed.strip().lower()
    choices: list[app_commands.Choice[str]] = []
    with session_scope(bot.runtime.sessions) as s:
        jobs = s.query(Job).filter(Job.user_id == user_id).order_by(Job.id.desc()).limit(25).all()
        named = set()
        for job in jobs:
            named.add(job.dataset_sha256)
            label = f"j{job.id} · {job.name} · {job.status.value}"
            if typed in label.lower():
                choices.append(app_commands.Choice(name=render.truncate(label, 100), value=f"j{job.id}"))
        datasets = (
            s.query(Dataset)
            .filter(Dataset.owner_user_id == user_id)
            .order_by(Dataset.created_at.desc())
            .limit(25)
            .all()
        )
        for row in datasets:
            if row.sha256 in named:
                continue
            label = f"dataset {row.sha256[:12]} · {row.image_count} images · {row.created_at:%Y-%m-%d}"
            if typed in label.lower():
                choices.append(app_commands.Choice(name=label, value=f"sha256:{row.sha256}"))
    return choices[:25]


async def setup(bot: LorabotBot) -> None:
    await bot.add_cog(Train(bot))
