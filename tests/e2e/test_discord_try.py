"""/try and the test window, end to end: the real bot, the fake Discord, the emulator's pods running the real agent's
serve stage with the stand-in generation script, and moto S3.

- Refusals name their reason and rent nothing: someone else's job, a job still training, an epoch it does not have,
  a deleted checkpoint, a prompt that passes an option, a budget the estimate would exceed.
- /try on epochs 1-3 shows an estimate, then (confirmed) posts a grid whose cells are the images of their row's
  prompt and their column's epoch, and adds a try line to /cost; a second /try right after shares the pod.
- A test window keeps the training pod up, answers /try on it, and closes by time, by its button, by /cancel and
  after a restart, each time with no pod left and a final line with its cost.
The world's teardown checks the ledger against RunPod's bill and that no pod is left.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence

import pytest
from PIL import Image

from jobs.ledger import format_usd, job_cost, month_of
from jobs.manifest import JobKeys
from jobs.states import JobStatus, PodRole, PodStatus, TryStatus
from jobs.tryplan import cell_key
from storage.db import session_scope
from storage.models import Pod, TestWindow, TryRequest
from storage.queries import set_budget
from tests.world.fake_discord import MessageRecord
from tests.world.fake_discord.models import ChannelRecord
from tests.world.fixtures_bot import BotWorld, MakeBotWorld
from tests.world.lorabot_world import dataset_zip
from tests.world.money import assert_ledger_matches_runpod

pytestmark = pytest.mark.timeout(300)

PROMPTS = "kana smiling | kana angry"


async def _ask(bw: BotWorld, command: str, options: dict[str, object], user: object = None) -> MessageRecord:
    asked = await bw.fake.send_slash(command, options, user=user)  # type: ignore[arg-type]
    return await bw.fake.wait_for_reply(asked, timeout=30)


async def _trained(bw: BotWorld, name: str, **options: object) -> tuple[ChannelRecord, int]:
    plan = await bw.train(
        dataset_zip(6, size=512), name=name, epochs=3, repeats=1, trigger="kana", class_word="1girl", **options
    )
    if options.get("test_window"):
        assert f"Test window: the GPU pod stays up {options['test_window']} min after training" in plan.text()
    thread = await bw.confirm(plan)
    return thread, bw.latest_job_id()


def _pods(bw: BotWorld, job_id: int, role: PodRole) -> list[Pod]:
    return [p for p in bw.world.pods(job_id) if p.role is role]


def _requests(bw: BotWorld, job_id: int) -> list[TryRequest]:
    with session_scope(bw.world.sessions) as s:
        rows = s.query(TryRequest).filter(TryRequest.job_id == job_id).order_by(TryRequest.id).all()
        for row in rows:
            s.expunge(row)
        return rows


def _window(bw: BotWorld, job_id: int) -> TestWindow | None:
    with session_scope(bw.world.sessions) as s:
        window = s.query(TestWindow).filter(TestWindow.job_id == job_id).one_or_none()
        if window is not None:
            s.expunge(window)
        return window


async def _confirm(bw: BotWorld, estimate: MessageRecord) -> str:
    [confirm] = [c for c in estimate.custom_ids() if c.endswith(":confirm")]
    click = await bw.fake.click(estimate, confirm)
    return (await bw.fake.wait_for_reply(click, timeout=30)).text()


async def _grid(bw: BotWorld, thread: ChannelRecord, tid: str) -> MessageRecord:
    return await bw.wait_for_thread_message(thread, lambda m: f"/try `{tid}`" in m.text() and bool(m.files), 120)


def _checkpoint_sha(bw: BotWorld, job_id: int, epoch: int) -> str:
    import hashlib

    keys = JobKeys(f"j{job_id}", bw.world.job(job_id).output_name)
    data = bw.world.store.get_bytes(keys.checkpoint(epoch), 256 * 1024 * 1024)
    assert data is not None
    return hashlib.sha256(data).hexdigest()


def _assert_cells(bw: BotWorld, job_id: int, tid: str, prompts: Sequence[str], epochs: Sequence[int]) -> None:
    """Each cell in the bucket is the stand-in's image of its row's prompt (top band, PNG text) and its column's
    epoch LoRA (the sha256 the script applied), and each row and column differ from the others."""
    tops: dict[int, set[tuple[int, int, int]]] = {}
    bottoms: dict[int, set[tuple[int, int, int]]] = {}
    for epoch in epochs:
        sha = _checkpoint_sha(bw, job_id, epoch)
        for row, prompt in enumerate(prompts):
            data = bw.world.store.get_bytes(cell_key(f"j{job_id}", tid, epoch, row))
            assert data is not None, (epoch, row)
            image = Image.open(io.BytesIO(data))
            text = getattr(image, "text", {})
            assert text.get("prompt", "").startswith(prompt), (epoch, row, text.get("prompt"))
            networks = json.loads(text["lorabot-standin-networks"])
            assert [n[0] for n in networks] == [sha], (epoch, row)
            rgb = image.convert("RGB")
            tops.setdefault(row, set()).add(rgb.getpixel((1, 1)))  # type: ignore[arg-type]
            bottoms.setdefault(epoch, set()).add(rgb.getpixel((1, rgb.height - 2)))  # type: ignore[arg-type]
    assert all(len(colours) == 1 for colours in tops.values())  # one prompt per row
    assert all(len(colours) == 1 for colours in bottoms.values())  # one LoRA per column
    assert len({c for cs in tops.values() for c in cs}) == len(prompts)
    assert len({c for cs in bottoms.values() for c in cs}) == len(epochs)


def _grid_has_cells(grid: MessageRecord, bw: BotWorld, job_id: int, tid: str) -> None:
    """The posted grid (one PNG here) shows each cell where it belongs: the rows' prompt colours top to bottom in
    prompt order, the columns' LoRA colours left to right in epoch order (the stand-in's two bands per image)."""
    [upload] = grid.files
    image = Image.open(io.BytesIO(upload.read_bytes()))
    assert image.format == "PNG"
    rgb = image.convert("RGB")
    with session_scope(bw.world.sessions) as s:
        spec = s.query(TryRequest).filter(TryRequest.id == int(tid[1:])).one().spec_json
    epochs, rows = [int(e) for e in spec["epochs"]], range(len(spec["prompts"]))
    tops: dict[int, tuple[int, int, int]] = {}
    bottoms: dict[int, tuple[int, int, int]] = {}
    for epoch in epochs:
        for row in rows:
            data = bw.world.store.get_bytes(cell_key(f"j{job_id}", tid, epoch, row))
            assert data is not None
            cell = Image.open(io.BytesIO(data)).convert("RGB")
            tops[row] = cell.getpixel((1, 1))  # type: ignore[assignment]
            bottoms[epoch] = cell.getpixel((1, cell.height - 2))  # type: ignore[assignment]
    ys: dict[tuple[int, int, int], list[int]] = {colour: [] for colour in tops.values()}
    xs: dict[tuple[int, int, int], list[int]] = {colour: [] for colour in bottoms.values()}
    width = rgb.width
    for index, pixel in enumerate(rgb.getdata()):
        if pixel in ys:
            ys[pixel].append(index // width)
        if pixel in xs:
            xs[pixel].append(index % width)
    assert all(ys.values()) and all(xs.values()), "every row's and every column's colour is in the grid"
    row_y = [sum(ys[tops[row]]) / len(ys[tops[row]]) for row in rows]
    column_x = [sum(xs[bottoms[e]]) / len(xs[bottoms[e]]) for e in epochs]
    assert row_y == sorted(row_y) and column_x == sorted(column_x), (row_y, column_x)


async def test_refusals_then_try_on_epochs_1_to_3_and_a_second_try_on_the_same_pod(
    make_bot_world: MakeBotWorld,
) -> None:
    async with make_bot_world(try_linger_s=600) as bw:
        thread, job_id = await _trained(bw, "kana")
        public = f"j{job_id}"

        # Still training (or preparing): refused, nothing rented.
        early = (await _ask(bw, "try", {"job": public, "prompt": "kana smiling"})).text()
        assert re.search(rf"`{public}` is still (queued|preparing|training): /try works once it has finished", early)

        await bw.wait_for_status(job_id, lambda s: s.is_terminal(), timeout=180)
        assert bw.world.status(job_id) is JobStatus.SUCCEEDED, bw.world.describe()
        await bw.wait_for_thread_message(thread, lambda m: "Download" in m.text())

        # Refusals with their reasons; none of them creates a request that could rent anything.
        mallory = bw.fake.add_user("mallory")
        assert (
            f"Only the person who started `{public}` (or an admin) can /try it"
            in (await _ask(bw, "try", {"job": public, "prompt": "kana"}, user=mallory)).text()
        )
        assert (
            f"{public} has no checkpoint for epoch 7"
            in (await _ask(bw, "try", {"job": public, "prompt": "kana", "epochs": "7"})).text()
        )
        assert (
            "contains '--', which sd-scripts reads as an option"
            in (await _ask(bw, "try", {"job": public, "prompt": "kana smiling --n ugly"})).text()
        )
        with session_scope(bw.world.sessions) as s:
            set_budget(s, user_id=bw.fake.default_user.id, month=month_of(bw.world.now()), limit_micros=1)
        over = (await _ask(bw, "try", {"job": public, "prompt": "kana", "epochs": "1-3"})).text()
        assert "this /try (about $" in over and "over your budget of" in over and "nothing was rented" in over
        with session_scope(bw.world.sessions) as s:
            set_budget(s, user_id=bw.fake.default_user.id, month=month_of(bw.world.now()), limit_micros=10_000_000)
        assert _requests(bw, job_id) == [] and _pods(bw, job_id, PodRole.TRY) == []

        # An estimate dropped with its Cancel rents nothing.
        dropped = await _ask(bw, "try", {"job": public, "prompt": "kana"})
        [cancel] = [c for c in dropped.custom_ids() if c.endswith(":cancel")]
        click = await bw.fake.click(dropped, cancel)
        assert "dropped; nothing was rented" in (await bw.fake.wait_for_reply(click, timeout=30)).text()
        assert [r.status for r in _requests(bw, job_id)] == [TryStatus.DISMISSED]
        assert "is already dismissed" in await _confirm(bw, dropped)

        # The estimate first: start-up + generation + linger, nothing rented until Confirm.
        estimate = await _ask(bw, "try", {"job": public, "prompt": PROMPTS, "epochs": "1-3", "seed": 7})
        text = estimate.text()
        assert "2 prompts × epochs 1-3 = 6 images" in text and "Estimate: about **$" in text, text
        assert "GPU start-up ~" in text and "Nothing is rented until you confirm" in text
        assert _pods(bw, job_id, PodRole.TRY) == []
        before = job_cost_now(bw, job_id)
        assert "confirmed" in await _confirm(bw, estimate)

        grid = await _grid(bw, thread, "t2")
        [_, first] = _requests(bw, job_id)
        assert first.status is TryStatus.DONE and first.spec_json["seed"] == 7
        _assert_cells(bw, job_id, "t2", ["kana smiling", "kana angry"], [1, 2, 3])
        _grid_has_cells(grid, bw, job_id, "t2")
        assert "seed 7" in grid.text() and "strength 1" in grid.text()

        # /cost shows the try line; the GPU line did not move.
        cost = (await _ask(bw, "cost", {"job": public})).text()
        assert "Try / window" in cost, cost
        after = job_cost_now(bw, job_id)
        assert after.try_micros > 0 and after.gpu_pod_micros == before.gpu_pod_micros

        # A second /try right away shares the pod: no start-up in its estimate, one TRY pod in all.
        second = await _ask(bw, "try", {"job": public, "prompt": "kana surprised", "epochs": "2"})
        assert "on the GPU pod already serving" in second.text() and "GPU start-up" not in second.text()
        assert "confirmed" in await _confirm(bw, second)
        await _grid(bw, thread, "t3")
        _assert_cells(bw, job_id, "t3", ["kana surprised"], [2])
        assert len(_pods(bw, job_id, PodRole.TRY)) == 1

        # A deleted checkpoint is named as deleted, and nothing is rented for it.
        bw.world.store.delete(JobKeys(public, bw.world.job(job_id).output_name).checkpoint(1))
        gone = (await _ask(bw, "try", {"job": public, "prompt": "kana", "epochs": "1"})).text()
        assert f"epoch 1's checkpoint of `{public}` was deleted from the store" in gone, gone
        assert len(_requests(bw, job_id)) == 3

        # Past its linger the /try pod is terminated by the orchestrator: nothing is left at RunPod.
        await bw.fake.wait_for(
            lambda: all(p.status is PodStatus.TERMINATED for p in bw.world.pods(job_id)),
            timeout=60,
            what="the /try pod to go after its linger",
        )
        await bw.fake.wait_for(lambda: bw.world.running_pods() == [], timeout=30, what="no pod at RunPod")
        assert_ledger_matches_runpod(bw.world, job_id, case="/try")


def job_cost_now(bw: BotWorld, job_id: int):  # type: ignore[no-untyped-def]
    with session_scope(bw.world.sessions) as s:
        return job_cost(s, job_id, now=bw.world.now())


async def _window_line(bw: BotWorld, thread: ChannelRecord) -> MessageRecord:
    return await bw.wait_for_thread_message(thread, lambda m: "Test window open until" in m.text(), 60)


async def _closed(bw: BotWorld, thread: ChannelRecord, job_id: int, by: str) -> str:
    """The window is closed by `by`, its pod gone, and the thread's final line says what it cost."""
    await bw.fake.wait_for(
        lambda: (w := _window(bw, job_id)) is not None and w.cost_micros is not None,
        timeout=90,
        what=f"the window of j{job_id} to close ({by})",
    )
    window = _window(bw, job_id)
    assert window is not None and window.closed_by is not None and by in window.closed_by, window and window.closed_by
    assert all(p.status is PodStatus.TERMINATED for p in bw.world.pods(job_id))
    # The window's line is edited to say so, and a final line is posted (both name the cost).
    closed = await bw.fake.wait_for(
        lambda: (
            (found := [m for m in bw.fake.messages_in(thread) if "Test window closed" in m.text()])
            and len(found) == 2
            and found
        ),
        timeout=60,
        what="the window's line edited and its final line posted",
    )
    final = closed[-1]
    assert all(format_usd(window.cost_micros or 0) in m.text() for m in closed)
    with session_scope(bw.world.sessions) as s:
        cost = job_cost(s, job_id, now=bw.world.now())
    assert cost.try_micros == window.cost_micros and not cost.live
    return final.text()


