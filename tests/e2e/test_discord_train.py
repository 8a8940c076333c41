"""/train end to end: the real discord.py bot, the fake Discord, the RunPod emulator with real agent pods, moto S3."""

from __future__ import annotations

import hashlib
import re
import urllib.request

import pytest

from jobs.ledger import format_usd, job_cost
from jobs.states import JobStatus
from storage.db import session_scope
from tests.world.fixtures_bot import BotWorld
from tests.world.lorabot_world import dataset_zip

pytestmark = pytest.mark.timeout(180)


async def test_train_plan_confirm_thread_epochs_links_and_cost(bot_world: BotWorld) -> None:
    bw = bot_world
    plan = await bw.train(
        dataset_zip(20, size=512), name="kana", epochs=3, repeats=1, trigger="kana", class_word="1girl"
    )

    assert "Plan for **kana**" in plan.content, plan.text()
    assert "Dataset" in plan.text() and "Estimated cost" in plan.text() and "20 images" in plan.text()
    assert [c for c in plan.custom_ids() if c.startswith("lorabot:plan:")], plan.components

    thread = await bw.confirm(plan)
    job_id = bw.latest_job_id()
    assert (thread.name or "").startswith(f"j{job_id}")

    await bw.wait_for_status(job_id, lambda s: s.is_terminal())
    assert bw.world.status(job_id) is JobStatus.SUCCEEDED, bw.world.describe()
    final = await bw.wait_for_thread_message(thread, lambda m: "done" in m.text() and "Download" in m.text())

    messages = bw.fake.messages_in(thread)
    texts = [m.text() for m in messages]
    assert "Plan: kana" in texts[0] and "Dataset" in texts[0]
    galleries = [m for m in messages if re.search(r"epoch \d/3", m.text())]
    assert [re.search(r"epoch (\d)/3", m.text()).group(1) for m in galleries] == ["1", "2", "3"]  # type: ignore[union-attr]
    for gallery in galleries:
        assert gallery.files and all(f.filename.endswith(".png") for f in gallery.files)
        assert gallery.files[0].read_bytes().startswith(b"\x89PNG")
    assert final is messages[-1]

    # The final link downloads the very bytes the pod uploaded (sha256 from the SUCCEEDED notice).
    link = re.search(r"\[Download the LoRA\]\((\S+?)\)", final.text())
    assert link is not None
    body = urllib.request.urlopen(link.group(1), timeout=10).read()
    sha = re.search(r"sha256 `([0-9a-f]{64})`", final.text())
    assert sha is not None and hashlib.sha256(body).hexdigest() == sha.group(1)
    assert any(c.endswith(":epoch:2") for c in final.custom_ids())

    with session_scope(bw.world.sessions) as s:
        total = job_cost(s, job_id, now=bw.world.now()).total_micros
    assert format_usd(total) in final.text()

    asked = await bw.fake.send_slash("cost", {"job": f"j{job_id}"})
    cost_reply = await bw.fake.wait_for_reply(asked)
    assert f"Total{' ' * 1}" in cost_reply.text() and format_usd(total) in cost_reply.text()
    assert bw.world.running_pods() == []
