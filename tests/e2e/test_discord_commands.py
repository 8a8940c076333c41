"""/train's refusals and dataset sources, autocomplete, the job buttons, /lora, /status, /retry and /cost,
with the real bot against the fake Discord and the lorabot world."""

from __future__ import annotations

import hashlib
import re
import urllib.request
from typing import Any

import aiohttp
import pytest

from jobs.ledger import format_usd, job_cost, month_of, volumes_month_cost
from jobs.states import JobStatus
from storage.db import session_scope
from tests.world.fake_discord import FakeDiscord
from tests.world.fixtures_bot import BotWorld, MakeBotWorld
from tests.world.lorabot_world import dataset_zip

pytestmark = pytest.mark.timeout(180)
OPTS: dict[str, Any] = {"epochs": 2, "repeats": 1, "trigger": "kana", "class_word": "1girl"}


async def test_train_needs_exactly_one_dataset_source(bot_world: BotWorld) -> None:
    bw = bot_world
    none = await bw.train(None, name="x")
    assert "Give the dataset one way" in none.content and none.ephemeral
    two = await bw.train(dataset_zip(2, size=64), name="x", dataset_from="j1")
    assert "Give only one dataset source; you gave `dataset` and `dataset_from`" in two.content
    assert bw.fake.threads == []


async def test_train_refuses_a_dm_a_missing_role_a_non_zip_and_a_bad_dataset(
    make_bot_world: MakeBotWorld, fake_discord: FakeDiscord
) -> None:
    trainer = fake_discord.add_user("tina", roles=["trainers"])  # before the bot connects: its cache knows the role
    async with make_bot_world(env={"DISCORD_TRAIN_ROLES": '["trainers"]'}) as bw:
        dm = await bw.fake.send_slash("train", {"name": "x", "dataset": ("a.zip", b"PK")}, guild=False)
        assert "not in direct messages" in (await bw.fake.wait_for_reply(dm)).content

        refused = await bw.train(dataset_zip(2, size=64), name="x")
        assert "Training needs one of these roles: `trainers`" in refused.content

        asked = await bw.fake.send_slash("train", {"name": "x", "dataset": ("photos.rar", b"Rar!")}, user=trainer)
        assert "is not a .zip" in (await bw.fake.wait_for_reply(asked, timeout=10)).content

        asked = await bw.fake.send_slash("train", {"name": "x", "dataset": ("empty.zip", _zip_of_text())}, user=trainer)
        reply = await bw.fake.wait_for_reply(asked, timeout=10)
        assert "The dataset was refused" in reply.content and "no JPEG, PNG or WEBP images" in reply.content
    assert not list((bw.runtime.workdir).iterdir()), "refused uploads leave nothing on disk"


def _zip_of_text() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("notes.txt", "no images here")
    return buffer.getvalue()


async def test_attachment_over_the_cap_is_refused_before_download(make_bot_world: MakeBotWorld) -> None:
    async with make_bot_world(env={"DISCORD_MAX_ATTACHMENT_MB": "1"}) as bw:
        big = dataset_zip(2, size=64) + b"\0" * (2 * 1024 * 1024)
        reply = await bw.train(big, name="x")
        assert "the limit here is 1 MiB" in reply.content
        cdn = [r for r in bw.fake.requests if r.path.startswith("/attachments/")]
        assert cdn == [], "the bot refused from the declared size without downloading"


