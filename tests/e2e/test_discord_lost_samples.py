"""A GPU pod lost between epoch 1's state save and its samples: the resumed job's thread says what happened."""

from __future__ import annotations

import asyncio
import time

import pytest

from jobs.states import JobStatus, PodRole
from tests.world.fixtures_bot import MakeBotWorld, epoch_of
from tests.world.lorabot_world import dataset_zip

pytestmark = pytest.mark.timeout(180)

STANDIN_ENV = (("LORABOT_STANDIN_STEPS_PER_SECOND", "2"), ("LORABOT_STANDIN_FAULT", "hang_before_samples@1"))


async def test_epoch_1s_gallery_says_its_samples_were_lost_with_the_pod_and_the_others_are_whole(
    make_bot_world: MakeBotWorld,
) -> None:
    # The fault holds the first pod's trainer right after epoch 1's checkpoint and state, before its samples
    # (sd-scripts' order); the resumed pod starts at epoch 2, so the fault never fires there.
    async with make_bot_world(pod_env=STANDIN_ENV) as bw:
        plan = await bw.train(
            dataset_zip(4, size=512), name="kana", epochs=3, repeats=1, trigger="kana", class_word="1girl"
        )
        thread = await bw.confirm(plan)
        job_id = bw.latest_job_id()
        world = bw.world
        state = f"lorabot/jobs/j{job_id}/output/kana-000001-state/random_states_0.pkl"
        deadline = time.monotonic() + 90
        while not any((v.path / state).exists() for v in world.emulator.volumes()):
            assert time.monotonic() < deadline, world.describe()
            await asyncio.sleep(0.1)
        first_gpu = next(p for p in world.pods(job_id) if p.role is PodRole.GPU and p.runpod_pod_id)
        assert first_gpu.runpod_pod_id is not None
        world.emulator.lose_host(first_gpu.runpod_pod_id)

        await bw.wait_for_status(job_id, lambda s: s.is_terminal(), timeout=120)
        assert world.status(job_id) is JobStatus.SUCCEEDED, world.describe()
        await bw.wait_for_thread_message(thread, lambda m: "Download" in m.text())
        galleries = {epoch_of(m.text()): m for m in bw.fake.messages_in(thread) if epoch_of(m.text())}
        assert list(galleries) == ["1", "2", "3"]
        lost_text = "Epoch 1's samples were lost with the pod (2 never drawn); its LoRA is fine."
        assert lost_text in galleries["1"].text() and not galleries["1"].files
        assert "/lora j" in galleries["1"].text()  # its checkpoint is there to fetch
        for epoch in ("2", "3"):
            assert len(galleries[epoch].files) == 2 and "lost" not in galleries[epoch].text()