async def test_a_test_window_answers_try_on_the_warm_pod_and_closes_by_time_after_a_restart(
    make_bot_world: MakeBotWorld,
) -> None:
    async with make_bot_world() as bw:
        thread, job_id = await _trained(bw, "warm", test_window=25)
        await bw.wait_for_status(job_id, lambda s: s is JobStatus.SUCCEEDED, timeout=180)
        line = await _window_line(bw, thread)
        assert line.component(f"lorabot:job:{job_id}:window:close") is not None
        [gpu] = _pods(bw, job_id, PodRole.GPU)
        assert gpu.status is not PodStatus.TERMINATED, "the training pod stays up for the window"

        # /try answers on the warm training pod: no start-up, no /try pod.
        estimate = await _ask(bw, "try", {"job": f"j{job_id}", "prompt": "kana smiling", "epochs": "3"})
        assert "on the GPU pod already serving" in estimate.text(), estimate.text()
        assert "confirmed" in await _confirm(bw, estimate)
        await _grid(bw, thread, "t1")
        _assert_cells(bw, job_id, "t1", ["kana smiling"], [3])

        # compare: the training image whose caption shares the most tags ("pose 3": image 003) beside the row.
        estimate = await _ask(
            bw, "try", {"job": f"j{job_id}", "prompt": "kana, pose 3", "epochs": "3", "compare": True}
        )
        assert "with the closest training image" in estimate.text()
        assert "confirmed" in await _confirm(bw, estimate)
        compared = await _grid(bw, thread, "t2")
        [upload] = compared.files
        source_colour = (3 * 9 % 256, 90, 160)  # dataset_zip's image 003
        colours = {c for _, c in Image.open(io.BytesIO(upload.read_bytes())).convert("RGB").getcolors(1 << 22) or []}
        assert source_colour in colours
        assert _pods(bw, job_id, PodRole.TRY) == []

        # The bot restarts while the window is open, between an estimate and its Confirm: the button still works,
        # the window still answers, and it still ends by time, with no pod left.
        pending = await _ask(bw, "try", {"job": f"j{job_id}", "prompt": "kana angry", "epochs": "2"})
        await bw.restart()
        window = _window(bw, job_id)
        assert window is not None and window.closed_at is None
        assert "confirmed" in await _confirm(bw, pending)
        await _grid(bw, thread, "t3")
        _assert_cells(bw, job_id, "t3", ["kana angry"], [2])
        text = await _closed(bw, thread, job_id, "time")
        assert "Test window closed" in text
        # One window line, edited in place as its cost grew (never re-posted), and the final line.
        lines = [m for m in bw.fake.messages_in(thread) if "🧪 Test window" in m.text()]
        assert len(lines) == 2 and lines[0].id == line.id and "closed" in lines[0].text(), [m.text() for m in lines]
        edits = [r for r in bw.fake.requests if r.method == "PATCH" and str(line.id) in r.path]
        assert len(edits) >= 2, "the line is redrawn as the cost grows, then for the close"
        await bw.fake.wait_for(lambda: bw.world.running_pods() == [], timeout=30, what="no pod at RunPod")
        # The warm pod's time is split: training on the GPU line, the window on the try line.
        cost = job_cost_now(bw, job_id)
        assert cost.gpu_pod_micros > 0 and cost.try_micros > 0
        assert "Try / window" in (await _ask(bw, "cost", {"job": f"j{job_id}"})).text()
        assert_ledger_matches_runpod(bw.world, job_id, case="window by time")


