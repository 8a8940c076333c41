"""What the thread shows: within Discord's limits whatever the input, dollars with cents, timestamps, bars."""

from __future__ import annotations

import dataclasses
import datetime as dt

import discord
import pytest

from bot import render
from jobs.ledger import CostBreakdown
from jobs.planning import make_plan
from jobs.prices import PriceSource, built_in_table
from jobs.spec import UserOptions
from tests.jobs.data.specs import CATALOG, PRESETS, PRICES, seed_dataset


def _embed_total(embed: discord.Embed) -> int:
    total = len(embed.title or "") + len(embed.description or "") + len(embed.footer.text or "")
    return total + sum(len(f.name or "") + len(f.value or "") for f in embed.fields)


def test_truncate_keeps_the_limit_and_marks_the_cut() -> None:
    assert render.truncate("short", 10) == "short"
    cut = render.truncate("x" * 50, 10)
    assert len(cut) == 10 and cut.endswith("…")


def test_truncate_never_leaves_a_code_block_open() -> None:
    cut = render.truncate("intro\n```\n" + "line\n" * 100 + "```", 40)
    assert len(cut) <= 40 and cut.count("```") % 2 == 0


def test_code_block_fits_its_limit_and_cannot_be_closed_early_by_the_text() -> None:
    block = render.code_block("a ``` b\n" * 1000, 300)
    assert len(block) <= 300 and block.count("```") == 2


def test_an_oversized_embed_is_shrunk_under_every_limit() -> None:
    builder = render.EmbedBuilder("t" * 300, "d" * 5000)
    for index in range(30):
        builder.field(f"name {index} " + "n" * 300, "v" * 2000)
    embed = builder.build().to_dict()
    assert len(embed["title"]) <= 256 and len(embed["description"]) <= 4096
    assert len(embed["fields"]) <= 25
    assert all(len(f["name"]) <= 256 and len(f["value"]) <= 1024 for f in embed["fields"])
    assert _embed_total(builder.build()) <= 6000
    assert embed["description"].startswith("ddd")  # the head of the message survives


def test_cost_table_shows_cents_and_a_total_that_is_the_sum() -> None:
    table = render.cost_table(CostBreakdown(volume_micros=4_000, cpu_pod_micros=21_000, gpu_pod_micros=893_333))
    assert "$0.02" in table and "$0.89" in table
    assert table.splitlines()[-2].split() == ["Total", "$0.92"]
    live = render.cost_table({"volume_micros": 1, "gpu_pod_micros": 500_000, "total_micros": 500_001, "live": True})
    assert "Total so far" in live


def test_timestamps_are_discord_relative_and_refuse_naive_times() -> None:
    moment = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
    assert render.timestamp(moment) == f"<t:{int(moment.timestamp())}:R>"
    with pytest.raises(ValueError, match="aware UTC"):
        render.timestamp(dt.datetime(2026, 11, 24, 12, 0))


@pytest.mark.parametrize(("done", "total", "expected"), [(0, 10, "0%"), (5, 10, "50%"), (12, 10, "100%"), (1, 0, "0%")])
def test_progress_bar(done: int, total: int, expected: str) -> None:
    bar = render.progress_bar(done, total, width=10)
    assert bar.endswith(expected) and len(bar.split()[0]) == 10


def test_epoch_embed_has_progress_loss_eta_and_cost() -> None:
    now = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
    payload = {
        "epoch": 2,
        "epochs": 10,
        "loss": 0.09123,
        "step": 1180,
        "total_steps": 5900,
        "eta_seconds": 2400,
        "checkpoint": {"size": 228_000_000},
        "cost": {
            "volume_micros": 1000,
            "cpu_pod_micros": 2000,
            "gpu_pod_micros": 150_000,
            "total_micros": 153_000,
            "live": True,
        },
    }
    text = str(render.epoch_embed("j7", payload, now=now).to_dict())
    assert "epoch 2/10" in text and "0.0912" in text and "20%" in text
    assert f"<t:{int((now + dt.timedelta(seconds=2400)).timestamp())}:R>" in text
    assert "228.0 MB" in text and "$0.15" in text and "Total so far" in text


def test_an_epoch_whose_samples_were_lost_with_the_pod_says_so_and_that_its_lora_is_fine() -> None:
    now = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
    payload = {"epoch": 1, "epochs": 3, "checkpoint": {"size": 38_000_000}, "samples": [], "samples_lost": 2}
    text = str(render.epoch_embed("j7", payload, now=now).to_dict())
    assert "Epoch 1's samples were lost with the pod (2 never drawn); its LoRA is fine." in text
    assert "lost" not in str(render.epoch_embed("j7", {**payload, "samples_lost": 0}, now=now).to_dict())


def test_failures_come_with_a_hint() -> None:
    embed = render.failed_embed("j3", {"reason": "sd-scripts: CUDA out of memory"}).to_dict()
    assert any("batch_size" in f["value"] for f in embed["fields"])
    assert render.failure_hint("something odd") is None


def test_a_plan_message_stays_under_6000_characters_across_its_embeds() -> None:
    summary = {
        "name": "n" * 200,
        "lines": ["l" * 300] * 10,
        "costs": [
            {"cloud": c, "volume_micros": 1, "cpu_pod_micros": 2, "gpu_pod_micros": 3, "total_micros": 6}
            for c in ("secure",)
        ],
        "notices": ["a long notice " * 40] * 10,
        "report_text": "report line\n" * 1000,
    }
    embeds = render.plan_embeds_from_summary(summary)
    assert sum(_embed_total(e) for e in embeds) <= 6000
    assert all(len(e.description or "") <= 4096 for e in embeds)


def test_the_plan_quotes_the_secure_cloud_and_says_where_its_prices_came_from() -> None:
    plan = make_plan(seed_dataset(), UserOptions(trigger="kanachan"), presets=PRESETS, catalog=CATALOG, prices=PRICES)
    summary = render.plan_summary(plan, job_name="kana", sandbox=False, report_text="report")
    assert "Prices: built-in prices" in summary["lines"]
    assert [c["cloud"] for c in summary["costs"]] == ["secure"]
    fields = render.plan_embeds_from_summary(summary)[1].to_dict()["fields"]
    assert fields[0]["name"] == "Estimated cost (secure cloud)"


def test_the_gpu_list_shows_secure_prices_stock_and_their_source() -> None:
    built_in = built_in_table()
    text = render.gpu_prices_text(built_in)
    assert "`4090` · RTX 4090 · 24 GB · $0.69/h" in text and "stock" not in text
    assert text.endswith("Prices: built-in prices")

    rtx4090 = dataclasses.replace(built_in.gpu("4090"), hourly_micros={"secure": 740_000}, live=True, stock="Low")
    l4 = dataclasses.replace(built_in.gpu("l4"), hourly_micros={"secure": None}, live=True)
    live = dataclasses.replace(built_in, gpus=(rtx4090, l4), source=PriceSource(live=True, age_s=180))
    assert render.gpu_prices_text(live) == (
        "`4090` · RTX 4090 · 24 GB · $0.74/h · stock Low\nPrices: live RunPod prices, 3 min old"
    )
