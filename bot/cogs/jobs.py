"""/status, /queue, /jobs, /cancel, /retry, /lora, /models: thin commands over the job store and the orchestrator."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.actions import Refused, cancel_job, job_facts, lora_link_text, parse_job, pick_job_epoch
from bot.permissions import DM_REFUSAL, owner_or_admin_refusal, role_names
from jobs.catalog import load_catalog
from jobs.ledger import format_usd, job_cost
from jobs.pick import PickRefused
from jobs.states import JobStatus
from storage.db import session_scope
from storage.queries import get_job, list_active_jobs, list_jobs_by_user
from storage.transitions import InvalidTransition, set_requeued

if TYPE_CHECKING:
    from bot.client import LorabotBot


class Jobs(commands.Cog):
    def __init__(self, bot: LorabotBot) -> None:
        self.bot = bot

    @app_commands.command(name="status", description="A job's state, progress and cost so far")
    @app_commands.describe(job="job id, like j42 (default: your newest job)")
    async def status(self, interaction: discord.Interaction[Any], job: str | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            text = await asyncio.to_thread(self._status_text, interaction.user.id, job)
        except Refused as exc:
            text = str(exc)
        await interaction.followup.send(text, ephemeral=True)

    def _status_text(self, user_id: int, job_text: str | None) -> str:
        now = self.bot.runtime.clock()
        with session_scope(self.bot.runtime.sessions) as s:
            if job_text is None:
                mine = list_jobs_by_user(s, user_id, limit=1)
                if not mine:
                    raise Refused("You have no jobs yet: start one with /train.")
                row = mine[0]
            else:
                found = get_job(s, parse_job(job_text))
                if found is None:
                    raise Refused(f"there is no job `{job_text[:20]}`.")
                row = found
            cost = job_cost(s, row.id, now=now)
            epochs = int((row.plan_json or {}).get("epochs") or 0)
            lines = [
                f"**`j{row.id}` {row.name}** · {row.status.value}" + (" (sandbox)" if self.bot.runtime.sandbox else ""),
                f"Epochs: {row.last_epoch_notified}/{epochs} {render.progress_bar(row.last_epoch_notified, epochs)}",
                f"Cost{' so far' if cost.live else ''}: {format_usd(cost.total_micros)}",
            ]
            if row.failure_reason:
                lines.append(f"Reason: {row.failure_reason}")
            if row.thread_id:
                lines.append(f"Thread: <#{row.thread_id}>")
        return render.truncate("\n".join(lines), render.CONTENT_MAX)

    @app_commands.command(name="queue", description="Jobs queued or running right now")
    async def queue(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await asyncio.to_thread(self._queue_text)
        await interaction.followup.send(text, ephemeral=True)

    def _queue_text(self) -> str:
        now = self.bot.runtime.clock()
        with session_scope(self.bot.runtime.sessions) as s:
            rows = [
                (f"j{j.id}", j.name, j.status.value, format_usd(job_cost(s, j.id, now=now).total_micros))
                for j in list_active_jobs(s)
            ]
        return render.truncate("**Queue**\n" + render.jobs_lines(rows), render.CONTENT_MAX)

    @app_commands.command(name="jobs", description="Recent jobs of a user (default: yours)")
    async def jobs(self, interaction: discord.Interaction[Any], user: discord.User | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        who = user or interaction.user
        text = await asyncio.to_thread(self._jobs_text, who.id, who.display_name)
        await interaction.followup.send(text, ephemeral=True)

    def _jobs_text(self, user_id: int, label: str) -> str:
        now = self.bot.runtime.clock()
        with session_scope(self.bot.runtime.sessions) as s:
            rows = [
                (f"j{j.id}", j.name, j.status.value, format_usd(job_cost(s, j.id, now=now).total_micros))
                for j in list_jobs_by_user(s, user_id, limit=15)
            ]
        return render.truncate(f"**Jobs of {label}**\n" + render.jobs_lines(rows), render.CONTENT_MAX)

    @app_commands.command(name="cancel", description="Stop a job and terminate its pods (owner or admin)")
    @app_commands.describe(job="job id, like j42")
    async def cancel(self, interaction: discord.Interaction[Any], job: str) -> None:
        if interaction.guild is None:
            await interaction.response.send_message(DM_REFUSAL, ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        try:
            text = await cancel_job(self.bot, parse_job(job), interaction.user)
        except Refused as exc:
            text = str(exc)
        await interaction.followup.send(text)

    @app_commands.command(name="retry", description="Queue a failed or cancelled job again (owner or admin)")
    @app_commands.describe(job="job id, like j42")
    async def retry(self, interaction: discord.Interaction[Any], job: str) -> None:
        await interaction.response.defer(thinking=True)
        try:
            text = await asyncio.to_thread(self._retry, parse_job(job), interaction.user)
            self.bot.runtime_kick()
        except Refused as exc:
            text = str(exc)
        await interaction.followup.send(text)

    def _retry(self, job_id: int, user: discord.abc.User) -> str:
        facts = job_facts(self.bot, job_id)
        refusal = owner_or_admin_refusal(facts.user_id, user.id, role_names(user), self.bot.settings.discord)
        if refusal:
            raise Refused(refusal)
        if facts.status not in JobStatus.failure_statuses() | {JobStatus.CANCELLED}:
            raise Refused(f"`j{job_id}` is {facts.status.value}; only failed or cancelled jobs can be retried.")
        try:
            with session_scope(self.bot.runtime.sessions) as s:
                set_requeued(s, job_id, now=self.bot.runtime.clock())
        except InvalidTransition as exc:
            raise Refused(f"`j{job_id}` cannot be retried now: {exc}") from None
        return f"`j{job_id}` is queued again; the epochs already saved in the store are kept."

    @app_commands.command(name="lora", description="Download links for a job's LoRA, or any epoch's")
    @app_commands.describe(job="job id, like j42", epoch="an epoch number (default: the job's result)")
    async def lora(
        self, interaction: discord.Interaction[Any], job: str, epoch: app_commands.Range[int, 1, 1000] | None = None
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            text = await asyncio.to_thread(lora_link_text, self.bot, parse_job(job), epoch)
        except Refused as exc:
            text = str(exc)
        await interaction.followup.send(text, ephemeral=True)

    @app_commands.command(name="pick", description="Make one epoch the result of a finished job (owner or admin)")
    @app_commands.describe(job="job id, like j42", epoch="the epoch whose LoRA becomes the job's result")
    async def pick(
        self, interaction: discord.Interaction[Any], job: str, epoch: app_commands.Range[int, 1, 1000]
    ) -> None:
        # The final message's menu offers at most 25 epochs; this takes any, with the same checks.
        if interaction.guild is None:
            await interaction.response.send_message(DM_REFUSAL, ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            text = await pick_job_epoch(self.bot, parse_job(job), str(epoch), interaction.user)
        except (Refused, PickRefused) as exc:
            text = str(exc)
        await interaction.followup.send(text, ephemeral=True)

    @app_commands.command(name="models", description="Base models you can train on, and the GPUs and their prices")
    async def models(self, interaction: discord.Interaction[Any]) -> None:
        # Deferred first: reading RunPod's prices may take a moment, and Discord wants an answer within 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        prices = self.bot.runtime.planner.prices
        await prices.refresh()
        catalog = load_catalog()
        lines = [f"`{m.id}` · {m.name} · {m.family}" + (" (gated)" if m.gated else "") for m in catalog.models]
        text = (
            "**Base models**\n"
            + "\n".join(lines)
            + "\n\n**GPUs** (Secure Cloud, per hour)\n"
            + render.gpu_prices_text(prices.get_table())
        )
        await interaction.followup.send(render.truncate(text, render.CONTENT_MAX), ephemeral=True)


async def setup(bot: LorabotBot) -> None:
    await bot.add_cog(Jobs(bot))
