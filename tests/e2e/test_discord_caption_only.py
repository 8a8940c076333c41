"""/caption alone, end to end: the real bot and fake Discord, the RunPod emulator whose CPU pod runs the agent and
the (stand-in) WD14 tagger, moto S3. The plan prices a CPU stage only and waits for Confirm; the job rents one CPU
pod and never a GPU, answers with the captions, the captioned zip and an Edit captions button, and ends with zero
pods and its cost lines."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import socket
import urllib.request
from typing import Any

import pytest

from jobs.captions import WD14_REPO
from jobs.ledger import format_usd, job_cost
from jobs.queue import JobPlan
from jobs.states import JobStatus, NoticeKind, PodRole
from storage.db import session_scope
from storage.models import Job
from storage.queries import record_dataset
from tests.agent.world import standin_hub
from tests.e2e.test_discord_captions import captionless_zip
from tests.world.money import assert_ledger_matches_runpod
from tests.world.wd14_model import tiny_wd14_onnx

pytestmark = pytest.mark.timeout(180)
EDITOR_LINK = re.compile(r"(http://127\.0\.0\.1:\d+/captions\?\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def editor_env() -> dict[str, str]:
    port = free_port()
    return {"LORABOT_HTTP_PORT": str(port), "LORABOT_PUBLIC_URL": f"http://127.0.0.1:{port}"}


async def test_caption_alone_rents_one_cpu_pod_and_answers_with_the_zip_and_the_editor(make_bot_world: Any) -> None:
    standin_hub().repos[WD14_REPO]["model.onnx"] = tiny_wd14_onnx()
    async with make_bot_world(env=editor_env()) as bw:
        interaction = await bw.fake.send_slash(
            "caption", {"dataset": ("kana.zip", captionless_zip(5)), "trigger": "kana", "class_word": "girl"}
        )
        plan = await bw.fake.wait_for_reply(interaction, timeout=30)
        text = plan.text()
        assert "Captioning plan for" in plan.content, text
        assert "5 of 5 image(s) tagged by sd-scripts' WD14 tagger" in text and "No GPU is rented" in text
        assert re.search(r"GPU pod\s+\$0\.00", text) and re.search(r"CPU pod\s+\$0\.0\d", text), text
        confirm = next(c for c in plan.custom_ids() if c.endswith(":confirm"))
        assert plan.component(confirm)["label"] == "Confirm and caption"
        assert bw.world.emulator.all_pods() == [], "nothing is rented before Confirm"

        thread = await bw.confirm(plan)
        job_id = bw.latest_job_id()
        assert JobPlan.from_json(bw.world.job(job_id).plan_json).caption_only
        await bw.wait_for_status(job_id, lambda s: s.is_terminal())
        assert bw.world.status(job_id) is JobStatus.SUCCEEDED, bw.world.describe()

        # One CPU pod, never a GPU; every pod gone; the ledger has its CPU and volume lines and nothing for a GPU.
        assert [p.role for p in bw.world.pods(job_id)] == [PodRole.CPU]
        assert all(p.gpu_type_id is None for p in bw.world.emulator.all_pods())
        assert bw.world.running_pods() == []
        [done_notice] = bw.world.notices(job_id, NoticeKind.SUCCEEDED)
        cost = done_notice.payload_json["cost"]
        assert cost["cpu_pod_micros"] > 0 and cost["volume_micros"] > 0 and cost["gpu_pod_micros"] == 0

        shown = await bw.wait_for_thread_message(thread, lambda m: "captions written" in m.text())
        assert "Tag frequencies" in shown.text() and "tagged 5 of 5" in shown.text()
        link = re.search(r"\[download the zip\]\((\S+?)\)", shown.text())
        sha = re.search(r"dataset_from:sha256:([0-9a-f]{64})", shown.text())
        assert link is not None and sha is not None
        body = urllib.request.urlopen(link.group(1), timeout=10).read()
        assert hashlib.sha256(body).hexdigest() == sha.group(1)
        assert f"lorabot:dataset:{sha.group(1)}:edit" in shown.custom_ids()

        final = await bw.wait_for_thread_message(thread, lambda m: "captions done" in m.text())
        assert "your captions are ready" in final.content and "Cost" in final.text()
        assert re.search(r"Total\s+<?\$0\.\d\d", final.text()), final.text()

        # The owner's Edit captions: a one-time editor link, for them only.
        click = await bw.fake.click(final, f"lorabot:dataset:{sha.group(1)}:edit")
        reply = await bw.fake.wait_for_reply(click, timeout=10)
        assert reply.ephemeral
        editor = EDITOR_LINK.search(reply.content)
        assert editor is not None, reply.content
        # The bot's web server runs on this event loop: fetch from a thread.
        page = await asyncio.to_thread(lambda: urllib.request.urlopen(editor.group(1), timeout=10).read().decode())
        assert "Edit captions" in page and page.count('"path"') == 5

        # Someone else pressing it gets no link.
        other = await bw.fake.click(final, f"lorabot:dataset:{sha.group(1)}:edit", user=bw.fake.add_user("eve"))
        refused = await bw.fake.wait_for_reply(other, timeout=10)
        assert "Only the owner" in refused.content and not EDITOR_LINK.search(refused.content)

        # /edit_captions: the same link for any stored dataset of the user's, by hash or by job; nobody else's.
        for value in (f"sha256:{sha.group(1)}", f"j{job_id}"):
            asked = await bw.fake.send_slash("edit_captions", {"dataset": value})
            answer = await bw.fake.wait_for_reply(asked, timeout=10)
            assert answer.ephemeral and EDITOR_LINK.search(answer.content), answer.content
        asked = await bw.fake.send_slash(
            "edit_captions", {"dataset": f"sha256:{sha.group(1)}"}, user=bw.fake.add_user("eve")
        )
        answer = await bw.fake.wait_for_reply(asked, timeout=10)
        assert "not one of yours" in answer.content and not EDITOR_LINK.search(answer.content)


async def test_without_a_public_url_the_editor_says_what_it_needs(make_bot_world: Any) -> None:
    async with make_bot_world() as bw:
        sha = "a" * 64
        with session_scope(bw.world.sessions) as s:
            record_dataset(
                s,
                sha256=sha,
                size=1,
                owner_user_id=bw.fake.default_user.id,
                image_count=1,
                report={},
                store_key=f"datasets/{sha}.zip",
                now=bw.world.now(),
            )
        asked = await bw.fake.send_slash("edit_captions", {"dataset": f"sha256:{sha}"})
        answer = await bw.fake.wait_for_reply(asked, timeout=10)
        assert answer.ephemeral and "The caption editor is off: it needs `LORABOT_PUBLIC_URL`" in answer.content


async def test_caption_refuses_a_dataset_with_nothing_to_tag_before_any_button(make_bot_world: Any) -> None:
    async with make_bot_world() as bw:
        interaction = await bw.fake.send_slash(
            "caption", {"dataset": ("kana.zip", captionless_zip(3, captioned=3)), "trigger": "kana"}
        )
        reply = await bw.fake.wait_for_reply(interaction, timeout=30)
        assert "every image already has a caption" in reply.text() and "captions: auto" in reply.text()
        assert reply.custom_ids() == [] and bw.world.emulator.all_pods() == []


async def test_a_caption_plan_offered_before_a_restart_is_still_caption_only(make_bot_world: Any) -> None:
    """Confirm outlives the bot: the rebuilt plan is the /caption one (CPU only), not a training plan."""
    standin_hub().repos[WD14_REPO]["model.onnx"] = tiny_wd14_onnx()
    async with make_bot_world() as bw:
        interaction = await bw.fake.send_slash(
            "caption", {"dataset": ("kana.zip", captionless_zip(3)), "trigger": "kana", "class_word": "girl"}
        )
        plan = await bw.fake.wait_for_reply(interaction, timeout=30)
        await bw.restart()
        await bw.confirm(plan)
        job_id = bw.latest_job_id()
        assert JobPlan.from_json(bw.world.job(job_id).plan_json).caption_only
        await bw.wait_for_status(job_id, lambda s: s.is_terminal())
        assert bw.world.status(job_id) is JobStatus.SUCCEEDED, bw.world.describe()
        assert [p.role for p in bw.world.pods(job_id)] == [PodRole.CPU] and bw.world.running_pods() == []


async def test_an_expired_caption_plan_says_to_run_caption_again(make_bot_world: Any) -> None:
    """Kept in memory past its 30 minutes, or already swept away: either way the user is told the command that made
    it, /caption, and nothing is queued."""
    async with make_bot_world() as bw:
        for forgotten in (False, True):
            interaction = await bw.fake.send_slash(
                "caption", {"dataset": ("kana.zip", captionless_zip(3)), "trigger": "kana", "class_word": "girl"}
            )
            plan = await bw.fake.wait_for_reply(interaction, timeout=30)
            confirm = next(c for c in plan.custom_ids() if c.endswith(":confirm"))
            token = confirm.split(":")[2]
            pending = bw.bot.plans[token]
            pending.created_at -= dt.timedelta(minutes=31)
            if forgotten:
                bw.bot.sweep_plans()
                assert token not in bw.bot.plans and not pending.prepared.workdir.exists()
            await bw.fake.click(plan, confirm)
            message = bw.fake.world.messages[plan.id]
            expired = await bw.fake.wait_for(lambda m=message: "expired" in m.content and m, timeout=10)
            assert "run /caption again" in expired.content and "/train" not in expired.content
            assert expired.custom_ids() == []
        with session_scope(bw.world.sessions) as s:
            assert s.query(Job).count() == 0


async def test_the_caption_estimate_counts_the_environment_only_when_the_volume_lacks_it(
    make_bot_world: Any,
) -> None:
    """The first /caption on a fresh volume builds the environment (about 25 minutes of CPU pod); once that job has
    left it on the volume, the next /caption's estimate is pod start, dataset and tagging: minutes and cents."""
    standin_hub().repos[WD14_REPO]["model.onnx"] = tiny_wd14_onnx()
    async with make_bot_world() as bw:

        async def caption_plan(images: int) -> Any:
            asked = await bw.fake.send_slash(
                "caption", {"dataset": ("kana.zip", captionless_zip(images)), "trigger": "kana", "class_word": "girl"}
            )
            return await bw.fake.wait_for_reply(asked, timeout=30)

        def cpu_stage_s(text: str) -> int:
            found = re.search(r"CPU stage about (?:(\d+) h )?(?:(\d+) min )?(\d+) s", text)
            assert found is not None, text
            hours, minutes, seconds = (int(part or 0) for part in found.groups())
            return hours * 3600 + minutes * 60 + seconds

        cold = await caption_plan(3)
        assert "environment build 25 min 00 s (the volume does not hold it yet)" in cold.text(), cold.text()
        assert cpu_stage_s(cold.text()) > 25 * 60
        await bw.confirm(cold)
        first = bw.latest_job_id()
        await bw.wait_for_status(first, lambda s: s.is_terminal())
        assert bw.world.status(first) is JobStatus.SUCCEEDED, bw.world.describe()

        warm = await caption_plan(4)
        assert "environment already on the volume" in warm.text() and "environment build" not in warm.text()
        assert cpu_stage_s(warm.text()) < 10 * 60, warm.text()
        assert re.search(r"CPU pod\s+<\$0\.01", warm.text()), warm.text()
        # The queued job carries the estimate shown (the budget check reads it), not the cold one.
        await bw.confirm(warm)
        second = bw.latest_job_id()
        cold_plan = JobPlan.from_json(bw.world.job(first).plan_json)
        warm_plan = JobPlan.from_json(bw.world.job(second).plan_json)
        assert sum(warm_plan.estimate_micros.values()) < sum(cold_plan.estimate_micros.values()) / 3
        await bw.wait_for_status(second, lambda s: s.is_terminal())
        assert bw.world.status(second) is JobStatus.SUCCEEDED and bw.world.running_pods() == []


