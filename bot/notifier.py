"""The outbox worker: every pending notice to its job's thread, in order, at most once, whatever Discord does.

- A notice is marked sent (with the Discord message id) only after Discord accepted it; a failure is recorded with
  `mark_notice_failed` and a growing back-off, and the notice waits (so do the younger notices of its job).
- "At most once" across a crash between "Discord accepted" and "we wrote it down": every message carries the
  nonce `lbn<notice id>` with `enforce_nonce` (discord.py sets it), so Discord answers a resend with the message
  it already has instead of posting it twice.
- The thread is created on demand, so a job whose bot died before making its thread still gets one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import discord

from bot import captioning, render, results
from bot.views import job_view
from jobs.config import redact
from jobs.contact_sheet import DEFAULT_SIZE_LIMIT
from jobs.gallery_fit import fit_gallery
from jobs.states import NoticeKind
from storage.db import session_scope
from storage.models import Job
from storage.queries import get_job, pending_notices
from storage.transitions import mark_notice_failed, mark_notice_sent

if TYPE_CHECKING:
    from bot.client import LorabotBot

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 600.0
SAMPLE_MAX_BYTES = 8 * 1024 * 1024
MAX_FILES = 10
# How long an epoch's gallery waits for samples still being uploaded before it is sent with what is there.
SAMPLE_GRACE_S = 20.0


def backoff_seconds(attempts: int) -> float:
    """2, 4, 8 … seconds, capped at ten minutes."""
    return min(2.0 ** max(attempts, 1), MAX_BACKOFF_S)


def nonce_for(notice_id: int) -> str:
    return f"lbn{notice_id}"  # ≤ 25 characters, as Discord requires


def thread_prefix(job_id: int) -> str:
    """How every job thread's name starts: the job id, so a thread can be found again by it."""
    return f"j{job_id} · "


@dataclass
class Outgoing:
    content: str | None = None
    embeds: list[discord.Embed] = field(default_factory=list)
    files: list[discord.File] = field(default_factory=list)
    view: discord.ui.View | None = None
    allowed_mentions: discord.AllowedMentions | None = None


@dataclass
class _Pending:
    id: int
    job_id: int | None
    kind: NoticeKind
    payload: dict[str, Any]
    attempts: int


