"""Plain-text rendering for `lorabot demo`: the job's outbox notices as the terminal shows them, a progress bar,
and the cost table (seed 000's volume / CPU pod / GPU pod breakdown).

Pure functions over the notice payloads of docs/CONTRACTS.md, so the demo shows what a Discord thread would get
without depending on the Discord adapter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobs.prices import format_usd
from jobs.states import NoticeKind

BAR_WIDTH = 30


def usd(micros: int | None) -> str:
    """Four decimals: a sandbox job costs fractions of a cent per item, which cents would round to $0.00."""
    return format_usd(int(micros or 0), places=4)


def render_notice(kind: str, payload: Mapping[str, Any], *, job: str) -> str:
    """One notice as a few plain lines, prefixed with the job id like a thread title."""
    head = f"[{job}] "
    if kind == NoticeKind.PREPARING:
        return head + f"preparing: {payload.get('text', '')}".rstrip(": ")
    if kind == NoticeKind.WAITING_GPU:
        tried = ", ".join(str(t) for t in payload.get("tried") or []) or "every GPU in the fallback list"
        return head + f"waiting for a GPU: no stock for {tried}; retrying"
    if kind == NoticeKind.EPOCH:
        return head + _render_epoch(payload)
    if kind == NoticeKind.SUCCEEDED:
        final = payload.get("final") or {}
        lines = [head + f"succeeded: final LoRA {final.get('key')} ({_size(final.get('size'))})"]
        for epoch in payload.get("epochs") or []:
            lines.append(f"    epoch {epoch.get('epoch')}: {epoch.get('key')} ({_size(epoch.get('size'))})")
        lines.append("    " + _render_cost(payload.get("cost") or {}))
        return "\n".join(lines)
    if kind == NoticeKind.FAILED:
        return head + f"FAILED: {payload.get('reason') or 'no reason given'}"
    if kind == NoticeKind.CANCELLED:
        return head + "cancelled; " + _render_cost(payload.get("cost") or {})
    if kind == NoticeKind.INTERRUPTED:
        return head + f"interrupted: {payload.get('reason') or 'the GPU pod was lost'}; resuming"
    text = payload.get("text") or payload.get("reason") or payload.get("status") or kind
    extra = f" on {payload['gpu']} ({str(payload.get('cloud', '')).lower()})" if payload.get("gpu") else ""
    return head + f"{text}{extra}"


def _render_epoch(payload: Mapping[str, Any]) -> str:
    loss = payload.get("loss")
    loss_text = f"loss {loss:.4f}" if isinstance(loss, int | float) else "loss n/a"
    eta = payload.get("eta_seconds")
    eta_text = f", ETA {_duration(float(eta))}" if isinstance(eta, int | float) and eta > 0 else ""
    samples = payload.get("samples") or []
    lines = [
        f"epoch {payload.get('epoch')}/{payload.get('epochs')}: {loss_text}{eta_text}, "
        f"{_render_cost(payload.get('cost') or {})}",
        f"    checkpoint {(payload.get('checkpoint') or {}).get('key')}",
    ]
    lines.extend(f"    sample {key}" for key in samples)
    return "\n".join(lines)


def _render_cost(cost: Mapping[str, Any]) -> str:
    so_far = " so far" if cost.get("live") else ""
    return (
        f"cost{so_far} {usd(cost.get('total_micros'))} (volume {usd(cost.get('volume_micros'))}, "
        f"CPU pod {usd(cost.get('cpu_pod_micros'))}, GPU pod {usd(cost.get('gpu_pod_micros'))}; sandbox: $0 real)"
    )


def progress_bar(step: int, total: int, *, epoch: int | None = None, epochs: int | None = None) -> str:
    """`[#########.....] 120/360 steps · epoch 2/3`; a total of 0 shows an empty bar."""
    fraction = min(max(step / total, 0.0), 1.0) if total > 0 else 0.0
    filled = round(fraction * BAR_WIDTH)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    tail = f" · epoch {epoch}/{epochs}" if epoch is not None and epochs else ""
    return f"[{bar}] {step}/{total} steps{tail}"


@dataclass(frozen=True)
class CostRow:
    item: str
    seconds: int
    rate_micros_per_hour: int
    amount_micros: int


def cost_table(rows: Sequence[CostRow], *, runpod_bill_micros: int | None = None) -> str:
    """Markdown table like seed 000's (item, billed time, rate, cost), a total, and the emulator's own bill."""
    lines = ["| Item | Billed | Rate | Cost |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row.item} | {_duration(row.seconds)} | {usd(row.rate_micros_per_hour)}/h | {usd(row.amount_micros)} |"
        )
    total = sum(row.amount_micros for row in rows)
    lines.append(f"| **Total** | | | **{usd(total)}** |")
    lines.append("")
    if runpod_bill_micros is not None:
        lines.append(f"The sandbox's RunPod emulator billed {usd(runpod_bill_micros)} for the same pods and volume.")
    lines.append("Sandbox: these are RunPod's prices for the simulated time; $0 real money was spent.")
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _size(size: object) -> str:
    if not isinstance(size, int):
        return "size unknown"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def sim_seconds(start: dt.datetime, end: dt.datetime) -> int:
    return max(0, round((end - start).total_seconds()))
