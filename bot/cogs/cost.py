"""/cost: a job's breakdown (live while it runs), a user's or the team's month, and what budget is left."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.actions import Refused, parse_job
from jobs.billing_sync import job_bill
from jobs.ledger import (
    job_cost,
    month_of,
    remaining_budget,
    team_month_cost,
    usd_to_micros,
    user_month_cost,
    volumes_month_cost,
)
from jobs.pick import job_result
from jobs.states import JobStatus
from jobs.usertext import shown
from storage.db import session_scope
from storage.queries import get_job

if TYPE_CHECKING:
    from bot.client import LorabotBot

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def check_month(text: str | None, now: dt.datetime) -> str:
    if text is None:
        return month_of(now)
    if not _MONTH.match(text.strip()):
        raise Refused(f"{shown(text, 20)} is not a month; write it like {month_of(now)}.")
    return text.strip()


class Cost(commands.Cog):
    def __init__(self, bot: LorabotBot) -> None:
        self.bot = bot

    @app_commands.command(name="cost", description="What a job, a user or the team spent (and the budget left)")
    @app_commands.describe(job="job id, like j42", user="whose month to show", month="YYYY-MM (default: this month)")
    async def cost(
        self,
        interaction: discord.Interaction[Any],
        job: str | None = None,
        user: discord.User | None = None,
        month: str | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            embed = await asyncio.to_thread(self._cost_embed, interaction.user, job, user, month)
        except Refused as exc:
            await interaction.followup.send(str(exc), ephemeral=True)
            return
        await interaction.followup.send(embed=embed, ephemeral=True)

    def _cost_embed(
        self, caller: discord.abc.User, job_text: str | None, user: discord.abc.User | None, month_text: str | None
    ) -> discord.Embed:
        runtime = self.bot.runtime
        now = runtime.clock()
        sandbox = " (sandbox: simulated, $0 real)" if runtime.sandbox else ""
        with session_scope(runtime.sessions) as s:
            if job_text is not None:
                job_id = parse_job(job_text)
                row = get_job(s, job_id)
                if row is None:
                    raise Refused(f"there is no job `j{job_id}`.")
                cost = job_cost(s, job_id, now=now)
                text = render.job_cost_text(cost, job_bill(s, job_id, cost))
                if row.status is JobStatus.SUCCEEDED:
                    # What the money bought: the final LoRA, or the epoch its owner picked.
                    text = f"{text}\nResult: {job_result(row).describe()}"
                title = f"Cost of j{job_id} · {row.name}{sandbox}"
                return render.EmbedBuilder(title, text).footer(row.status.value).build()
            month = check_month(month_text, now)
            limits = runtime.settings.limits
            who = user or caller
            mine = user_month_cost(s, who.id, month, now=now)
            team = team_month_cost(s, month, now=now)
            volumes = volumes_month_cost(s, month, now=now, jobs_share_micros=team.volume_micros)
            user_left = remaining_budget(
                s, who.id, month, now=now, default_limit_micros=usd_to_micros(limits.monthly_budget_user_usd)
            )
            team_left = remaining_budget(
                s, None, month, now=now, default_limit_micros=usd_to_micros(limits.monthly_budget_team_usd)
            )
        builder = render.EmbedBuilder(f"Costs for {month}{sandbox}", "")
        builder.field(f"{who.display_name}", render.cost_table(mine))
        builder.field("Team", render.cost_table(team))
        if volumes.kept_micros:
            centers = len(volumes.data_centers)
            where = f", {centers} data centers" if centers > 1 else ""
            builder.field(f"Network Volume ({volumes.gb} GB{where})", render.volume_month_table(volumes, team))
        left = [
            f"{who.display_name}: {render.usd(user_left) if user_left is not None else 'no limit'}",
            f"Team: {render.usd(team_left) if team_left is not None else 'no limit'}",
        ]
        builder.field("Budget left", "\n".join(left))
        return builder.build()


async def setup(bot: LorabotBot) -> None:
    await bot.add_cog(Cost(bot))
