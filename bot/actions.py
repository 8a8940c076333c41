"""What commands and buttons do, shared by both: confirm a plan, cancel a job, hand out a LoRA link.

Each function acknowledges the interaction first (Discord allows 3 s), then does the slow part (DB, store, cloud)
and answers with a followup. Blocking work (SQLite, S3, a dataset upload) runs in threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
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
from jobs.cloud import CloudError
from jobs.dataset import DatasetError
from jobs.ledger import format_usd, job_cost, month_of, usd_to_micros, would_exceed
from jobs.manifest import JobKeys
from jobs.pick import PickRefused, job_result, pick_epoch
from jobs.queue import JobPlan, job_plan_of, submit
from jobs.rules import PlanRefused
from jobs.spec import UserOptions
from jobs.states import JobStatus, NoticeKind
from jobs.usertext import shown
from storage.db import session_scope
from storage.queries import count_active_jobs_for_user, get_dataset, get_job
from storage.transitions import add_notice

if TYPE_CHECKING:
    from bot.client import LorabotBot
    from jobs.planning import Plan

log = logging.getLogger(__name__)

PLAN_LIFETIME = dt.timedelta(minutes=30)


class Refused(Exception):
    """A user-facing refusal; str() is the message."""


@dataclass
class PendingPlan:
    """A plan shown with Confirm/Cancel buttons, until confirmed, dropped or expired: in memory, and on disk
    (`pending.json` in its work folder) so that a restarted bot can rebuild it."""

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


# The Confirm button of a /caption plan (a training plan's says "Confirm and train").
CAPTION_CONFIRM = "Confirm and caption"


def new_token() -> str:
    return secrets.token_hex(8)


PENDING_FILE = "pending.json"


def save_pending(pending: PendingPlan) -> None:
    """Write what rebuilds the plan into its work folder (in the data folder), so Confirm outlives a restart."""
    prepared = pending.prepared
    options = dataclasses.asdict(prepared.options)
    record = {
        "token": pending.token,
        "name": pending.name,
        "user_id": pending.user_id,
        "guild_id": pending.guild_id,
        "channel_id": pending.channel_id,
        "created_at": pending.created_at.isoformat(),
        "options": {**options, "extra_options": dict(prepared.options.extra_options)},
        "reused": prepared.reused,
        "dataset_sha256": prepared.dataset_sha256,
        "dataset_size": prepared.dataset_size,
        "caption_only": prepared.caption_only,
        "env_ready": prepared.env_ready,
    }
    path = prepared.workdir / PENDING_FILE
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(record), encoding="utf-8")
    partial.replace(path)


def _find_pending(bot: LorabotBot, token: str) -> tuple[Path, dict[str, Any]] | None:
    """(work folder, saved record) of the plan with this token, if one is on disk (blocking)."""
    if not token or not all(c in "0123456789abcdef" for c in token):
        return None
    for path in bot.runtime.workdir.glob(f"train-*/{PENDING_FILE}"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("token") == token:
            return path.parent, record
    return None


def load_pending(bot: LorabotBot, token: str) -> PendingPlan | None:
    """The plan with this token from disk (after a restart): re-planned from its packed dataset, or None when it is
    unknown or expired (blocking: run in a thread)."""
    found = _find_pending(bot, token)
    if found is None:
        return None
    workdir, record = found
    created_at = dt.datetime.fromisoformat(record["created_at"])
    if dt.datetime.now(dt.UTC) - created_at > PLAN_LIFETIME:
        prepared_cleanup(workdir)
        return None
    raw = dict(record["options"])
    raw["sample_prompts"] = tuple(raw.get("sample_prompts") or ())
    # Plans saved before RunPod dropped spot pods carry the option; the re-plan below prices on-demand instead.
    raw.pop("spot", None)
    options = UserOptions(**raw)
    replan = workdir / "replan"
    shutil.rmtree(replan, ignore_errors=True)
    replan.mkdir()
    shutil.copyfile(workdir / "normalised.zip", replan / "dataset.zip")
    prepared = bot.runtime.planner.plan_zip(replan / "dataset.zip", replan, options)
    prepared.workdir = workdir  # discarding the plan frees the whole folder
    prepared.reused = bool(record["reused"])
    prepared.dataset_sha256, prepared.dataset_size = record["dataset_sha256"], record["dataset_size"]
    prepared.caption_only = bool(record.get("caption_only"))
    prepared.env_ready = bool(record.get("env_ready"))
    return PendingPlan(
        token=token,
        prepared=prepared,
        summary=plan_summary_of(bot, prepared, record["name"]),
        name=record["name"],
        user_id=record["user_id"],
        guild_id=record["guild_id"],
        channel_id=record["channel_id"],
        created_at=created_at,
    )


async def take_pending(bot: LorabotBot, token: str) -> PendingPlan | None:
    """The waiting plan: from memory, or from disk when the bot restarted since it was offered."""
    pending = bot.plans.pop(token, None)
    if pending is None:
        try:
            pending = await asyncio.to_thread(load_pending, bot, token)
        except (DatasetError, PlanRefused, OSError, KeyError, TypeError, ValueError):
            log.exception("could not rebuild plan %s after a restart", token)
            return None
    return pending


async def offer_plan(
    bot: LorabotBot, interaction: discord.Interaction[Any], prepared: Prepared, name: str, *, dry_run: bool = False
) -> None:
    """Answer with the plan: Confirm/Cancel buttons (the plan waits in memory), or just the plan for a dry run."""
    summary = plan_summary_of(bot, prepared, name)
    # Where a GPU would be found matters to training only; a /caption job rents none.
    where = None if prepared.caption_only else await placement_preview(bot, prepared.plan)
    if where is not None:
        summary["placement"] = where
    embeds = render.plan_embeds_from_summary(summary)
    if dry_run:
        await asyncio.to_thread(prepared.discard)
        await interaction.followup.send("Dry run: nothing was queued.", embeds=embeds)
        return
    bot.sweep_plans()  # rare and small: expired plans only
    token = new_token()
    pending = bot.plans[token] = PendingPlan(
        token=token,
        prepared=prepared,
        summary=summary,
        name=name,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        created_at=dt.datetime.now(dt.UTC),
    )
    await asyncio.to_thread(save_pending, pending)
    reuse = " (reusing a stored dataset: nothing to upload)" if prepared.reused else ""
    what = "Captioning plan" if prepared.caption_only else "Plan"
    await interaction.followup.send(
        f"{what} for **{render.truncate(name, 64)}**{reuse}. Confirm to queue it.",
        embeds=embeds,
        view=plan_view(token, confirm_label=CAPTION_CONFIRM if prepared.caption_only else None),
    )


def plan_summary_of(bot: LorabotBot, prepared: Prepared, name: str) -> dict[str, Any]:
    """The plan message's data: a training plan, or a /caption job's CPU-only plan (bot/captioning.py)."""
    if prepared.caption_only:
        from bot.captioning import caption_plan_summary

        return caption_plan_summary(bot, prepared, name)
    limits = bot.settings.limits
    asked = prepared.plan.spec.test_window_min
    window = min(limits.test_window_min if asked is None else asked, limits.test_window_max_min)
    return render.plan_summary(
        prepared.plan,
        job_name=name,
        sandbox=bot.runtime.sandbox,
        report_text=prepared.report_text,
        test_window_min=window,
    )


async def placement_preview(bot: LorabotBot, plan: Plan) -> str | None:
    """The data center the job would run in now and why (several listed), or None: one data center, or RunPod's
    catalog could not be read (the job is placed when it leaves the queue either way)."""
    try:
        placement = await bot.runtime.orchestrator.preview_placement(job_plan_of(plan))
    except CloudError as exc:
        log.warning("placement preview unavailable: %s", exc)
        return None
    if placement is None or not placement.data_center_id:
        return None
    return (
        f"{placement.reason}. Checked again when the job leaves the queue: stock can change before then."
        if placement.reason
        else f"{placement.data_center_id}."
    )


async def check_plan_owner(bot: LorabotBot, interaction: discord.Interaction[Any], token: str) -> bool:
    pending = bot.plans.get(token)
    if pending is None:
        owner = await asyncio.to_thread(_pending_owner_on_disk, bot, token)
        if owner is None or owner == interaction.user.id:
            return True
    elif pending.user_id == interaction.user.id:
        return True  # an unknown plan is answered by the callback ("expired")
    await interaction.response.send_message("Only the person who asked for this plan can confirm it.", ephemeral=True)
    return False


def _pending_owner_on_disk(bot: LorabotBot, token: str) -> int | None:
    found = _find_pending(bot, token)
    return int(found[1]["user_id"]) if found else None


def _pending_dir_on_disk(bot: LorabotBot, token: str) -> Path | None:
    found = _find_pending(bot, token)
    return found[0] if found else None


async def drop_plan(bot: LorabotBot, interaction: discord.Interaction[Any], token: str) -> None:
    pending = bot.plans.pop(token, None)
    if pending is None:
        owner_dir = await asyncio.to_thread(_pending_dir_on_disk, bot, token)
        if owner_dir is not None:
            await asyncio.to_thread(prepared_cleanup, owner_dir)
    if pending is not None:
        await asyncio.to_thread(pending.prepared.discard)
    await interaction.response.edit_message(content="Plan dropped; nothing was queued.", view=None)


async def confirm_plan(bot: LorabotBot, interaction: discord.Interaction[Any], token: str) -> None:
    if token not in bot.plans:
        # Rebuilding a plan after a restart re-reads its dataset: acknowledge first.
        await interaction.response.defer()
    pending = await take_pending(bot, token)
    if pending is None or pending.expired(dt.datetime.now(dt.UTC)):
        expired = f"This plan expired (plans are kept 30 minutes): run {_plan_command(pending, interaction)} again."
        if interaction.response.is_done():
            await interaction.edit_original_response(content=expired, view=None)
        else:
            await interaction.response.edit_message(content=expired, view=None)
        if pending is not None:
            await asyncio.to_thread(pending.prepared.discard)
        return
    if interaction.response.is_done():
        await interaction.edit_original_response(content="Queuing…", view=None)
    else:
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


def _plan_command(pending: PendingPlan | None, interaction: discord.Interaction[Any]) -> str:
    """The command that offered this plan: /caption or /train. A plan already forgotten (swept, or gone with its
    work folder) is told by its Confirm button's label, which only a /caption plan sets."""
    if pending is not None:
        return "/caption" if pending.prepared.caption_only else "/train"
    for row in interaction.message.components if interaction.message is not None else []:
        for item in getattr(row, "children", []):
            if str(getattr(item, "custom_id", "")).endswith(":confirm"):
                return "/caption" if getattr(item, "label", None) == CAPTION_CONFIRM else "/train"
    return "/train"


