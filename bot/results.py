"""What the thread shows about a job's result: its contact sheets and its final message (following the pick).

The notifier calls these while delivering notices, so both stay restart-proof: the sheets' message ids and the
pick are in the DB, and every Discord call here is an edit that is safe to repeat or a send recorded at once.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import render
from bot.views import job_view
from jobs.contact_sheet import DEFAULT_SIZE_LIMIT, SheetJob, SheetTooLarge, render_sheets
from jobs.manifest import JobKeys
from jobs.pick import JobResult, job_result
from jobs.states import NoticeKind
from jobs.usertext import drawn
from storage.db import session_scope
from storage.models import Job, Notice
from storage.queries import get_job
from storage.transitions import add_notice

if TYPE_CHECKING:
    from bot.client import LorabotBot

log = logging.getLogger(__name__)

# A sample bigger than this is not a sample sd-scripts drew (a 2048² PNG is about 12 MB at worst).
SAMPLE_MAX_BYTES = 16 * 1024 * 1024


def queue_sheet_refresh(
    session: Session, job_id: int | None, kind: NoticeKind, payload: dict[str, Any], *, now: Any
) -> None:
    """After an epoch's gallery (or the final message) is out, the contact sheets follow. Called in the transaction
    that records the send, so a crash in between cannot lose the refresh."""
    if job_id is None or kind not in (NoticeKind.EPOCH, NoticeKind.SUCCEEDED):
        return
    job = get_job(session, job_id)
    if job is None or not int((job.plan_json or {}).get("sample_prompts") or 0):
        return
    step = f"e{int(payload.get('epoch') or 0)}" if kind is NoticeKind.EPOCH else "final"
    add_notice(
        session,
        job_id=job_id,
        kind=NoticeKind.CONTACT_SHEET,
        key=f"j{job_id}:sheet:{step}",
        now=now,
        payload={"after": kind.value, "epoch": payload.get("epoch")},
    )


# -- the final message -------------------------------------------------------------------------------------------


def result_of(bot: LorabotBot, job_id: int) -> JobResult:
    """Blocking."""
    with session_scope(bot.runtime.sessions) as s:
        job = get_job(s, job_id)
        assert job is not None
        return job_result(job)


async def final_message(
    bot: LorabotBot, job_id: int, payload: dict[str, Any]
) -> tuple[list[discord.Embed], discord.ui.View | None]:
    """The summary as the job's result stands now: the final LoRA, or the epoch its owner picked."""
    result = await asyncio.to_thread(result_of, bot, job_id)
    link = await asyncio.to_thread(bot.runtime.store.public_link, result.key)
    epochs = [int(e["epoch"]) for e in payload.get("epochs") or [] if e.get("epoch")]
    embed = render.succeeded_embed(f"j{job_id}", payload, final_url=link, epoch_count=len(epochs), result=result)
    return [embed], job_view(job_id, epochs=tuple(epochs), cancel=False, pick=True, picked=result.epoch)


def _final_notice(bot: LorabotBot, job_id: int) -> tuple[dict[str, Any], int] | None:
    with session_scope(bot.runtime.sessions) as s:
        row = s.execute(
            select(Notice.payload_json, Notice.discord_message_id).where(
                Notice.job_id == job_id, Notice.kind == NoticeKind.SUCCEEDED, Notice.sent_at.is_not(None)
            )
        ).first()
    if row is None or row[1] is None:
        return None
    return dict(row[0] or {}), int(row[1])


async def refresh_final_message(bot: LorabotBot, job_id: int, thread: discord.abc.Messageable) -> None:
    """Redraw the job's final message for its current result (an edit: safe to repeat)."""
    found = await asyncio.to_thread(_final_notice, bot, job_id)
    if found is None or not isinstance(thread, discord.Thread | discord.TextChannel):
        return
    payload, message_id = found
    embeds, view = await final_message(bot, job_id, payload)
    try:
        await thread.get_partial_message(message_id).edit(embeds=embeds, view=view)
    except discord.NotFound:
        log.info("j%s: its final message is gone; the pick is announced without it", job_id)


# -- contact sheets ------------------------------------------------------------------------------------------------


def attachment_limit(bot: LorabotBot, thread: discord.abc.Messageable) -> int:
    """The guild's upload limit as its interactions last reported it, else discord.py's idea of it, else 10 MiB."""
    guild = getattr(thread, "guild", None)
    if guild is None:
        return DEFAULT_SIZE_LIMIT
    reported = bot.attachment_limits.get(guild.id)
    return int(reported or guild.filesize_limit or DEFAULT_SIZE_LIMIT)


