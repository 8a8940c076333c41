"""/try's texts: the cost table's try line, the estimate the user confirms, and the test window's line."""

from __future__ import annotations

import datetime as dt

from bot import render
from bot.trying import estimate_text, window_text
from jobs.ledger import CostBreakdown
from jobs.trying import TryQuote
from jobs.tryplan import TrySpec
from storage.models import TestWindow

T0 = dt.datetime(2026, 12, 4, 18, 0, tzinfo=dt.UTC)
SPEC = TrySpec(prompts=("kana smiling", "kana angry"), epochs=(1, 2, 3), seed=7, negative="", strength=1.0, steps=28)


def test_the_try_line_is_its_own_row_and_the_table_still_adds_up() -> None:
    cost = CostBreakdown(volume_micros=10_000, gpu_pod_micros=690_000, try_micros=57_500)
    rows = [" ".join(line.split()) for line in render.cost_table(cost).strip("`\n").splitlines()]
    assert rows[:4] == ["Volume $0.01", "CPU pod $0.00", "GPU pod $0.69", "Try / window $0.06"]
    assert rows[-1] == "Total $0.76"  # 10,000 + 690,000 + 57,500 µ$: the try line is in the total
    assert "Try" not in render.cost_table(CostBreakdown(gpu_pod_micros=690_000))
    assert "Try / window" in render.cost_table({"gpu_pod_micros": 690_000, "try_micros": 57_500})


def _quote(*, warm: bool) -> TryQuote:
    return TryQuote(
        request_id=4,
        job_id=5,
        spec=SPEC,
        startup_s=0 if warm else 120,
        generation_s=40,
        linger_s=0 if warm else 300,
        price_micros_per_hr=690_000,
        estimate_micros=88_000,
        warm=warm,
        gpu="RTX 4090",
        source="assumed figures",
    )


def test_the_estimate_says_what_it_is_made_of_and_that_nothing_is_rented_yet() -> None:
    cold = estimate_text("j5", _quote(warm=False))
    assert "**/try on `j5`** (`t4`): 2 prompts × epochs 1-3 = 6 images" in cold
    assert "about **$0.09**: GPU start-up ~2 min + generation ~40 s + up to 5 min kept for your next /try" in cold
    assert "on a new RTX 4090 pod over the job's volume ($0.69/h)" in cold
    assert "Seed 7 · 28 steps · strength 1" in cold and cold.endswith("Nothing is rented until you confirm.")
    warm = estimate_text("j5", _quote(warm=True))
    assert "GPU start-up" not in warm and "kept for your next" not in warm
    assert "on the GPU pod already serving `j5`" in warm


def test_the_window_line_while_open_and_once_closed() -> None:
    window = TestWindow(job_id=5, pod_id=1, minutes=20, opened_at=T0, until_at=T0 + dt.timedelta(minutes=20))
    assert window_text("j5", window, 57_500).startswith("🧪 Test window open until 18:20 UTC (<t:")
    assert "$0.06 so far" in window_text("j5", window, 57_500)
    window.closed_at, window.closed_by = T0 + dt.timedelta(minutes=7), "button by <@9>"
    closed = window_text("j5", window, 80_500)
    assert closed.startswith("🧪 Test window closed at 18:07 UTC (button by <@9>); it cost $0.08")