async def test_cancel_while_the_caption_pod_runs_leaves_zero_pods_and_says_the_cost(make_bot_world: Any) -> None:
    """/cancel in Discord on a /caption job whose CPU pod is up: the pod is terminated at once, the job is
    cancelled (no captions stored, never a GPU), and the reply and the thread give its final cost."""
    standin_hub().repos[WD14_REPO]["model.onnx"] = tiny_wd14_onnx()
    async with make_bot_world() as bw:
        asked = await bw.fake.send_slash(
            "caption", {"dataset": ("kana.zip", captionless_zip(12)), "trigger": "kana", "class_word": "girl"}
        )
        thread = await bw.confirm(await bw.fake.wait_for_reply(asked, timeout=30))
        job_id = bw.latest_job_id()
        await bw.fake.wait_for(lambda: bw.world.running_pods(), timeout=60, what="the CPU pod to run")
        assert bw.world.status(job_id) is JobStatus.PREPARING, bw.world.describe()

        asked = await bw.fake.send_slash("cancel", {"job": f"j{job_id}"})
        reply = await bw.fake.wait_for_reply(asked, timeout=20)
        assert bw.world.running_pods() == [] and bw.world.status(job_id) is JobStatus.CANCELLED, reply.text()
        assert [p.role for p in bw.world.pods(job_id)] == [PodRole.CPU]
        assert all(p.gpu_type_id is None for p in bw.world.emulator.all_pods())
        with session_scope(bw.world.sessions) as s:
            cost = job_cost(s, job_id, now=bw.world.now())
        assert cost.gpu_pod_micros == 0 and cost.cpu_pod_micros > 0 and not cost.live
        assert f"Cancelled `j{job_id}`" in reply.content and format_usd(cost.total_micros) in reply.content
        cancelled = await bw.wait_for_thread_message(thread, lambda m: "cancelled" in m.text())
        assert "Final cost" in cancelled.text() and format_usd(cost.total_micros) in cancelled.text()
        assert bw.world.notices(job_id, NoticeKind.CAPTIONS) == []
        assert bw.world.notices(job_id, NoticeKind.SUCCEEDED) == []
        assert_ledger_matches_runpod(bw.world, job_id)
