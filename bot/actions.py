"""What commands and buttons do, shared by both: confirm a plan, cancel a job, hand out a LoRA link.

Each function acknowledges the interaction first (Discord allows 3 s), then does the slow part (DB, store, cloud)
and answers with a followup. Blocking work (SQLite, S3, a dataset upload) runs in threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.ingest import Prepared
from bot.permissions import owner_or_admin_refusal, role_names
from bot.views import plan_view
from jobs.dataset import DatasetError
from jobs.ledger import format_usd, job_cost, month_of, usd_to_micros, would_exceed
from jobs.manifest import JobKeys
from jobs.queue import JobPlan, submit
from jobs.rules import PlanRefused
from jobs.spec import UserOptions
from jobs.states import JobStatus, NoticeKind
from storage.db import session_scope
from storage.queries import count_active_jobs_for_user, get_dataset, get_job
from storage.transitions import add_notice

if TYPE_CHECKING:
    from bot.client import LorabotBot

log = logging.getLogger(__name__)

PLAN_LIFETIME = dt.timedelta(minutes=30)


class Refused(Exception):
    """A user-facing refusal; str() is the message."""


@dataclass
class PendingPlan:
    """A plan shown with Confirm/Cancel buttons, kept in memory until confirmed, dropped or expired."""

    token: str
    prepared: Prepared
    summary: dict[str, Any]
    name: str
    user_id: int
    guild_id: int | None
    channel_id: int | None
    created_at: dt.datetime

    def expired(self, now: dt.datetime) -> bool:
        return now - self.created_at > PLAN_LIFETIME


def new_token() -> str:
    return secrets.token_hex(8)


async def offer_plan(
    bot: LorabotBot, interaction: discord.Interaction[Any], prepared: Prepared, name: str, *, dry_run: bool = False
) -> None:
    """Answer with the plan: Confirm/Cancel buttons (the plan waits in memory), or just the plan for a dry run."""
    summary = render.plan_summary(
        prepared.plan, job_name=name, sandbox=bot.runtime.sandbox, report_text=prepared.report_text
    )
    embeds = render.plan_embeds_from_summary(summary)
    if dry_run:
        await asyncio.to_thread(prepared.discard)
        await interaction.followup.send("Dry run: nothing was queued.", embeds=embeds)
        return
    bot.sweep_plans()  # rare and small: expired plans only
    token = new_token()
    bot.plans[token] = PendingPlan(
        token=token,
        prepared=prepared,
        summary=summary,
        name=name,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        created_at=dt.datetime.now(dt.UTC),
    )
    reuse = " (reusing a stored dataset: nothing to upload)" if prepared.reused else ""
    await interaction.followup.send(
        f"Plan for **{render.truncate(name, 64)}**{reuse}. Confirm to queue it.",
        embeds=embeds,
        view=plan_view(token),
    )


async def check_plan_owner(bot: LorabotBot, interaction: discord.Interaction[Any], token: str) -> bool:
    pending = bot.plans.get(token)
    if pending is None or pending.user_id == interaction.user.id:
        return True  # an unknown plan is answered by the callback ("expired")
    await interaction.response.send_message("Only the person who asked for this plan can confirm it.", ephemeral=True)
    return False


async def drop_plan(bot: LorabotBot, interaction: discord.Interaction[Any], token: str) -> None:
    pending = bot.plans.pop(token, None)
    if pending is not None:
        await asyncio.to_thread(pending.prepared.discard)
    await interaction.response.edit_message(content="Plan dropped; nothing was queued.", view=None)


async def confirm_plan(bot: LorabotBot, interaction: discord.Interaction[Any], token: str) -> None:
    pending = bot.plans.pop(token, None)
    if pending is None or pending.expired(dt.datetime.now(dt.UTC)):
        await interaction.response.edit_message(
            content="This plan expired (plans are kept 30 minutes and not across bot restarts): run /train again.",
            view=None,
        )
        if pending is not None:
            await asyncio.to_thread(pending.prepared.discard)
        return
    await interaction.response.edit_message(content="Queuing…", view=None)
    try:
        job_id = await asyncio.to_thread(submit_pending, bot, pending)
    except Refused as exc:
        await interaction.edit_original_response(content=render.truncate(f"Not queued: {exc}", render.CONTENT_MAX))
        return
    finally:
        await asyncio.to_thread(pending.prepared.discard)
    thread = await bot.notifier.ensure_thread(job_id)
    where = f" · follow it in <#{thread.id}>" if isinstance(thread, discord.Thread) else ""
    await interaction.edit_original_response(content=f"Queued as `j{job_id}`{where}.")
    bot.notifier.wake()
    bot.runtime_kick()


def submit_pending(bot: LorabotBot, pending: PendingPlan) -> int:
    """Limits, then the dataset into the store (once per hash), the QUEUED job and its PLAN notice, in one
    transaction (blocking: run in a thread)."""
    runtime = bot.runtime
    limits = runtime.settings.limits
    now = runtime.clock()
    plan = pending.prepared.plan
    estimate = max(cost.total_micros for cost in plan.estimate.costs)
    with session_scope(runtime.sessions) as s:
        active = count_active_jobs_for_user(s, pending.user_id)
        if active >= limits.max_jobs_per_user:
            raise Refused(
                f"you already have {active} job(s) running or queued (the limit is {limits.max_jobs_per_user}); "
                "wait for one to finish or /cancel one"
            )
        if not runtime.sandbox:
            check = would_exceed(
                s,
                pending.user_id,
                month_of(now),
                estimate,
                now=now,
                default_user_limit_micros=usd_to_micros(limits.monthly_budget_user_usd),
                default_team_limit_micros=usd_to_micros(limits.monthly_budget_team_usd),
            )
            if not check.allowed:
                raise Refused(check.reason or "over budget")
        job = submit(
            s,
            runtime.store,
            plan=plan,
            dataset_zip=pending.prepared.dataset_zip,
            dataset_sha256=pending.prepared.dataset_sha256,
            dataset_size=pending.prepared.dataset_size,
            image_count=pending.prepared.image_count,
            report=pending.prepared.report,
            user_id=pending.user_id,
            name=pending.name,
            now=now,
            guild_id=pending.guild_id,
            channel_id=pending.channel_id,
            wall_time=dt.timedelta(hours=float(limits.job_wall_time_h)),
        )
        if runtime.model_source is not None:
            job.plan_json = runtime.model_source(JobPlan.from_json(job.plan_json)).to_json()
        add_notice(
            s,
            job_id=job.id,
            kind=NoticeKind.PLAN,
            key=f"j{job.id}:plan",
            now=now,
            payload={**pending.summary, "user_id": pending.user_id},
        )
        return job.id


async def plan_stored_dataset(bot: LorabotBot, interaction: discord.Interaction[Any], sha256: str) -> None:
    """The "Plan a training" button under an uploaded dataset: the preset's defaults, no new upload."""
    from bot.ingest import new_workdir

    row = await asyncio.to_thread(_owned_dataset, bot, sha256)
    if row is None or row[0] != interaction.user.id:
        await interaction.response.send_message(
            "Only the person who uploaded this dataset can plan from it.", ephemeral=True
        )
        return
    await interaction.response.defer(thinking=True)
    _, key, size = row
    planner = bot.runtime.planner
    workdir = new_workdir(bot.runtime.workdir)
    try:
        prepared = await planner.run(
            lambda: planner.plan_stored(bot.runtime.store, key, sha256, size, workdir, UserOptions())
        )
    except (DatasetError, PlanRefused) as exc:
        await asyncio.to_thread(prepared_cleanup, workdir)
        reasons = exc.reasons if isinstance(exc, PlanRefused) else [str(exc)]
        await interaction.followup.send(render.refusal_text("The plan was refused", reasons))
        return
    await offer_plan(bot, interaction, prepared, f"dataset {sha256[:8]}")