class Notifier:
    def __init__(self, bot: LorabotBot, *, poll_s: float = 2.0, clock: Callable[[], dt.datetime]) -> None:
        self.bot = bot
        self.poll_s = poll_s
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._thread_locks: dict[int, asyncio.Lock] = {}
        self._first_seen: dict[int, float] = {}
        self.sent = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="lorabot-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            # The flag as well as the cancel: Python 3.11's wait_for drops a cancel that lands in the same step as
            # the wake it waits for (gh-86296); the loop then would run forever and the bot would never close.
            self._stopping = True
            self._wake.set()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:  # the worker must outlive any one bad notice or DB hiccup
                log.exception("notifier pass failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()

    async def drain(self) -> int:
        """Send every due notice once; returns how many were sent. Stops a job's queue at its first failure.
        Only the process holding the orchestrator lease sends: a standby bot on the same database sends nothing."""
        orchestrator = self.bot.runtime.orchestrator
        if not orchestrator.is_leader():
            return 0
        with session_scope(self.bot.runtime.sessions) as s:
            due = [
                _Pending(n.id, n.job_id, n.kind, dict(n.payload_json or {}), n.attempts)
                for n in pending_notices(s, now=self.clock())
            ]
        blocked: set[int | None] = set()
        sent = 0
        for notice in due:
            if not orchestrator.is_leader():
                break  # the lease ran out mid-pass: the new leader sends the rest
            if notice.job_id in blocked:
                continue
            if await asyncio.to_thread(self._samples_pending, notice):
                blocked.add(notice.job_id)  # keep the thread in order: later notices wait too
                continue
            if await self._send_one(notice):
                sent += 1
            elif notice.job_id is not None:
                blocked.add(notice.job_id)
        self.sent += sent
        return sent

    async def _send_one(self, notice: _Pending) -> bool:
        secrets = self.bot.runtime.settings.secret_values()
        try:
            message_id = await self._deliver(notice)
        except (discord.HTTPException, OSError, TimeoutError) as exc:
            status = getattr(exc, "status", None)
            text = redact(f"{type(exc).__name__} {status or ''}: {exc}", secrets)
            retry_at = self.clock() + dt.timedelta(seconds=backoff_seconds(notice.attempts + 1))
            with session_scope(self.bot.runtime.sessions) as s:
                mark_notice_failed(s, notice.id, error=text, retry_at=retry_at)
            log.warning("notice %s not sent, retry at %s: %s", notice.id, retry_at.isoformat(), text)
            return False
        with session_scope(self.bot.runtime.sessions) as s:
            mark_notice_sent(s, notice.id, discord_message_id=message_id, now=self.clock())
            results.queue_sheet_refresh(s, notice.job_id, notice.kind, notice.payload, now=self.clock())
        return True

    async def _deliver(self, notice: _Pending) -> int | None:
        if notice.job_id is None:
            # Notices about no job (the reaper's reports) have no thread; the log is where operators look.
            log.warning("notice: %s", notice.payload.get("text") or notice.payload)
            return None
        thread = await self.ensure_thread(notice.job_id)
        if thread is None:
            log.warning("job j%s has no channel to post in; notice %s dropped", notice.job_id, notice.id)
            return None
        if notice.kind is NoticeKind.CONTACT_SHEET:
            return await results.refresh_sheets(self.bot, notice.id, notice.job_id, thread)
        if notice.kind in (NoticeKind.TRY_RESULT, NoticeKind.TEST_WINDOW):
            # /try's grid, and the test window's line (edited in place): bot/trying.py.
            from bot import trying

            limit = results.attachment_limit(self.bot, thread)
            return await trying.deliver(self.bot, notice.id, notice.kind, notice.job_id, notice.payload, thread, limit)
        if notice.kind is NoticeKind.PICKED:
            # The summary first (an edit, safe to repeat), then the line that says who picked what.
            await results.refresh_final_message(self.bot, notice.job_id, thread)
        outgoing = await self.render(notice, size_limit=results.attachment_limit(self.bot, thread))
        message = await thread.send(
            content=outgoing.content,
            embeds=outgoing.embeds,
            files=outgoing.files,
            view=outgoing.view or discord.utils.MISSING,
            nonce=nonce_for(notice.id),
            allowed_mentions=outgoing.allowed_mentions or discord.utils.MISSING,
        )
        return message.id

    async def ensure_thread(self, job_id: int) -> discord.abc.Messageable | None:
        """The job's thread, created in the job's channel on first use (one per job, even when called at once)."""
        lock = self._thread_locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            with session_scope(self.bot.runtime.sessions) as s:
                job = get_job(s, job_id)
                if job is None:
                    return None
                thread_id, channel_id, name, user_id = job.thread_id, job.channel_id, job.name, job.user_id
            if thread_id is not None:
                channel = self.bot.get_channel(thread_id) or await self.bot.fetch_channel(thread_id)
                assert isinstance(channel, discord.abc.Messageable)
                return channel
            if channel_id is None:
                return None
            parent = self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)
            if not isinstance(parent, discord.TextChannel):
                return None
            thread = await self._thread_made_before(parent, job_id)
            if thread is None:
                thread = await parent.create_thread(
                    name=render.truncate(f"{thread_prefix(job_id)}{name}", 100),
                    type=discord.ChannelType.public_thread,
                    auto_archive_duration=1440,
                )
            with session_scope(self.bot.runtime.sessions) as s:
                row = s.get(Job, job_id)
                if row is not None:
                    row.thread_id = thread.id
            try:
                await thread.add_user(discord.Object(id=user_id))
            except discord.HTTPException:
                log.info("could not add the owner of j%s to its thread", job_id)
            return thread

    async def _thread_made_before(self, parent: discord.TextChannel, job_id: int) -> discord.Thread | None:
        """A thread this bot made for the job in a run that died before saving its id (so a restart makes no twin).

        Only the bot's own active threads count: anyone may name a thread "j5 · …".
        """
        me = self.bot.user.id if self.bot.user is not None else None
        if me is None:
            return None
        prefix = thread_prefix(job_id)
        for thread in await parent.guild.active_threads():
            if thread.parent_id == parent.id and thread.owner_id == me and thread.name.startswith(prefix):
                log.info("j%s: found its thread %s from an earlier run", job_id, thread.id)
                return thread
        return None

    async def render(self, notice: _Pending, *, size_limit: int = DEFAULT_SIZE_LIMIT) -> Outgoing:
        """The message for a notice; an epoch's samples are fitted to ``size_limit`` (the server's upload limit)."""
        assert notice.job_id is not None
        job_id, payload = notice.job_id, notice.payload
        public_id = f"j{job_id}"
        if notice.kind is NoticeKind.PLAN:
            return Outgoing(
                content=f"<@{payload.get('user_id')}> queued `{public_id}`." if payload.get("user_id") else None,
                embeds=render.plan_embeds_from_summary(payload),
                view=job_view(job_id, epochs=()),
            )
        if notice.kind is NoticeKind.EPOCH:
            keys = await asyncio.to_thread(self._sample_keys, job_id, payload)
            epoch = int(payload.get("epoch") or 0)
            samples = await self._samples(keys, epoch)
            fitted = await asyncio.to_thread(fit_gallery, samples, size_limit)
            embed = render.epoch_embed(public_id, payload, now=self.clock())
            note = fitted.note(size_limit)
            if note is not None:
                embed.add_field(name="Samples", value=note, inline=False)
            return Outgoing(
                embeds=[embed],
                files=[discord.File(io.BytesIO(data), filename=name) for name, data in fitted.files],
                view=job_view(job_id, epochs=(int(payload.get("epoch") or 0),), cancel=True),
            )
        if notice.kind is NoticeKind.SUCCEEDED and payload.get("caption_only"):
            return Outgoing(
                content=f"<@{await self._owner(job_id)}> your captions are ready.",
                embeds=[captioning.captioned_embed(public_id, payload)],
                view=captioning.edit_view(payload.get("sha256")),
            )
        if notice.kind is NoticeKind.SUCCEEDED:
            embeds, view = await results.final_message(self.bot, job_id, payload)
            return Outgoing(content=f"<@{await self._owner(job_id)}> your LoRA is ready.", embeds=embeds, view=view)
        if notice.kind is NoticeKind.PICKED:
            return Outgoing(
                content=render.picked_text(public_id, int(payload.get("epoch") or 0), int(payload.get("user_id") or 0)),
                allowed_mentions=discord.AllowedMentions.none(),  # names the picker without pinging anyone
            )
        if notice.kind is NoticeKind.FAILED:
            return Outgoing(embeds=[render.failed_embed(public_id, payload)])
        if notice.kind is NoticeKind.CANCELLED:
            return Outgoing(embeds=[render.cancelled_embed(public_id, payload)])
        if notice.kind is NoticeKind.CAPTIONS:
            return Outgoing(
                embeds=[render.captions_embed(public_id, payload)], view=captioning.edit_view(payload.get("sha256"))
            )
        return Outgoing(content=render.info_text(public_id, notice.kind.value, payload))

    async def _owner(self, job_id: int) -> int:
        with session_scope(self.bot.runtime.sessions) as s:
            job = get_job(s, job_id)
            return job.user_id if job is not None else 0

    def _sample_keys(self, job_id: int, payload: dict[str, Any]) -> list[str]:
        """The epoch's samples: the notice names them, but an epoch can be announced as soon as its checkpoint is
        stored, before its samples are; the store's listing of the epoch folder is the truth."""
        named = [str(k) for k in payload.get("samples") or []]
        epoch = int(payload.get("epoch") or 0)
        prefix = f"jobs/j{job_id}/epochs/{epoch:06d}/sample-"
        listed = [info.key for info in self.bot.runtime.store.list(prefix)]
        return sorted(set(named) | set(listed))

    def _samples_pending(self, notice: _Pending) -> bool:
        """True while an epoch notice's samples are still arriving (the plan says how many), for a short grace."""
        if notice.kind is not NoticeKind.EPOCH or notice.job_id is None:
            return False
        first_seen = self._first_seen.setdefault(notice.id, time.monotonic())
        if time.monotonic() - first_seen > SAMPLE_GRACE_S:
            return False
        with session_scope(self.bot.runtime.sessions) as s:
            job = get_job(s, notice.job_id)
            expected = int((job.plan_json or {}).get("sample_prompts") or 0) if job is not None else 0
        expected -= int(notice.payload.get("samples_lost") or 0)  # never drawn: nothing to wait for
        return len(self._sample_keys(notice.job_id, notice.payload)) < expected

    async def _samples(self, keys: Sequence[str], epoch: int) -> list[tuple[str, bytes]]:
        """(name without extension, bytes) of the epoch's samples, at most a message's worth."""
        samples = []
        for index, key in enumerate(keys[:MAX_FILES]):
            data = await asyncio.to_thread(self.bot.runtime.store.get_bytes, key, SAMPLE_MAX_BYTES)
            if data is None:
                continue
            samples.append((f"epoch{epoch:02d}-sample{index:02d}", data))
        return samples


__all__ = ["Notifier", "backoff_seconds", "nonce_for"]
