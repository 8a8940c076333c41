"""/caption's plan and answer, and the caption editor's links in Discord (bot side of jobs/caption_job.py).

A /caption plan is a training plan's dataset and tagger settings priced as a CPU stage alone; confirming it queues
a caption-only job (bot.actions.confirm_plan, as for /train). Its answer is the thread's CAPTIONS notice (tag
frequencies, examples, the captioned zip) and the final message, both with an "Edit captions" button that hands the
dataset's owner a one-time editor link (ephemeral: the link is theirs alone).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from jobs.caption_job import CaptionJobEstimate, NothingToTag, caption_job_plan, estimate_caption_job
from jobs.captions import TAG_SECONDS_PER_IMAGE, WD14_REPO
from jobs.cloud import CloudError
from jobs.queue import JobPlan, job_plan_of
from storage.db import session_scope
from storage.queries import get_dataset

if TYPE_CHECKING:
    from bot.client import LorabotBot
    from bot.ingest import Prepared

log = logging.getLogger(__name__)

NO_EDITOR = (
    "The caption editor is off: it needs `LORABOT_PUBLIC_URL` (the https address where this bot's web server is "
    "reachable). The captioned zip's link works meanwhile."
)


def caption_estimate(bot: LorabotBot, prepared: Prepared) -> CaptionJobEstimate:
    """The CPU stage of a /caption job for this dataset (NothingToTag when it has nothing to tag)."""
    captions = prepared.plan.captions
    if captions is None:
        raise NothingToTag("this dataset has no images to tag")
    table = bot.runtime.planner.prices.get_table()
    return estimate_caption_job(
        captions, dataset_bytes=prepared.dataset_size, prices=table, env_ready=prepared.env_ready
    )


async def volume_holds_env(bot: LorabotBot, prepared: Prepared) -> bool:
    """Whether the volume a /caption job would run on now already holds the environment: the orchestrator's volume
    cache, at the data center the job would be placed in (as /train's placement preview). When RunPod's catalog
    cannot be read, the estimate counts the build (the higher figure)."""
    plan = dataclasses.replace(job_plan_of(prepared.plan), caption_only=True)
    try:
        return await bot.runtime.orchestrator.env_ready_where_placed(plan)
    except CloudError as exc:
        log.warning("volume cache unavailable for the /caption estimate, counting the environment build: %s", exc)
        return False


def caption_job_plan_for(bot: LorabotBot, prepared: Prepared) -> JobPlan:
    return caption_job_plan(job_plan_of(prepared.plan), caption_estimate(bot, prepared))


def caption_plan_summary(bot: LorabotBot, prepared: Prepared, name: str) -> dict[str, Any]:
    """The /caption plan message (and the thread's PLAN notice): what is tagged, the CPU stage and its cost."""
    plan, estimate = prepared.plan, caption_estimate(bot, prepared)
    spec, captions = plan.spec, plan.captions
    assert captions is not None
    lines = [
        f"**Captions only**: {estimate.to_tag} of {captions.image_count} image(s) tagged by sd-scripts' WD14 tagger"
        f" ({WD14_REPO}) on a CPU pod. No GPU is rented.",
        f"Mode {captions.mode} · captions become `{spec.trigger}, {spec.class_word}, tags`; tags every image shares"
        " and the preset's undesired tags are removed",
        f"CPU stage about {render.duration(estimate.cpu_stage_s)}: pod start, "
        + (
            "environment already on the volume"
            if prepared.env_ready
            else f"environment build {render.duration(estimate.env_build_s)} (the volume does not hold it yet)"
        )
        + f", dataset {render.duration(estimate.dataset_s)}, tagging {render.duration(estimate.tagging_s)}"
        f" (~{TAG_SECONDS_PER_IMAGE} s per image, an estimate, not a measurement)",
        f"CPU pod {render.usd(estimate.cpu_hourly_micros)}/h · volume share {estimate.volume_gb} GB",
        "The thread then shows the tag frequencies, examples, the captioned zip and an Edit captions button;"
        " `/train dataset_from:sha256:<its hash>` trains on it without tagging again.",
    ]
    if bot.runtime.sandbox:
        lines.append("**Sandbox**: simulated pods, nothing is billed ($0).")
    return {
        "name": name,
        "lines": lines,
        "costs": [estimate.cost_row()],
        "notices": [n.text for n in plan.notices if n.code.startswith("captions")],
        "report_text": prepared.report_text,
        "sandbox": bot.runtime.sandbox,
    }


def captioned_embed(job_public_id: str, payload: Mapping[str, Any]) -> discord.Embed:
    """A /caption job's final message: done, where the captions are, and its cost (no LoRA, no GPU line)."""
    sha = payload.get("sha256")
    lines = [
        f"Tagged {payload.get('tagged') or 0} of {payload.get('images') or 0} image(s); the captions and the zip"
        " are in the message above.",
    ]
    if sha:
        lines.append(f"Train on them: `/train dataset_from:sha256:{sha}` (nothing is tagged again).")
        lines.append("Review or fix them first: **Edit captions** below (a one-time link, for you only).")
    builder = render.EmbedBuilder(f"{job_public_id} · captions done", "\n".join(lines), render.COLOUR_OK)
    builder.field("Cost", render.cost_table(payload.get("cost") or {}))
    return builder.build()


def edit_view(sha256: str | None) -> discord.ui.View | None:
    if not sha256:
        return None
    from bot.views import EditCaptionsButton

    view = discord.ui.View(timeout=None)
    view.add_item(EditCaptionsButton(sha256))
    return view


def editor_link_text(bot: LorabotBot, user_id: int, sha256: str) -> str:
    """A one-time editor link for a dataset of the user's, or the sentence saying why not (blocking: DB)."""
    hub, public_url = bot.runtime.caption_editor, bot.settings.public_url
    if hub is None or public_url is None:
        return NO_EDITOR
    with session_scope(bot.runtime.sessions) as s:
        row = get_dataset(s, sha256)
        owner = row.owner_user_id if row is not None else None
    if owner != user_id:
        return "Only the owner of this dataset can edit its captions; /edit_captions lists yours."
    link = hub.links.issue(public_url, user_id, sha256)
    until = render.timestamp(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=hub.links.lifetime_s))
    return (
        f"Your caption editor for dataset `{sha256[:12]}` (only the browser that opens it first, until you save or"
        f" {until}; don't share it): {link}\n"
        "Saving makes a new dataset; the page gives its `/train dataset_from:` hash."
    )


async def send_editor_link(bot: LorabotBot, interaction: discord.Interaction[Any], sha256: str) -> None:
    text = await asyncio.to_thread(editor_link_text, bot, interaction.user.id, sha256)
    await interaction.response.send_message(text, ephemeral=True)
