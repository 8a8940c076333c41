"""Choosing the epoch in the thread, end to end: the real bot, the fake Discord, the emulator's pods and moto S3.

A 3-epoch × 2-prompt job gets one contact sheet, edited as epochs arrive, whose cells are the stand-in trainer's
samples in their places; "Use epoch N" on the final message makes epoch 2 the result of the final link, `/lora`,
`/cost` and the summary, refuses whoever may not or cannot pick with a reason, and survives a restart.
"""

from __future__ import annotations

import io
import re
import urllib.request

import pytest
from PIL import Image, ImageChops, ImageStat

from jobs.contact_sheet import CELL_FLOOR, fit_cell, plan_pages
from jobs.manifest import JobKeys
from jobs.states import NoticeKind
from storage.db import session_scope
from storage.queries import list_notices_for_job
from tests.world.fake_discord import MessageRecord
from tests.world.fake_discord.models import ChannelRecord
from tests.world.fixtures_bot import BotWorld
from tests.world.lorabot_world import dataset_zip

pytestmark = pytest.mark.timeout(240)


def _sheet_messages(bw: BotWorld, thread: ChannelRecord) -> list[MessageRecord]:
    return [m for m in bw.fake.messages_in(thread) if "contact sheet" in m.content]


async def _sheets_settled(bw: BotWorld, job_id: int) -> None:
    """Every contact-sheet refresh the notifier queued is done."""

    def settled() -> bool:
        with session_scope(bw.world.sessions) as s:
            notices = list_notices_for_job(s, job_id)
            sheets = [n for n in notices if n.kind is NoticeKind.CONTACT_SHEET]
            return bool(sheets) and all(n.sent_at is not None for n in notices)

    await bw.fake.wait_for(settled, timeout=60, what="the contact sheets to be refreshed")


def _mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


async def _ask(bw: BotWorld, command: str, options: dict[str, object]) -> str:
    asked = await bw.fake.send_slash(command, options)
    return (await bw.fake.wait_for_reply(asked, timeout=15)).text()


async def _pick(bw: BotWorld, final: MessageRecord, job_id: int, epoch: str, user: object = None) -> str:
    click = await bw.fake.click(final, f"lorabot:job:{job_id}:pick", values=[epoch], user=user)  # type: ignore[arg-type]
    return (await bw.fake.wait_for_reply(click, timeout=15)).text()