async def test_dataset_from_an_earlier_job_reuses_the_stored_dataset(bot_world: BotWorld) -> None:
    bw = bot_world
    first = await bw.train(dataset_zip(5, size=256), name="first", **OPTS)
    await bw.confirm(first)
    first_id = bw.latest_job_id()
    await bw.wait_for_status(first_id, lambda s: s.is_terminal())
    uploads_before = [
        r for r in bw.world.store.request_log() if r.key.startswith("datasets/") and "put" in r.operation.lower()
    ]

    choices = await bw.fake.autocomplete("train", {"name": "again", "dataset_from": "fir"}, focused="dataset_from")
    assert [c["value"] for c in choices] == [f"j{first_id}"]
    second = await bw.train(None, name="again", dataset_from=f"j{first_id}", epochs=1, repeats=1, trigger="kana")
    assert "reusing a stored dataset" in second.content and "5 images" in second.text()
    await bw.confirm(second)
    second_id = bw.latest_job_id()
    await bw.wait_for_status(second_id, lambda s: s.is_terminal())

    assert bw.world.status(second_id) is JobStatus.SUCCEEDED, bw.world.job(second_id).failure_reason
    assert bw.world.job(second_id).dataset_sha256 == bw.world.job(first_id).dataset_sha256
    uploads_after = [
        r for r in bw.world.store.request_log() if r.key.startswith("datasets/") and "put" in r.operation.lower()
    ]
    assert len(uploads_after) == len(uploads_before) == 1

    mallory = bw.fake.add_user("mallory")
    stolen = await bw.fake.send_slash("train", {"name": "steal", "dataset_from": f"j{first_id}"}, user=mallory)
    assert "is not a job of yours" in (await bw.fake.wait_for_reply(stolen, timeout=10)).content


async def test_base_model_autocomplete_offers_the_catalog(bot_world: BotWorld) -> None:
    choices = await bot_world.fake.autocomplete("train", {"name": "x", "base_model": "pony"}, focused="base_model")
    assert [c["value"] for c in choices] == ["pony-v6"]


async def test_epoch_button_lora_status_cost_and_retry(bot_world: BotWorld) -> None:
    bw = bot_world
    plan = await bw.train(dataset_zip(4, size=256), name="buttons", **OPTS)
    thread = await bw.confirm(plan)
    job_id = bw.latest_job_id()
    await bw.wait_for_status(job_id, lambda s: s.is_terminal())
    final = await bw.wait_for_thread_message(thread, lambda m: "done" in m.text())

    click = await bw.fake.click(final, f"lorabot:job:{job_id}:epoch:1")
    await bw.fake.wait_for_response(click)
    answer = await bw.fake.wait_for(lambda: click.followups and click.followups[-1], what="the epoch link")
    link = re.search(r"\]\((\S+?)\)", answer.content)
    assert answer.ephemeral and link is not None and "epoch 1" in answer.content
    body = urllib.request.urlopen(link.group(1), timeout=10).read()
    key = f"jobs/j{job_id}/epochs/000001/kana-000001.safetensors"
    assert hashlib.sha256(body).hexdigest() == bw.world.store.sha256_of(key)

    lora = await bw.fake.wait_for_reply(await bw.fake.send_slash("lora", {"job": f"j{job_id}", "epoch": 9}))
    assert "has epochs 1 to 2; there is no epoch 9" in lora.content

    status = await bw.fake.wait_for_reply(await bw.fake.send_slash("status", {}))
    assert f"`j{job_id}` buttons" in status.content and "succeeded" in status.content

    with session_scope(bw.world.sessions) as s:
        total = job_cost(s, job_id, now=bw.world.now()).total_micros
    mine = await bw.fake.wait_for_reply(await bw.fake.send_slash("cost", {}))
    assert format_usd(total) in mine.text() and "Budget left" in mine.text()
    # The volume outlives the job: its whole month is shown beside the job's share of it.
    with session_scope(bw.world.sessions) as s:
        volumes = volumes_month_cost(s, month_of(bw.world.now()), now=bw.world.now())
    assert volumes.kept_micros >= volumes.jobs_share_micros > 0
    assert f"Network Volume ({bw.world.orchestrator.config.volume_size_gb} GB)" in mine.text()
    assert "Between jobs" in mine.text() and "Team, all in" in mine.text()
    bad_month = await bw.fake.wait_for_reply(await bw.fake.send_slash("cost", {"month": "May"}))
    assert "is not a month" in bad_month.content

    retry = await bw.fake.wait_for_reply(await bw.fake.send_slash("retry", {"job": f"j{job_id}"}))
    assert "only failed or cancelled jobs can be retried" in retry.content