def _newer_refresh_waiting(bot: LorabotBot, job_id: int, notice_id: int) -> bool:
    """A refresh redraws every epoch there is: an older one has nothing to add when a newer one is queued."""
    with session_scope(bot.runtime.sessions) as s:
        newer = s.execute(
            select(Notice.id).where(
                Notice.job_id == job_id,
                Notice.kind == NoticeKind.CONTACT_SHEET,
                Notice.sent_at.is_(None),
                Notice.id > notice_id,
            )
        ).first()
    return newer is not None


async def refresh_sheets(bot: LorabotBot, notice_id: int, job_id: int, thread: discord.abc.Messageable) -> int | None:
    """Draw the job's sheets from what the store holds, edit the sheet messages and post the ones not there yet.

    Each new message id is saved the moment Discord returns it, so a restart edits instead of posting twice.
    Returns the first sheet's message id."""
    if await asyncio.to_thread(_newer_refresh_waiting, bot, job_id, notice_id):
        return None
    found = await asyncio.to_thread(sheet_job_of, bot, job_id)
    if found is None or not isinstance(thread, discord.Thread | discord.TextChannel):
        return None
    sheet_job, message_ids = found
    limit = attachment_limit(bot, thread)
    try:
        sheets = await asyncio.to_thread(render_sheets, sheet_job, sample_loader(bot, job_id), size_limit=limit)
    except SheetTooLarge as exc:
        log.warning("j%s: no contact sheet: %s", job_id, exc)
        return None
    for index, sheet in enumerate(sheets):
        content = render.contact_sheet_text(f"j{job_id}", sheet.layout.number, sheet.layout.count, sheet_job.seed)
        if index < len(message_ids):
            try:
                file = discord.File(io.BytesIO(sheet.data), filename=sheet.filename)
                await thread.get_partial_message(message_ids[index]).edit(content=content, attachments=[file])
                continue
            except discord.NotFound:  # someone deleted it: post it again
                pass
        file = discord.File(io.BytesIO(sheet.data), filename=sheet.filename)
        message = await thread.send(content=content, file=file, nonce=f"lbs{notice_id}p{index}")
        message_ids = [*message_ids[:index], message.id, *message_ids[index + 1 :]]
        await asyncio.to_thread(_save_sheet_ids, bot, job_id, message_ids)
    return message_ids[0] if message_ids else None


def sheet_job_of(bot: LorabotBot, job_id: int) -> tuple[SheetJob, list[int]] | None:
    """What the job's sheets show (prompts from its spec, epochs from the store's listing), and the messages
    already holding them; None when there is nothing to draw yet. Blocking."""
    with session_scope(bot.runtime.sessions) as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        spec, plan = dict(job.spec_json or {}), dict(job.plan_json or {})
        message_ids = [int(m) for m in job.contact_sheet_message_ids or []]
        name = job.name
    prompts = tuple(str(p) for p in spec.get("sample_prompts") or [])
    epochs = int(plan.get("epochs") or 0)
    every = max(int(spec.get("sample_every_n_epochs") or 1), 1)
    prefix = f"jobs/j{job_id}/epochs/"
    present = sorted(
        {
            int(info.key[len(prefix) :].split("/", 1)[0])
            for info in bot.runtime.store.list(prefix)
            if "/sample-" in info.key
        }
    )
    if not prompts or not present:
        return None
    planned = tuple(sorted(set(range(every, epochs + 1, every)) | set(present)))
    sheet_job = SheetJob(
        title=f"j{job_id} · {drawn(name, 40)}",
        prompts=prompts,
        planned_epochs=planned,
        epochs=tuple(present),
        seed=int(spec["seed"]) if spec.get("seed") is not None else None,
        source_px=int(spec.get("resolution") or 1024),
    )
    return sheet_job, message_ids


def sample_loader(bot: LorabotBot, job_id: int) -> Callable[[int, int], bytes | None]:
    store = bot.runtime.store
    keys = JobKeys(f"j{job_id}", "")

    def load(epoch: int, row: int) -> bytes | None:
        return store.get_bytes(keys.sample(epoch, row), SAMPLE_MAX_BYTES)

    return load


def _save_sheet_ids(bot: LorabotBot, job_id: int, message_ids: list[int]) -> None:
    with session_scope(bot.runtime.sessions) as s:
        row = s.get(Job, job_id)
        if row is not None:
            row.contact_sheet_message_ids = list(message_ids)


__all__ = ["attachment_limit", "final_message", "queue_sheet_refresh", "refresh_final_message", "refresh_sheets"]