async def test_sheet_cells_and_picking_epoch_two_through_a_restart(bot_world: BotWorld) -> None:
    bw = bot_world
    plan = await bw.train(
        dataset_zip(12, size=512), name="kana", epochs=3, repeats=1, trigger="kana", class_word="1girl"
    )
    thread = await bw.confirm(plan)
    job_id = bw.latest_job_id()

    # Too early: the job is still queued, preparing or training.
    early = await _ask(bw, "pick", {"job": f"j{job_id}", "epoch": 2})
    assert re.search(rf"`j{job_id}` is still (queued|preparing|training): pick an epoch once it has finished", early)

    await bw.wait_for_status(job_id, lambda s: s.is_terminal(), timeout=150)
    final = await bw.wait_for_thread_message(thread, lambda m: "done" in m.text() and "Download" in m.text())
    await _sheets_settled(bw, job_id)

    # One sheet message, posted once and edited as the epochs came (no spam), holding all 3 epochs.
    [sheet_message] = _sheet_messages(bw, thread)
    assert bw.world.job(job_id).contact_sheet_message_ids == [sheet_message.id]
    edits = [r for r in bw.fake.requests if r.method == "PATCH" and str(sheet_message.id) in r.path]
    assert edits, "the sheet is refreshed in place as epochs arrive"
    [upload] = sheet_message.files
    assert len(upload.read_bytes()) <= 10 * 1024 * 1024
    sheet = Image.open(io.BytesIO(upload.read_bytes()))
    assert sheet.format == "PNG" and max(sheet.size) <= 4096

    # Each cell is that epoch's sample for that row's prompt, scaled as the renderer scales it.
    spec = bw.world.job(job_id).spec_json
    [layout] = plan_pages((1, 2, 3), len(spec["sample_prompts"]), source_px=int(spec["resolution"]))
    assert layout.rows == (0, 1) and layout.epochs == (1, 2, 3) and layout.cell >= CELL_FLOOR
    keys = JobKeys(f"j{job_id}", bw.world.job(job_id).output_name)
    for epoch in (1, 2, 3):
        for row in (0, 1):
            sample = Image.open(io.BytesIO(bw.world.store.get_bytes(keys.sample(epoch, row)) or b""))
            cell = sheet.crop(layout.cell_box(epoch, row))
            assert _mean_difference(cell, fit_cell(sample, layout.cell)) == 0, (epoch, row)
        other = Image.open(io.BytesIO(bw.world.store.get_bytes(keys.sample(epoch % 3 + 1, 0)) or b""))
        assert _mean_difference(sheet.crop(layout.cell_box(epoch, 0)), fit_cell(other, layout.cell)) > 1

    # Refusals, each with its reason, and nothing changes.
    stranger = bw.fake.add_user("mallory")
    assert f"Only the person who started `j{job_id}` (or an admin) can pick" in await _pick(
        bw, final, job_id, "2", stranger
    )
    assert f"`j{job_id}` has epochs 1 to 3; there is no epoch 7" in await _pick(bw, final, job_id, "7")
    bw.world.store.delete(keys.checkpoint(1))
    assert f"epoch 1's checkpoint of `j{job_id}` is no longer in the store" in await _pick(bw, final, job_id, "1")
    assert bw.world.job(job_id).picked_epoch is None

    # The owner picks epoch 2: the thread says who chose what, and the summary's link is epoch 2's checkpoint.
    owner = bw.fake.default_user
    assert "Epoch 2 is now the result" in await _pick(bw, final, job_id, "2")
    said = await bw.wait_for_thread_message(thread, lambda m: "chose **epoch 2**" in m.text())
    assert f"<@{owner.id}>" in said.text()
    await bw.fake.wait_for(lambda: "Result: epoch 2 of 3" in final.text(), timeout=15, what="the summary redrawn")
    epoch2 = bw.world.store.get_bytes(keys.checkpoint(2), 64 * 1024 * 1024)
    assert epoch2 is not None
    link = re.search(r"\[Download the LoRA\]\((\S+?)\)", final.text())
    assert link is not None and urllib.request.urlopen(link.group(1), timeout=10).read() == epoch2
    assert final.component(f"lorabot:job:{job_id}:pick") is not None

    async def lora_default_is_epoch_two() -> None:
        text = await _ask(bw, "lora", {"job": f"j{job_id}"})
        assert "epoch 2 of 3 (picked by" in text, text
        url = re.search(r"\[download\]\((\S+?)\)", text)
        assert url is not None and urllib.request.urlopen(url.group(1), timeout=10).read() == epoch2

    await lora_default_is_epoch_two()
    assert "Result: epoch 2 of 3 (picked by" in await _ask(bw, "cost", {"job": f"j{job_id}"})

    # A restart keeps the pick, and the menu on the final message still answers.
    await bw.restart()
    await lora_default_is_epoch_two()
    assert "Epoch 2 is now the result" in await _pick(bw, final, job_id, "2")
    assert bw.world.job(job_id).picked_epoch == 2
    assert len(_sheet_messages(bw, thread)) == 1


async def test_sheets_stay_under_the_guilds_attachment_limit(bot_world: BotWorld) -> None:
    """A guild whose interactions report a small upload limit gets sheets under it: lossy, smaller or split, never
    over the limit and never under the readable cell size."""
    bw = bot_world
    plan = await bw.train(
        dataset_zip(12, size=512), name="tight", epochs=4, repeats=1, trigger="kana", class_word="1girl"
    )
    thread = await bw.confirm(plan)
    job_id = bw.latest_job_id()
    limit = 800_000  # the epoch galleries (two 512 px PNGs) still fit; a 4-epoch PNG sheet does not
    bw.fake.set_attachment_size_limit(limit)
    await _ask(bw, "status", {"job": f"j{job_id}"})  # an interaction tells the bot the guild's new limit
    await bw.wait_for_status(job_id, lambda s: s.is_terminal(), timeout=150)
    await _sheets_settled(bw, job_id)

    sheets = _sheet_messages(bw, thread)
    assert sheets and bw.world.job(job_id).contact_sheet_message_ids == [m.id for m in sheets]
    heights: list[int] = []
    formats: list[str | None] = []
    for message in sheets:
        [upload] = message.files
        data = upload.read_bytes()
        assert len(data) <= limit
        image = Image.open(io.BytesIO(data))
        assert max(image.size) <= 4096
        heights.append(image.size[1])
        formats.append(image.format)
    # Two prompt rows of at least the floor each (plus labels): the sheet was split, not shrunk into thumbnails.
    assert min(heights) >= 2 * CELL_FLOOR
    assert "PNG" not in formats, "a PNG of 4 epochs is over the limit: a lossy encoding had to be chosen"
    shown = [re.search(r"contact sheet(?: \((\d+)/(\d+)\))?", m.content) for m in sheets]
    assert all(s is not None for s in shown)
