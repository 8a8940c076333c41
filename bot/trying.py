"""/try and the test window in Discord: the estimate with its buttons, the grid in the thread, the window's line.

lorabot:try:<id>:confirm|cancel     Confirm or drop a /try estimate (the one who asked; the request lives in the DB)
lorabot:job:<id>:window:close       "Close now" on the test window's line (owner or admin)

Both are restart-proof ``DynamicItem``s: the ids are in the custom_id, the state in the DB. The notifier calls
``deliver`` for the TRY_RESULT and TEST_WINDOW notices; the window's line is one message, edited in place.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING, Any

import discord
from sqlalchemy import select

from bot import render
from bot.permissions import owner_or_admin_refusal, role_names
from jobs import ledger
from jobs.contact_sheet import DEFAULT_SIZE_LIMIT
from jobs.states import NoticeKind, TryStatus
from jobs.trying import Tries, TryQuote, spec_from_json, trained_epochs, try_job_of
from jobs.tryplan import TryRefused, cell_key, describe_epochs
from jobs.usertext import shown
from storage.db import session_scope
from storage.models import Dataset, Notice, Pod, TestWindow, TryRequest
from storage.queries import get_job
from storage.tries import window_of_job

if TYPE_CHECKING:
    from bot.client import LorabotBot

log = logging.getLogger(__name__)

CELL_MAX_BYTES = 32 * 1024 * 1024
MAX_GRID_FILES = 10


def _bot(interaction: discord.Interaction[Any]) -> LorabotBot:
    from bot.client import LorabotBot

    client = interaction.client
    assert isinstance(client, LorabotBot)
    return client


def _tries(bot: LorabotBot) -> Tries:
    return bot.runtime.orchestrator.tries


# -- buttons ---------------------------------------------------------------------------------------------------------


class TryButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"lorabot:try:(?P<id>\d+):(?P<action>confirm|cancel)"
):
    def __init__(self, request_id: int, action: str) -> None:
        confirm = action == "confirm"
        super().__init__(
            discord.ui.Button(
                label="Confirm and rent the GPU" if confirm else "Cancel",
                style=discord.ButtonStyle.success if confirm else discord.ButtonStyle.secondary,
                custom_id=f"lorabot:try:{request_id}:{action}",
            )
        )
        self.request_id = request_id
        self.action = action

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> TryButton:
        return cls(int(match["id"]), match["action"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await answer_estimate(_bot(interaction), interaction, self.request_id, self.action == "confirm")


class WindowCloseButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"lorabot:job:(?P<job_id>\d+):window:close"
):
    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Close now", style=discord.ButtonStyle.danger, custom_id=f"lorabot:job:{job_id}:window:close"
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> WindowCloseButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await close_window_from_discord(_bot(interaction), interaction, self.job_id)


TRY_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (TryButton, WindowCloseButton)


def estimate_view(request_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(TryButton(request_id, "confirm"))
    view.add_item(TryButton(request_id, "cancel"))
    return view


def window_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(WindowCloseButton(job_id))
    return view


# -- /try ------------------------------------------------------------------------------------------------------------


def _minutes(seconds: int) -> str:
    return f"{seconds} s" if seconds < 90 else f"{round(seconds / 60)} min"


def estimate_text(public_job: str, quote: TryQuote) -> str:
    spec = quote.spec
    rows = f"{len(spec.prompts)} prompt{'s' if len(spec.prompts) > 1 else ''}"
    parts = []
    if quote.startup_s:
        parts.append(f"GPU start-up ~{_minutes(quote.startup_s)}")
    parts.append(f"generation ~{_minutes(quote.generation_s)}")
    if quote.linger_s:
        parts.append(f"up to {_minutes(quote.linger_s)} kept for your next /try on `{public_job}`")
    where = (
        f"on the GPU pod already serving `{public_job}` ({quote.gpu}, {ledger.format_usd(quote.price_micros_per_hr)}/h)"
        if quote.warm
        else f"on a new {quote.gpu} pod over the job's volume ({ledger.format_usd(quote.price_micros_per_hr)}/h)"
    )
    lines = [
        f"**/try on `{public_job}`** (`{quote.public_id}`): {rows} × epoch{'s' if len(spec.epochs) > 1 else ''} "
        f"{describe_epochs(spec.epochs)} = {spec.cells} image{'s' if spec.cells > 1 else ''}",
        f"Estimate: about **{ledger.format_usd(quote.estimate_micros)}**: " + " + ".join(parts) + f", {where}.",
        f"Seed {spec.seed} · {spec.steps} steps · strength {spec.strength:g}"
        + (f" · negative: {shown(spec.negative, 80)}" if spec.negative else "")
        + (" · with the closest training image" if spec.compare else ""),
        f"-# Generation time: {quote.source}",
        "Nothing is rented until you confirm.",
    ]
    return render.truncate("\n".join(lines), render.CONTENT_MAX)


async def offer_try(bot: LorabotBot, interaction: discord.Interaction[Any], job_id: int, **options: Any) -> None:
    """The /try command after its deferral: refusals (nothing rented) or the estimate with Confirm/Cancel."""
    user = interaction.user
    with session_scope(bot.runtime.sessions) as s:
        job = get_job(s, job_id)
        owner = job.user_id if job is not None else None
    if owner is None:
        await interaction.followup.send(f"there is no job `j{job_id}`.", ephemeral=True)
        return
    if owner_or_admin_refusal(owner, user.id, role_names(user), bot.settings.discord):
        await interaction.followup.send(
            f"Only the person who started `j{job_id}` (or an admin) can /try it: the GPU time is billed to that job. "
            "Nothing was rented.",
            ephemeral=True,
        )
        return
    try:
        quote = await _tries(bot).quote(job_id, user_id=user.id, **options)
    except TryRefused as exc:
        await interaction.followup.send(render.truncate(exc.message, render.CONTENT_MAX), ephemeral=True)
        return
    await interaction.followup.send(
        estimate_text(f"j{job_id}", quote), view=estimate_view(quote.request_id), ephemeral=True
    )


async def answer_estimate(
    bot: LorabotBot, interaction: discord.Interaction[Any], request_id: int, confirm: bool
) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    tries = _tries(bot)
    try:
        if confirm:
            row = await asyncio.to_thread(tries.confirm, request_id, user_id=interaction.user.id)
            text = (
                f"`{row.public_id}` confirmed: the images come to `j{row.job_id}`'s thread "
                f"(estimate {ledger.format_usd(row.estimate_micros)})."
            )
            bot.runtime_kick()
        else:
            await asyncio.to_thread(tries.dismiss, request_id, user_id=interaction.user.id)
            text = f"`t{request_id}` dropped; nothing was rented."
    except TryRefused as exc:
        text = exc.message
    await interaction.followup.send(text, ephemeral=True)


async def close_window_from_discord(bot: LorabotBot, interaction: discord.Interaction[Any], job_id: int) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    user = interaction.user
    with session_scope(bot.runtime.sessions) as s:
        job = get_job(s, job_id)
        owner = job.user_id if job is not None else None
    if owner is None or owner_or_admin_refusal(owner, user.id, role_names(user), bot.settings.discord):
        await interaction.followup.send(
            f"Only the person who started `j{job_id}` (or an admin) can close its test window.", ephemeral=True
        )
        return
    orchestrator = bot.runtime.orchestrator
    async with orchestrator._lock:  # never beside a tick that is giving the same pod a request
        window = await _tries(bot).close_window(job_id, by=f"button by <@{user.id}>")
    bot.notifier.wake()
    if window is None:
        await interaction.followup.send(f"`j{job_id}` has no open test window.", ephemeral=True)
        return
    await interaction.followup.send(f"Closing `j{job_id}`'s test window: its GPU pod is terminated.", ephemeral=True)


async def cancel_finished(bot: LorabotBot, job_id: int, by: str) -> str | None:
    """/cancel on a finished job with an open window or /try: stop them (None when there is nothing to stop)."""
    tries = _tries(bot)
    if not await asyncio.to_thread(tries.has_something_to_cancel, job_id):
        return None
    async with bot.runtime.orchestrator._lock:
        stopped = await tries.cancel(job_id, by=by)
    bot.notifier.wake()
    return (
        f"`j{job_id}` has finished training; its test window and /try requests are stopped "
        f"({stopped} GPU pod{'s' if stopped != 1 else ''} terminated)."
    )


# -- the notices -----------------------------------------------------------------------------------------------------


async def deliver(
    bot: LorabotBot,
    notice_id: int,
    kind: NoticeKind,
    job_id: int,
    payload: dict[str, Any],
    thread: Any,
    size_limit: int,
) -> int | None:
    if kind is NoticeKind.TEST_WINDOW:
        return await _deliver_window(bot, notice_id, job_id, payload, thread)
    return await _deliver_result(bot, notice_id, job_id, payload, thread, size_limit)


def _window_state(bot: LorabotBot, job_id: int) -> tuple[TestWindow, int] | None:
    now = bot.runtime.clock()
    with session_scope(bot.runtime.sessions) as s:
        window = window_of_job(s, job_id)
        if window is None:
            return None
        if window.cost_micros is not None:
            cost = window.cost_micros
        else:
            pod = s.get(Pod, window.pod_id) if window.pod_id is not None else None
            parts = ledger.pod_parts(pod, now, window.opened_at) if pod is not None else []
            cost = sum(p.charge.total_micros for p in parts if p.kind.value == "try_gpu")
        s.expunge(window)
        return window, cost


def window_text(public_job: str, window: TestWindow, cost: int) -> str:
    if window.closed_at is None:
        return (
            f"🧪 Test window open until {window.until_at:%H:%M} UTC ({render.timestamp(window.until_at, 't')}), "
            f"{ledger.format_usd(cost)} so far: `/try job:{public_job}` answers in seconds on the warm GPU pod."
        )
    return (
        f"🧪 Test window closed at {window.closed_at:%H:%M} UTC ({window.closed_by}); it cost "
        f"{ledger.format_usd(cost)}, on the job's try line in /cost. Its GPU pod is gone."
    )


async def _deliver_window(
    bot: LorabotBot, notice_id: int, job_id: int, payload: dict[str, Any], thread: Any
) -> int | None:
    state = await asyncio.to_thread(_window_state, bot, job_id)
    if state is None:
        return None
    window, cost = state
    closed = window.closed_at is not None
    if payload.get("state") == "open" and closed:
        return None  # an old refresh after the close: the closed line is drawn by its own notice
    text = window_text(f"j{job_id}", window, cost)
    view = None if closed else window_view(job_id)
    if window.message_id is not None:
        try:
            await thread.get_partial_message(window.message_id).edit(content=text, view=view)
            if not closed:
                return window.message_id
        except discord.NotFound:
            log.info("j%s: the test window's message is gone; posting it again", job_id)
            window.message_id = None
    if closed:
        # The final line: posted (so the thread hears of it), the open line above already edited to match.
        message = await thread.send(content=text, nonce=f"lbn{notice_id}")
        return int(message.id)
    message = await thread.send(content=text, view=view or discord.utils.MISSING, nonce=f"lbn{notice_id}")
    await asyncio.to_thread(_save_window_message, bot, job_id, message.id)
    return int(message.id)


def _save_window_message(bot: LorabotBot, job_id: int, message_id: int) -> None:
    with session_scope(bot.runtime.sessions) as s:
        window = window_of_job(s, job_id)
        if window is not None:
            window.message_id = message_id


def _result_parts(bot: LorabotBot, request_id: int) -> dict[str, Any] | None:
    with session_scope(bot.runtime.sessions) as s:
        row = s.get(TryRequest, request_id)
        if row is None:
            return None
        job = get_job(s, row.job_id)
        assert job is not None
        refs = trained_epochs(s, row.job_id)
        captioned = s.execute(
            select(Notice.payload_json).where(Notice.job_id == row.job_id, Notice.kind == NoticeKind.CAPTIONS)
        ).scalar_one_or_none()
        dataset_sha = str((captioned or {}).get("sha256") or job.dataset_sha256)
        dataset = s.get(Dataset, dataset_sha) or s.get(Dataset, job.dataset_sha256)
        return {
            "status": row.status,
            "public_id": row.public_id,
            "user_id": row.user_id,
            "error": row.error,
            "result": dict(row.result_json or {}),
            "spec": spec_from_json(row.spec_json),
            "try_job": try_job_of(job, sorted(refs)),
            "job_public": job.public_id,
            "dataset_key": dataset.store_key if dataset is not None else None,
            "cost": ledger.job_cost(s, row.job_id, now=bot.runtime.clock()).try_micros,
        }


async def _deliver_result(
    bot: LorabotBot, notice_id: int, job_id: int, payload: dict[str, Any], thread: Any, size_limit: int
) -> int | None:
    parts = await asyncio.to_thread(_result_parts, bot, int(payload.get("request_id") or 0))
    if parts is None:
        return None
    status: TryStatus = parts["status"]
    who = f"<@{parts['user_id']}>"
    head = f"**/try `{parts['public_id']}`** on `{parts['job_public']}` by {who}"
    if status is not TryStatus.DONE:
        verb = "was cancelled" if status is TryStatus.CANCELLED else "failed"
        text = f"{head} {verb}: {shown(parts['error'] or 'no reason given', 600)}. Try line so far: " + (
            ledger.format_usd(parts["cost"])
        )
        message = await thread.send(
            content=render.truncate(text, render.CONTENT_MAX),
            nonce=f"lbn{notice_id}",
            allowed_mentions=discord.AllowedMentions.none(),
        )
        return int(message.id)
    spec = parts["spec"]
    try:
        images, settings = await asyncio.to_thread(_render_grid, bot, parts, size_limit)
    except (OSError, ValueError) as exc:
        # A cell the bucket no longer has, an image Pillow cannot read: say so rather than hold the thread's
        # later notices behind a grid that can never be drawn.
        log.warning("j%s: the grid of %s could not be drawn: %s", job_id, parts["public_id"], exc)
        images, settings = [], f"The grid could not be drawn ({type(exc).__name__}); the images are in the bucket."
    seconds = float(parts["result"].get("seconds") or 0)
    text = (
        f"{head}: {len(spec.prompts)} prompt{'s' if len(spec.prompts) > 1 else ''} × epochs "
        f"{describe_epochs(spec.epochs)} ({spec.cells} images in {seconds:.0f} s)\n{settings}\n"
        f"-# Try line of `{parts['job_public']}` so far: {ledger.format_usd(parts['cost'])} (/cost)"
    )
    message = await thread.send(
        content=render.truncate(text, render.CONTENT_MAX),
        files=[discord.File(io.BytesIO(data), filename=name) for name, data in images[:MAX_GRID_FILES]],
        nonce=f"lbn{notice_id}",
        allowed_mentions=discord.AllowedMentions.none(),
    )
    return int(message.id)


def _render_grid(bot: LorabotBot, parts: dict[str, Any], size_limit: int) -> tuple[list[tuple[str, bytes]], str]:
    """The grid images (jobs/try_grid.py) from the cells in the bucket, and the settings line under them."""
    from jobs.try_grid import render_try_grid, settings_line

    store = bot.runtime.store
    spec, try_job = parts["spec"], parts["try_job"]
    job_public, tid = parts["job_public"], parts["public_id"]

    def load(epoch: int, prompt: int) -> bytes | None:
        return store.get_bytes(cell_key(job_public, tid, epoch, prompt), CELL_MAX_BYTES)

    sources = None
    if spec.compare and parts["dataset_key"]:
        sources = _sources(bot, parts["dataset_key"], spec.prompts, try_job)
    grids = render_try_grid(try_job, spec, load, sources=sources, size_limit=size_limit or DEFAULT_SIZE_LIMIT)
    return [(grid.filename, grid.data) for grid in grids], settings_line(try_job, spec)


def _sources(bot: LorabotBot, dataset_key: str, prompts: Any, try_job: Any) -> Any:
    import tempfile
    from pathlib import Path

    from jobs.compare import best_sources

    with tempfile.TemporaryDirectory(prefix="lorabot-compare-") as folder:
        path = Path(folder) / "dataset.zip"
        bot.runtime.store.download(dataset_key, path)
        return best_sources(path, prompts, ignore=[t for t in (try_job.trigger, try_job.class_word) if t])


__all__ = ["TRY_ITEMS", "deliver", "offer_try", "window_text"]