async def test_test_windows_close_by_their_button_and_by_cancel(make_bot_world: MakeBotWorld) -> None:
    async with make_bot_world() as bw:
        too_long = await bw.train(dataset_zip(6, size=512), name="long", test_window=61)
        assert "test_window is 61 minutes; this server allows at most 60" in too_long.text()
        thread_a, job_a = await _trained(bw, "button", test_window=60)
        thread_b, job_b = await _trained(bw, "cancel", test_window=60)
        for job_id in (job_a, job_b):
            await bw.wait_for_status(job_id, lambda s: s is JobStatus.SUCCEEDED, timeout=200)
        line_a = await _window_line(bw, thread_a)
        await _window_line(bw, thread_b)

        # Someone else may not close it; the owner's click closes it at once (a restart-proof button).
        mallory = bw.fake.add_user("mallory")
        refused = await bw.fake.click(line_a, f"lorabot:job:{job_a}:window:close", user=mallory)
        assert "Only the person who started" in (await bw.fake.wait_for_reply(refused, timeout=20)).text()
        assert _window(bw, job_a).closed_at is None  # type: ignore[union-attr]
        click = await bw.fake.click(line_a, f"lorabot:job:{job_a}:window:close")
        assert "Closing" in (await bw.fake.wait_for_reply(click, timeout=30)).text()
        await _closed(bw, thread_a, job_a, "button")
        await bw.fake.wait_for(
            lambda: line_a.component(f"lorabot:job:{job_a}:window:close") is None,
            timeout=30,
            what="the window's line without its button",
        )

        # /cancel on the finished job closes its window.
        reply = (await _ask(bw, "cancel", {"job": f"j{job_b}"})).text()
        assert "test window" in reply and "stopped" in reply, reply
        await _closed(bw, thread_b, job_b, "cancel")
        assert bw.world.status(job_b) is JobStatus.SUCCEEDED  # the job keeps its result

        await bw.fake.wait_for(lambda: bw.world.running_pods() == [], timeout=30, what="no pod at RunPod")
        for job_id in (job_a, job_b):
            assert_ledger_matches_runpod(bw.world, job_id, case=f"window j{job_id}")
