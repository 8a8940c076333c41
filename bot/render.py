"""Messages as Discord shows them: embeds inside Discord's limits, dollars with cents, timestamps, progress bars.

Pure functions from domain data to `discord.Embed`; nothing here talks to Discord or the DB, so every limit is
unit-tested. Layouts stay one column (no inline fields) because most of the team reads the threads on a phone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import discord

from jobs.billing_sync import JobBill
from jobs.ledger import CostBreakdown, VolumesMonth, format_usd
from jobs.pick import JobResult
from jobs.planning import Plan
from jobs.prices import PriceTable

# Discord's documented limits (facts/discord-test-world.md).
CONTENT_MAX = 2000
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FIELDS_MAX = 25
FOOTER_MAX = 2048
EMBED_TOTAL_MAX = 6000
ELLIPSIS = "…"
# The dataset report's share of a plan message (the plan embed keeps the rest of the 6,000).
REPORT_MAX = 2500

COLOUR_INFO = discord.Colour.blurple()
COLOUR_OK = discord.Colour.green()
COLOUR_WARN = discord.Colour.orange()
COLOUR_BAD = discord.Colour.red()

# What to try after a failure, by the words the orchestrator's reason contains.
_FAILURE_HINTS = (
    ("out of memory", "Try a lower `batch_size` or `resolution`."),
    ("nan", "Try lower learning rates (`unet_lr`, `te_lr`)."),
    ("no gpu", "No GPU was free: `/retry` later, or pick another `gpu`."),
    ("no stock", "No GPU was free: `/retry` later, or pick another `gpu`."),
    ("budget", "Ask an admin about the budget, or plan fewer epochs."),
    ("wall-time", "Plan fewer epochs or steps."),
)


def truncate(text: str, limit: int) -> str:
    """Cut to `limit` characters with an ellipsis, never inside a surrogate pair or leaving an open code fence."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - len(ELLIPSIS), 0)]
    if cut.count("```") % 2 == 1:
        closing = "\n```"
        cut = text[: max(limit - len(ELLIPSIS) - len(closing), 0)]
        return cut + ELLIPSIS + closing if cut.count("```") % 2 == 1 else cut + ELLIPSIS
    return cut + ELLIPSIS


def code_block(text: str, limit: int) -> str:
    """`text` in a code block whose whole length, fences included, is at most `limit`."""
    fence_len = len("```\n\n```")
    body = text.replace("```", "ʼʼʼ")
    if len(body) + fence_len > limit:
        body = body[: max(limit - fence_len - len(ELLIPSIS), 0)] + ELLIPSIS
    return f"```\n{body}\n```"


def usd(micros: int) -> str:
    return format_usd(micros)