def submit_pending(bot: LorabotBot, pending: PendingPlan) -> int:
    """Limits, then the dataset into the store (once per hash), the QUEUED job and its PLAN notice, in one
    transaction (blocking: run in a thread)."""
    runtime = bot.runtime
    limits = runtime.settings.limits
    now = runtime.clock()
    plan = pending.prepared.plan
    estimate = max(cost.total_micros for cost in plan.estimate.costs)
    if pending.prepared.caption_only:
        estimate = max(caption_job_plan_of(bot, pending.prepared).estimate_micros.values())
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
            job_plan=caption_job_plan_of(bot, pending.prepared) if pending.prepared.caption_only else None,
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


def caption_job_plan_of(bot: LorabotBot, prepared: Prepared) -> JobPlan:
    from bot.captioning import caption_job_plan_for

    return caption_job_plan_for(bot, prepared)


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
        raise Refused(f"{shown(text, 40)} is not a job id; job ids look like `j42`.")
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
        from bot.trying import cancel_finished

        # A finished job may still have a test window or /try pods up: /cancel stops those.
        stopped = await cancel_finished(bot, job_id, user.name)
        if stopped is not None:
            return stopped
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
        # The job's result: the epoch its owner picked, else the final LoRA.
        with session_scope(bot.runtime.sessions) as s:
            job = get_job(s, job_id)
            result = job_result(job) if job is not None else None
        if result is not None and result.picked:
            key, what = result.key, result.describe()
        else:
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


