"""An epoch's gallery always fits the server's upload limit: samples that would pass it are re-encoded (or left out
and named), so Discord never refuses the message and the job's later notices are never held behind it."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from jobs.gallery_fit import fit_gallery
from jobs.states import NoticeKind
from storage.db import session_scope
from storage.queries import list_notices_for_job
from tests.world.fixtures_bot import BotWorld
from tests.world.lorabot_world import dataset_zip

pytestmark = pytest.mark.timeout(240)


def _noisy_png(side: int, seed: int) -> bytes:
    image = Image.effect_noise((side, side), 80 + seed).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_samples_under_the_limit_go_as_drawn() -> None:
    samples = [(f"epoch01-sample{i:02d}", _noisy_png(64, i)) for i in range(3)]
    fitted = fit_gallery(samples, 10 * 1024 * 1024)
    assert fitted.files == [(f"{name}.png", data) for name, data in samples]
    assert fitted.note(10 * 1024 * 1024) is None


def test_six_large_samples_are_re_encoded_to_share_the_limit() -> None:
    samples = [(f"epoch01-sample{i:02d}", _noisy_png(1024, i)) for i in range(6)]
    limit = 2 * 1024 * 1024
    assert sum(len(d) for _, d in samples) > limit
    fitted = fit_gallery(samples, limit)
    assert sum(len(d) for _, d in fitted.files) <= limit
    assert [name.rsplit(".", 1)[0] for name, _ in fitted.files] == [name for name, _ in samples]
    assert fitted.changed == 6 and not fitted.left_out
    for name, data in fitted.files:
        assert Image.open(io.BytesIO(data)).format in ("WEBP", "JPEG") and not name.endswith(".png")
    assert "6 sample(s) re-encoded to fit this server's 2 MiB upload limit" in (fitted.note(limit) or "")


def test_a_sample_that_fits_in_no_encoding_is_left_out_and_named() -> None:
    samples = [("epoch01-sample00", _noisy_png(64, 1)), ("epoch01-sample01", b"not an image at all" * 10_000)]
    fitted = fit_gallery(samples, 90_000)
    assert [name for name, _ in fitted.files] == ["epoch01-sample00.png"] and fitted.left_out == ["epoch01-sample01"]
    assert sum(len(d) for _, d in fitted.files) <= 90_000
    assert "1 left out" in (fitted.note(90_000) or "")


async def test_a_small_upload_limit_still_gets_every_gallery_and_the_final_message(bot_world: BotWorld) -> None:
    bw = bot_world
    limit = 120_000  # below two of the stand-in's 512 px PNG samples
    plan = await bw.train(
        dataset_zip(6, size=512), name="small", epochs=2, repeats=1, trigger="kana", class_word="1girl"
    )
    bw.fake.set_attachment_size_limit(limit)
    thread = await bw.confirm(plan)  # the click is an interaction: it tells the bot the guild's limit
    job_id = bw.latest_job_id()
    await bw.wait_for_status(job_id, lambda s: s.is_terminal(), timeout=150)

    def all_sent() -> bool:
        with session_scope(bw.world.sessions) as s:
            return all(n.sent_at is not None for n in list_notices_for_job(s, job_id))

    await bw.fake.wait_for(all_sent, timeout=60, what="every notice of the job to be sent")
    galleries = [m for m in bw.fake.messages_in(thread) if any(f.filename.startswith("epoch") for f in m.files)]
    assert len(galleries) == 2
    for message in galleries:
        assert sum(len(f.read_bytes()) for f in message.files) <= limit
        assert "re-encoded to fit" in str(message.payload["embeds"])
    with session_scope(bw.world.sessions) as s:
        kinds = [n.kind for n in list_notices_for_job(s, job_id)]
    assert NoticeKind.SUCCEEDED in kinds