def timestamp(moment: dt.datetime, style: str = "R") -> str:
    """A Discord timestamp (`<t:…:R>` shows "in 5 minutes" in the reader's own time zone)."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be aware UTC datetimes")
    return f"<t:{int(moment.timestamp())}:{style}>"


def progress_bar(done: int, total: int, width: int = 12) -> str:
    """`▰▰▰▱▱▱ 50%`: plain characters that render the same on every phone."""
    if total <= 0:
        return "▱" * width + " 0%"
    share = min(max(done / total, 0.0), 1.0)
    filled = round(share * width)
    return "▰" * filled + "▱" * (width - filled) + f" {share:.0%}"


def duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def size(num_bytes: int | None) -> str:
    if num_bytes is None:
        return "?"
    value = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{num_bytes} B"  # pragma: no cover - the loop always returns


class EmbedBuilder:
    """Builds one embed and keeps it inside every per-part and total limit by truncating, never by failing."""

    def __init__(self, title: str, description: str = "", colour: discord.Colour = COLOUR_INFO) -> None:
        self._title = truncate(title, TITLE_MAX)
        self._description = truncate(description, DESCRIPTION_MAX)
        self._colour = colour
        self._fields: list[tuple[str, str]] = []
        self._footer: str | None = None
        self._image: str | None = None

    def field(self, name: str, value: str) -> EmbedBuilder:
        if len(self._fields) < FIELDS_MAX:
            self._fields.append(
                (truncate(name or "\u200b", FIELD_NAME_MAX), truncate(value or "\u200b", FIELD_VALUE_MAX))
            )
        return self

    def footer(self, text: str) -> EmbedBuilder:
        self._footer = truncate(text, FOOTER_MAX)
        return self

    def image(self, url: str) -> EmbedBuilder:
        self._image = url
        return self

    def build(self, total_max: int = EMBED_TOTAL_MAX) -> discord.Embed:
        # The 6,000 total counts title, description, field names/values and footer: shrink the description first,
        # then drop fields from the end, so the head of the message (what a phone shows) survives.
        fixed = len(self._title) + len(self._footer or "")
        fields = list(self._fields)
        description = self._description
        while fixed + len(description) + sum(len(n) + len(v) for n, v in fields) > total_max:
            over = fixed + len(description) + sum(len(n) + len(v) for n, v in fields) - total_max
            if len(description) > 200:
                description = truncate(description, max(len(description) - over, 200))
            elif fields:
                fields.pop()
            else:
                description = truncate(description, max(len(description) - over, 0))
        embed = discord.Embed(title=self._title, description=description or None, colour=self._colour)
        for name, value in fields:
            embed.add_field(name=name, value=value, inline=False)
        if self._footer:
            embed.set_footer(text=self._footer)
        if self._image:
            embed.set_image(url=self._image)
        return embed


# -- costs -------------------------------------------------------------------------------------------------------


def cost_table(cost: CostBreakdown | Mapping[str, Any]) -> str:
    """Seed 000's table: volume / CPU pod / GPU pod / total, right-aligned in a code block (readable on a phone).

    The pod lines hold each pod's container disk; when there is any, a last "incl. disk" line under the total says
    how much (the same split as RunPod's bill), so the lines above still add up to the total."""
    if isinstance(cost, CostBreakdown):
        rows = [
            ("Volume", cost.volume_micros),
            ("CPU pod", cost.cpu_pod_micros),
            ("GPU pod", cost.gpu_pod_micros),
        ]
        if cost.try_micros:
            # /try pods and the test window: GPU time after training (jobs/trying.py), a line of its own.
            rows.append(("Try / window", cost.try_micros))
        if cost.storage_micros:
            rows.append(("Storage", cost.storage_micros))
        total, live, disk = cost.total_micros, cost.live, cost.disk_micros
    else:
        rows = [
            ("Volume", int(cost.get("volume_micros") or 0)),
            ("CPU pod", int(cost.get("cpu_pod_micros") or 0)),
            ("GPU pod", int(cost.get("gpu_pod_micros") or 0)),
        ]
        if cost.get("try_micros"):
            rows.append(("Try / window", int(cost.get("try_micros") or 0)))
        total, live = int(cost.get("total_micros") or sum(v for _, v in rows)), bool(cost.get("live"))
        disk = int(cost.get("disk_micros") or 0)
    rows.append(("Total" + (" so far" if live else ""), total))
    notes = [("  incl. disk", disk)] if disk else []
    width = max(len(usd(v)) for _, v in [*rows, *notes])
    lines = [f"{name:<14}{usd(value):>{width}}" for name, value in [*rows, *notes]]
    lines.insert(len(rows) - 1, "-" * (14 + width))
    return "```\n" + "\n".join(lines) + "\n```"


def runpod_bill_text(bill: JobBill | None) -> str | None:
    """RunPod's own bill for a finished job's pods, next to the table: its figure when it is more than 1 % off the
    ledger's, that it agrees otherwise, or that it is not in yet. None when there is nothing to compare."""
    if bill is None:
        return None
    if not bill.complete:
        if bill.settled + bill.given_up == bill.pods:
            return "RunPod's own bill for the pods never came in; the figures above are lorabot's ledger."
        return "RunPod's own bill for the pods is not in yet (RunPod posts it with a delay)."
    if bill.differs:
        # Display only (the sums stay integers): the gap in percent, one decimal, half up.
        gap = Decimal(bill.runpod_micros - bill.ledger_micros) * 100 / max(bill.ledger_micros, 1)
        percent = gap.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
        return (
            f"**RunPod billed {usd(bill.runpod_micros)}** for the pods; the ledger says {usd(bill.ledger_micros)} "
            f"({percent:+} %)."
        )
    return "RunPod's own bill for the pods agrees (within 1 %)."


def job_cost_text(cost: CostBreakdown, bill: JobBill | None) -> str:
    """`/cost` for one job: the table, then what RunPod's own bill says once the job has finished."""
    table = cost_table(cost)
    line = runpod_bill_text(bill)
    return table if line is None else f"{table}\n{line}"


def volume_month_table(volumes: VolumesMonth, team: CostBreakdown) -> str:
    """The volume's whole month next to the jobs' share: the hours between jobs are real money too."""
    # One volume per data center: each block split per data center, so an operator sees which data center's cache
    # costs what, and a job moved between two shows its part in each; every block adds up to its line.
    several = len(volumes.data_centers) > 1
    centers = volumes.data_centers if several else ()
    rows = [("Kept all month", volumes.kept_micros)]
    rows += [(f" {dc.data_center_id} {dc.gb} GB", dc.kept_micros) for dc in centers]
    rows += [("In jobs above", volumes.jobs_share_micros)]
    rows += [(f" {dc.data_center_id}", dc.jobs_share_micros) for dc in centers]
    rows += [("Between jobs", volumes.between_jobs_micros)]
    rows += [(f" {dc.data_center_id}", dc.between_jobs_micros) for dc in centers]
    label = max(16, *(len(name) + 1 for name, _ in rows))
    width = max(len(usd(v)) for _, v in [*rows, ("", team.total_micros + volumes.between_jobs_micros)])
    lines = [f"{name:<{label}}{usd(value):>{width}}" for name, value in rows]
    lines += [
        "-" * (label + width),
        f"{'Team, all in':<{label}}{usd(team.total_micros + volumes.between_jobs_micros):>{width}}",
    ]
    return "```\n" + "\n".join(lines) + "\n```"


# -- the plan ----------------------------------------------------------------------------------------------------


def plan_summary(
    plan: Plan, *, job_name: str, sandbox: bool, report_text: str, test_window_min: int = 0
) -> dict[str, Any]:
    """The plan as JSON-able data: the /train reply and the thread's PLAN notice render the same thing."""
    spec = plan.spec
    est = plan.estimate
    lines = [
        f"**{spec.preset}** · {plan.model.name}",
        f"Trigger `{spec.trigger}` · class `{spec.class_word}` · output `{spec.output_name}.safetensors`",
        f"{spec.epochs} epochs · {plan.steps.total:,} steps · {spec.resolution}px · batch {spec.batch_size}",
        f"dim {spec.network_dim} / alpha {spec.network_alpha:g} · U-Net lr {spec.unet_lr:g}",
        f"GPU {est.gpu.display_name} (Secure Cloud) · about {duration(est.durations.wall_s)} wall time",
        f"Prices: {est.prices_source.describe()}",
    ]
    captions = plan.captions
    if captions is not None and captions.to_tag:
        lines.append(
            f"Captions {captions.mode}: {captions.to_tag} image(s) will be tagged on the CPU pod (WD14), about"
            f" {duration(captions.tagging_seconds)} more CPU stage; the thread shows them before training"
        )
    elif captions is not None and captions.mode == "off" and captions.uncaptioned:
        lines.append(f"Captions off: {captions.uncaptioned} image(s) without a caption train on class tokens only")
    if test_window_min > 0:
        # The GPU pod kept up after training (jobs/trying.py): not in the costs below, which are the training's.
        most = test_window_min * 60 * (est.gpu.price("secure") or 0) // 3600
        lines.append(
            f"Test window: the GPU pod stays up {test_window_min} min after training so /try answers in seconds "
            f"(up to about {usd(most)} more, on the job's try line; Close now in the thread ends it early)"
        )
    if sandbox:
        lines.append("**Sandbox**: simulated pods, nothing is billed ($0).")
    return {
        "name": job_name,
        "lines": lines,
        "costs": [
            {
                "cloud": cost.cloud,
                "volume_micros": cost.volume_micros,
                "cpu_pod_micros": cost.cpu_micros,
                "gpu_pod_micros": cost.gpu_micros,
                "total_micros": cost.total_micros,
            }
            for cost in est.costs
        ],
        "notices": [n.text for n in plan.notices],
        "report_text": report_text,
        "sandbox": sandbox,
    }


def plan_embeds_from_summary(summary: Mapping[str, Any]) -> list[discord.Embed]:
    """The dataset report and the plan: steps, duration, cost breakdown (Secure Cloud), rule notices."""
    builder = EmbedBuilder(f"Plan: {summary.get('name') or 'LoRA'}", "\n".join(summary.get("lines") or []))
    costs = list(summary.get("costs") or [])
    cheapest = min((c["total_micros"] for c in costs), default=None)
    for cost in costs:
        mark = " · cheapest" if len(costs) > 1 and cost["total_micros"] == cheapest else ""
        builder.field(f"Estimated cost ({cost['cloud']} cloud){mark}", cost_table(cost))
    if summary.get("placement"):
        builder.field("Where", str(summary["placement"]))
    notices = list(summary.get("notices") or [])
    if notices:
        builder.field("Notices", "\n".join(f"• {n}" for n in notices))
    report_text = str(summary.get("report_text") or "").strip() or "(no report)"
    # Both embeds share one message, and Discord's 6,000 characters count across all of a message's embeds.
    report = EmbedBuilder("Dataset", code_block(report_text, REPORT_MAX)).build()
    used = len(report.title or "") + len(report.description or "")
    return [report, builder.build(total_max=EMBED_TOTAL_MAX - used)]


def gpu_prices_text(table: PriceTable) -> str:
    """`/models`' GPU list: each GPU lorabot can rent (Secure Cloud) with its hourly price, stock when known, and
    where the prices came from."""
    lines = []
    for gpu in table.gpus:
        hourly = gpu.price("secure")
        if hourly is None:
            continue
        stock = f" · stock {gpu.stock or 'none free'}" if gpu.live else ""
        lines.append(
            f"`{gpu.aliases[0] if gpu.aliases else gpu.gpu_id}` · {gpu.display_name} · {gpu.vram_gb} GB"
            f" · {usd(hourly)}/h{stock}"
        )
    return "\n".join([*lines, f"Prices: {table.source.describe()}"])


def refusal_text(title: str, reasons: Iterable[str]) -> str:
    """A precise refusal as plain content (≤ 2,000 characters)."""
    items = [f"• {r}" for r in reasons]
    return truncate(f"**{title}**\n" + "\n".join(items), CONTENT_MAX)


# -- notices -----------------------------------------------------------------------------------------------------


def epoch_embed(job_public_id: str, payload: Mapping[str, Any], *, now: dt.datetime) -> discord.Embed:
    epoch = int(payload.get("epoch") or 0)
    epochs = int(payload.get("epochs") or epoch or 1)
    step, total = payload.get("step"), payload.get("total_steps")
    done, out_of = (int(step), int(total)) if step and total else (epoch, epochs)
    lines = [progress_bar(done, out_of)]
    loss = payload.get("loss")
    if loss is not None:
        lines.append(f"Loss **{float(loss):.4f}**")
    eta = payload.get("eta_seconds")
    if eta is not None and epoch < epochs:
        lines.append(f"Done {timestamp(now + dt.timedelta(seconds=float(eta)))} (about {duration(float(eta))})")
    checkpoint = payload.get("checkpoint") or {}
    if checkpoint.get("size"):
        lines.append(f"Checkpoint {size(int(checkpoint['size']))} · `/lora {job_public_id} {epoch}` for the link")
    lost = int(payload.get("samples_lost") or 0)
    if lost:
        # sd-scripts draws an epoch's samples after saving it; a pod lost in between leaves the LoRA without them
        lines.append(f"Epoch {epoch}'s samples were lost with the pod ({lost} never drawn); its LoRA is fine.")
    builder = EmbedBuilder(f"{job_public_id} · epoch {epoch}/{epochs}", "\n".join(lines), COLOUR_INFO)
    cost = payload.get("cost")
    if cost:
        builder.field("Cost so far", cost_table(cost))
    return builder.build()


def succeeded_embed(
    job_public_id: str,
    payload: Mapping[str, Any],
    *,
    final_url: str,
    epoch_count: int,
    result: JobResult | None = None,
) -> discord.Embed:
    """The thread's summary. `final_url` links the job's result: the final LoRA, or the epoch its owner picked (then
    its size and sha256 are that checkpoint's, from the epochs the job reported)."""
    final = payload.get("final") or {}
    if result is not None and result.picked:
        final = next((e for e in payload.get("epochs") or [] if e.get("epoch") == result.epoch), {})
    lines = [
        f"**[Download the LoRA]({final_url})** ({size(final.get('size'))})",
        f"sha256 `{final.get('sha256') or '?'}`",
    ]
    if result is not None:
        lines.append(f"Result: {result.describe()}")
    if epoch_count > 1:
        lines.append("Any epoch: the buttons below, or `/lora job epoch`; make one the result with the menu.")
    builder = EmbedBuilder(f"{job_public_id} · done", "\n".join(lines), COLOUR_OK)
    builder.field("Cost", cost_table(payload.get("cost") or {}))
    return builder.build()


def picked_text(job_public_id: str, epoch: int, user_id: int) -> str:
    """The thread's line for a pick (sent without pinging: the mention only names the picker)."""
    return (
        f"📌 <@{user_id}> chose **epoch {epoch}** as the result of `{job_public_id}`: the download link above, "
        f"`/lora {job_public_id}` and `/cost {job_public_id}` now give that epoch."
    )


def contact_sheet_text(job_public_id: str, number: int, count: int, seed: int | None) -> str:
    sheet = f" ({number}/{count})" if count > 1 else ""
    same_seed = f", seed {seed} throughout" if seed is not None else ""
    return f"🗂️ `{job_public_id}` contact sheet{sheet}: rows are the sample prompts, columns the epochs{same_seed}."


def failed_embed(job_public_id: str, payload: Mapping[str, Any]) -> discord.Embed:
    reason = str(payload.get("reason") or "unknown reason")
    builder = EmbedBuilder(f"{job_public_id} · failed", reason, COLOUR_BAD)
    hint = failure_hint(reason)
    if hint:
        builder.field("What to try", hint)
    if payload.get("cost"):
        builder.field("Cost", cost_table(payload["cost"]))
    return builder.build()


def failure_hint(reason: str) -> str | None:
    lowered = reason.lower()
    for needle, hint in _FAILURE_HINTS:
        if needle in lowered:
            return hint
    return None


def cancelled_embed(job_public_id: str, payload: Mapping[str, Any]) -> discord.Embed:
    builder = EmbedBuilder(f"{job_public_id} · cancelled", "Every pod of this job is terminated.", COLOUR_WARN)
    builder.field("Final cost", cost_table(payload.get("cost") or {}))
    return builder.build()


def captions_embed(job_public_id: str, payload: Mapping[str, Any]) -> discord.Embed:
    """What the CPU pod wrote (jobs/captioned.py), before training starts: tag frequencies, five examples, images
    the tagger could not read, what was pruned, and the captioned zip. Captions and tags sit in code blocks (they
    hold the user's trigger and the tagger's vocabulary, which may look like markdown)."""
    tagged, images = int(payload.get("tagged") or 0), int(payload.get("images") or 0)
    builder = EmbedBuilder(
        f"{job_public_id} · captions written",
        f"The CPU pod tagged {tagged} of {images} image(s) with sd-scripts' WD14 tagger; training uses these captions.",
        COLOUR_INFO,
    )
    top = [f"{tag} ({count})" for tag, count in payload.get("top_tags") or []]
    builder.field("Tag frequencies", code_block(", ".join(top) or "(no tags above the thresholds)", 1000))
    examples = [f"{e.get('image')}: {e.get('caption')}" for e in payload.get("examples") or []]
    if examples:
        builder.field("Examples", code_block("\n".join(examples), FIELD_VALUE_MAX))
    pruned = list(payload.get("shared_removed") or [])
    undesired = list(payload.get("undesired") or [])
    builder.field(
        "Removed",
        code_block(
            f"in every image: {', '.join(pruned) or '(none)'}\nundesired: {', '.join(undesired) or '(none)'}", 1000
        ),
    )
    unreadable = payload.get("unreadable") or []
    if unreadable:
        builder.field(
            f"Not readable by the tagger ({len(unreadable)}, captioned 'TRIGGER, CLASS')",
            code_block("\n".join(f"{u.get('image')}: {u.get('error')}" for u in unreadable), 1000),
        )
    url = str(payload.get("url") or "")
    if url:
        builder.field(
            "Captioned dataset",
            f"[download the zip]({url}) · train on it again: `/train dataset_from:sha256:{payload.get('sha256')}`",
        )
    return builder.build()


def info_text(job_public_id: str, kind: str, payload: Mapping[str, Any]) -> str:
    """One line for the small notices (preparing, waiting for a GPU, interrupted, info)."""
    if kind == "waiting_gpu":
        tried = ", ".join(str(t) for t in payload.get("tried") or []) or "every GPU in the fallback list"
        deadline = payload.get("deadline_s")
        tail = f"; giving up after {duration(float(deadline))}" if deadline else ""
        return truncate(f"⏳ `{job_public_id}` waiting for a GPU: no stock for {tried}. Retrying{tail}.", CONTENT_MAX)
    if kind == "interrupted":
        return truncate(
            f"⚠️ `{job_public_id}` the GPU pod was lost ({payload.get('reason') or 'no reason given'}); "
            "resuming from the last saved epoch.",
            CONTENT_MAX,
        )
    text = str(payload.get("text") or payload.get("status") or kind)
    prefix = "🛠️" if kind == "preparing" else "ℹ️"
    return truncate(f"{prefix} `{job_public_id}` {text}", CONTENT_MAX)


def jobs_lines(rows: Sequence[tuple[str, str, str, str]]) -> str:
    """`/jobs`, `/queue`: one line per job (id, name, status, cost), short enough for a phone."""
    if not rows:
        return "No jobs."
    lines = [f"`{jid}` **{name}** · {status} · {cost}" for jid, name, status, cost in rows]
    return truncate("\n".join(lines), DESCRIPTION_MAX)