def _owned_dataset(bot: LorabotBot, sha256: str) -> tuple[int, str, int] | None:
    with session_scope(bot.runtime.sessions) as s:
        row = get_dataset(s, sha256)
        return (row.owner_user_id, row.store_key, row.size) if row is not None else None


def prepared_cleanup(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)


# -- jobs ----------------------------------------------------------------------------------------------------------


def parse_job(text: str) -> int:
    """`j42`, `42` or `#42` → 42; anything else is a Refused with an example."""
    raw = text.strip().lstrip("#").lower()
    raw = raw[1:] if raw.startswith("j") else raw
    if not raw.isdigit() or len(raw) > 12:
        raise Refused(f"{text[:40]!r} is not a job id; job ids look like `j42`.")
    return int(raw)


@dataclass(frozen=True)
class JobFacts:
    id: int
    user_id: int
    name: str
    status: JobStatus
    output_name: str
    epochs: int
    failure_reason: str | None
    thread_id: int | None


def job_facts(bot: LorabotBot, job_id: int) -> JobFacts:
    with session_scope(bot.runtime.sessions) as s:
        job = get_job(s, job_id)
        if job is None:
            raise Refused(f"there is no job `j{job_id}`.")
        epochs = int((job.plan_json or {}).get("epochs") or 0)
        return JobFacts(
            job.id, job.user_id, job.name, job.status, job.output_name, epochs, job.failure_reason, job.thread_id
        )


