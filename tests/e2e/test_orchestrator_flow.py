"""A job through the real pipeline: ingest → plan → queue → CPU pod → GPU pod → epochs → LoRA, in the test world."""

from __future__ import annotations

import pytest

from jobs.states import JobStatus, NoticeKind, PodRole
from tests.world.lorabot_world import LorabotWorld

# The whole pipeline on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_dbs


async def test_a_cold_job_prepares_on_cpu_trains_on_gpu_and_leaves_no_pod(lorabot_world: LorabotWorld):
    world = lorabot_world
    job_id = world.submit(images=4, epochs=3)

    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=90, what="the job to finish")

    job = world.job(job_id)
    assert job.status is JobStatus.SUCCEEDED, world.describe()
    pods = world.pods(job_id)
    assert [p.role for p in pods] == [PodRole.CPU, PodRole.GPU]
    assert world.running_pods() == []
    epochs = [n.payload_json["epoch"] for n in world.notices(job_id, NoticeKind.EPOCH)]
    assert epochs == [1, 2, 3]
    final = world.notices(job_id, NoticeKind.SUCCEEDED)[0].payload_json
    assert world.store.sha256_of(final["final"]["key"]) == final["final"]["sha256"]