# -- picking the result ------------------------------------------------------------------------------------------


async def pick_from_discord(bot: LorabotBot, interaction: discord.Interaction[Any], job_id: int, choice: str) -> None:
    """The final message's "Use epoch N" menu (and /pick): refusals are ephemeral; a pick is announced in the thread
    and the final message is redrawn for it."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        text = await pick_job_epoch(bot, job_id, choice, interaction.user)
    except (Refused, PickRefused) as exc:
        await interaction.followup.send(str(exc), ephemeral=True)
        return
    await interaction.followup.send(text, ephemeral=True)


async def pick_job_epoch(bot: LorabotBot, job_id: int, choice: str, user: discord.abc.User) -> str:
    """Make epoch `choice` the job's result; returns the confirmation for the one who picked."""
    if not choice.strip().isdigit() or len(choice.strip()) > 6:
        raise Refused(f"{shown(choice, 20)} is not an epoch number.")
    epoch = int(choice)
    facts = await asyncio.to_thread(job_facts, bot, job_id)
    if owner_or_admin_refusal(facts.user_id, user.id, role_names(user), bot.settings.discord):
        raise Refused(f"Only the person who started `j{job_id}` (or an admin) can pick its result epoch.")
    result = await asyncio.to_thread(_pick, bot, job_id, epoch, user.id)
    bot.notifier.wake()
    return f"Epoch {epoch} is now the result of `j{job_id}` ({result.describe()}); the thread says so."


def _pick(bot: LorabotBot, job_id: int, epoch: int, user_id: int) -> Any:
    """The pick and its announcement in one transaction: the thread hears of every pick, once (blocking)."""
    now = bot.runtime.clock()
    with session_scope(bot.runtime.sessions) as s:
        result = pick_epoch(s, bot.runtime.store, job_id, epoch, user_id=user_id, now=now)
        add_notice(
            s,
            job_id=job_id,
            kind=NoticeKind.PICKED,
            key=f"j{job_id}:pick:{epoch}:{user_id}:{int(now.timestamp() * 1000)}",
            now=now,
            payload={"epoch": epoch, "user_id": user_id},
        )
        return result


__all__ = [
    "PendingPlan",
    "Refused",
    "cancel_job",
    "confirm_plan",
    "lora_link_text",
    "new_token",
    "parse_job",
]