async def test_dataset_url_goes_through_the_link_guard(bot_world: BotWorld) -> None:
    """Links are fetched by jobs.fetch; its SSRF guard refuses the bot's own machine with a clear message."""
    reply = await bot_world.train(None, name="linked", dataset_url="https://127.0.0.1:9/dataset.zip")
    assert "Not planned" in reply.content and "only downloads from the public internet" in reply.content
    assert not list(bot_world.runtime.workdir.iterdir())


async def test_plan_buttons_belong_to_the_planner_and_the_job_limit_holds(make_bot_world: MakeBotWorld) -> None:
    async with make_bot_world(env={"LORABOT_MAX_JOBS_PER_USER": "1"}) as bw:
        first = await bw.train(dataset_zip(3, size=128), name="one", **OPTS)
        second = await bw.train(dataset_zip(3, size=128), name="two", **OPTS)

        bob = bw.fake.add_user("bob")
        confirm_id = next(c for c in first.custom_ids() if c.endswith(":confirm"))
        stranger = await bw.fake.click(first, confirm_id, user=bob)
        await bw.fake.wait_for_response(stranger)
        assert stranger.response is not None and "Only the person who asked" in str(stranger.response.data)

        thread = await bw.confirm(first)
        job_id = bw.latest_job_id()
        second_confirm = next(c for c in second.custom_ids() if c.endswith(":confirm"))
        await bw.fake.wait_for_response(await bw.fake.click(second, second_confirm))
        await bw.fake.wait_for(lambda: "Not queued" in second.content, what="the limit refusal")
        assert "the limit is 1" in second.content and bw.latest_job_id() == job_id

        plan_in_thread = await bw.wait_for_thread_message(thread, lambda m: "Plan: one" in m.text())
        click = await bw.fake.click(plan_in_thread, f"lorabot:job:{job_id}:cancel")
        await bw.fake.wait_for_response(click)
        answer = await bw.fake.wait_for(lambda: click.followups and click.followups[-1], what="the cancel answer")
        assert f"j{job_id}" in answer.content and answer.ephemeral
        await bw.wait_for_status(job_id, lambda s: s is JobStatus.CANCELLED, timeout=30)
        assert bw.world.running_pods() == []


async def test_upload_page_link_report_and_plan_button(make_bot_world: MakeBotWorld) -> None:
    port = _free_port()
    env = {"LORABOT_HTTP_PORT": str(port), "LORABOT_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    async with make_bot_world(env=env) as bw:
        asked = await bw.fake.send_slash("upload", {})
        answer = await bw.fake.wait_for_reply(asked)
        link = re.search(r"(http://127\.0\.0\.1:\d+/upload\?\S+)", answer.content)
        assert answer.ephemeral and link is not None

        async with aiohttp.ClientSession() as session, session.put(link.group(1), data=dataset_zip(6, 128)) as resp:
            assert resp.status == 200, await resp.text()

        report = await bw.fake.wait_for_message(lambda m: "Dataset uploaded: 6 images" in m.text(), timeout=20)
        button = next(c for c in report.custom_ids() if c.startswith("lorabot:dataset:"))
        stranger = await bw.fake.click(report, button, user=bw.fake.add_user("eve"))
        await bw.fake.wait_for_response(stranger)
        assert "Only the person who uploaded" in str(stranger.response.data if stranger.response else "")

        click = await bw.fake.click(report, button)
        plan = await bw.fake.wait_for(lambda: click.followups and click.followups[-1], timeout=20, what="the plan")
        assert "reusing a stored dataset" in plan.content and "6 images" in plan.text()
        assert any(c.endswith(":confirm") for c in plan.custom_ids())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