async def cancel_from_discord(bot: LorabotBot, interaction: discord.Interaction[Any], job_id: int) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        text = await cancel_job(bot, job_id, interaction.user)
    except Refused as exc:
        text = str(exc)
    await interaction.followup.send(text, ephemeral=True)


async def cancel_job(bot: LorabotBot, job_id: int, user: discord.abc.User) -> str:
    facts = await asyncio.to_thread(job_facts, bot, job_id)
    refusal = owner_or_admin_refusal(facts.user_id, user.id, role_names(user), bot.settings.discord)
    if refusal:
        raise Refused(refusal)
    if facts.status.is_terminal():
        raise Refused(f"`j{job_id}` already ended ({facts.status.value}); nothing to cancel.")
    job = await bot.runtime.orchestrator.cancel(job_id, by=user.name)
    bot.notifier.wake()
    cost = await asyncio.to_thread(_job_cost, bot, job_id)
    if job.status is JobStatus.CANCELLED:
        return f"Cancelled `j{job_id}`: every pod is terminated. Final cost {format_usd(cost)}."
    return (
        f"Cancelling `j{job_id}`: pods are being terminated; the thread gets the final cost when they are gone "
        f"({format_usd(cost)} so far)."
    )


def _job_cost(bot: LorabotBot, job_id: int) -> int:
    with session_scope(bot.runtime.sessions) as s:
        return job_cost(s, job_id, now=bot.runtime.clock()).total_micros


async def send_lora_link(
    bot: LorabotBot, interaction: discord.Interaction[Any], job_id: int, epoch: int | None
) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        text = await asyncio.to_thread(lora_link_text, bot, job_id, epoch)
    except Refused as exc:
        text = str(exc)
    await interaction.followup.send(text, ephemeral=True)


def lora_link_text(bot: LorabotBot, job_id: int, epoch: int | None) -> str:
    """A download link for the final LoRA (epoch None) or one epoch's checkpoint (blocking)."""
    facts = job_facts(bot, job_id)
    keys = JobKeys(f"j{job_id}", facts.output_name)
    store = bot.runtime.store
    if epoch is None:
        key, what = keys.final, "the final LoRA"
    else:
        if not 1 <= epoch <= max(facts.epochs, 1):
            raise Refused(f"`j{job_id}` has epochs 1 to {facts.epochs}; there is no epoch {epoch}.")
        key, what = keys.checkpoint(epoch), f"epoch {epoch}"
    info = store.head(key)
    if info is None:
        raise Refused(f"{what} of `j{job_id}` is not in the store (yet, or any more: old epochs expire).")
    link = store.public_link(key)
    lifetime = bot.settings.s3.link_lifetime_s
    expires = render.timestamp(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lifetime))
    return render.truncate(
        f"**{what} of `j{job_id}`** ({render.size(info.size)}): [download]({link})\nThe link expires {expires}.",
        render.CONTENT_MAX,
    )


__all__ = [
    "PendingPlan",
    "Refused",
    "cancel_job",
    "confirm_plan",
    "lora_link_text",
    "new_token",
    "parse_job",
]
