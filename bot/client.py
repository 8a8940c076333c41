"""The discord.py client: owns the shared resources (HTTP session, notifier, pending plans), loads the cogs,
registers the restart-proof buttons and syncs the commands.

The process (settings, logging, migrations, the runtime's lifetime) belongs to `bot.launcher`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
import pkgutil
import shutil
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.actions import PLAN_LIFETIME, PendingPlan
from bot.app import Runtime
from bot.intake import DatasetIntake
from bot.notifier import Notifier
from bot.views import DYNAMIC_ITEMS
from jobs.config import Settings

log = logging.getLogger(__name__)

COGS_PACKAGE = "bot.cogs"


def discover_cogs(package: str = COGS_PACKAGE) -> list[str]:
    """Every module of `bot/cogs` whose name does not start with `_` (python-discord's rule)."""
    module = importlib.import_module(package)
    return sorted(
        f"{package}.{info.name}" for info in pkgutil.iter_modules(module.__path__) if not info.name.startswith("_")
    )


class LorabotTree(app_commands.CommandTree["LorabotBot"]):
    async def on_error(self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError) -> None:
        """A bug must not leave the user staring at "thinking…": say so, log the details (redacted) for us."""
        log.error("command %s failed", interaction.command.name if interaction.command else "?", exc_info=error)
        text = "Something went wrong on lorabot's side; the operators have the details. Please try again."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the user about the failure")


class LorabotBot(commands.Bot):
    def __init__(self, runtime: Runtime, *, notifier_poll_s: float = 2.0, **options: Any) -> None:
        intents = discord.Intents.default()  # slash commands need no privileged intents
        # Messages quote user text (file names, captions, prompts): only the user pings we write ourselves may
        # notify anyone, never an @everyone, @here or role mention inside that text.
        options.setdefault("allowed_mentions", discord.AllowedMentions(everyone=False, roles=False, users=True))
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, tree_cls=LorabotTree, **options)
        self.runtime = runtime
        self.settings: Settings = runtime.settings
        self.plans: dict[str, PendingPlan] = {}
        self.notifier = Notifier(self, poll_s=notifier_poll_s, clock=runtime.clock)
        self.session: aiohttp.ClientSession | None = None
        self.loaded_cogs: list[str] = []
        # Each guild's upload limit as its last interaction reported it (boosts raise it): what a sheet may weigh.
        self.attachment_limits: dict[int, int] = {}
        # /train's and /caption's dataset intake (one download cap for both).
        self.intake = DatasetIntake(self)

    async def setup_hook(self) -> None:
        self.session = aiohttp.ClientSession()
        for name in discover_cogs():
            try:
                await self.load_extension(name)
                self.loaded_cogs.append(name)
            except Exception:  # one broken cog must not keep the others (and the notifier) down
                log.exception("failed to load extension %s", name)
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        await self.sync_commands()
        self.runtime.after_tick.append(self.notifier.wake)
        self.notifier.start()

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.guild_id is not None and interaction.filesize_limit:
            self.attachment_limits[interaction.guild_id] = interaction.filesize_limit

    async def sync_commands(self) -> None:
        guild_ids = self.settings.discord.guild_ids
        if guild_ids:
            for guild_id in guild_ids:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()

    def sweep_plans(self) -> int:
        """Forget plans nobody confirmed within their lifetime, and free their disk; returns how many."""
        now = dt.datetime.now(dt.UTC)
        expired = [token for token, pending in self.plans.items() if pending.expired(now)]
        for token in expired:
            self.plans.pop(token).prepared.discard()
        # Work folders of plans offered before a restart and never confirmed (or of a crash mid-ingest).
        live = {pending.prepared.workdir for pending in self.plans.values()}
        cutoff = (now - PLAN_LIFETIME).timestamp()
        for folder in self.runtime.workdir.glob("train-*"):
            with contextlib.suppress(OSError):
                if folder not in live and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
                    expired.append(folder.name)
        return len(expired)

    def runtime_kick(self) -> None:
        """Run the orchestrator's tick now (a confirmed job need not wait for the next interval)."""
        scheduler = getattr(self.runtime, "scheduler", None)
        if scheduler is not None and scheduler.running and scheduler.get_job("tick") is not None:
            scheduler.modify_job("tick", next_run_time=dt.datetime.now(dt.UTC))

    async def close(self) -> None:
        await self.notifier.stop()
        if self.notifier.wake in self.runtime.after_tick:
            self.runtime.after_tick.remove(self.notifier.wake)
        # Plans waiting for Confirm stay on disk: the next start rebuilds them (bot.actions.load_pending).
        self.plans.clear()
        if self.session is not None:
            await self.session.close()
        await super().close()
