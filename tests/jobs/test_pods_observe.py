"""`PodKeeper.observe`: one look at a pod maps RunPod's v2 status to what the orchestrator acts on.

RunPod starts an ended container again, so there is no "exited" answer: EXITED and TERMINATED (nobody but lorabot
stops pods) and a 404 are GONE; ERROR (host lost or crash loop) is its own answer; a pod that stays PROVISIONING or
STARTING past the start-up timeout is STUCK.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import pytest
from sqlalchemy.orm import Session, sessionmaker

from jobs.cloud import AsyncCloud, PodInfo, PodNotFound, PodStatusName
from jobs.pods import PodKeeper, PodSeen
from jobs.states import PodRole, PodStatus
from storage.db import session_scope
from storage.models import Pod
from storage.transitions import record_pod_intent, set_pod_created
from tests.world.fixtures_db import T0, new_job

STARTUP_TIMEOUT_S = 600


class OnePodCloud:
    """Answers get_pod with a fixed status (None: the pod is unknown, a 404)."""

    def __init__(self, status: PodStatusName | None) -> None:
        self.status = status

    async def get_pod(self, pod_id: str) -> PodInfo:
        if self.status is None:
            raise PodNotFound(pod_id)
        return PodInfo(pod_id, "lorabot-j1-cpu", self.status, 80_000, 42, None)


def _keeper(sessions: sessionmaker[Session], status: PodStatusName | None, now: dt.datetime) -> PodKeeper:
    cloud = cast(AsyncCloud, OnePodCloud(status))
    return PodKeeper(sessions=sessions, cloud=cloud, clock=lambda: now, startup_timeout_s=STARTUP_TIMEOUT_S)


def _created_pod(sessions: sessionmaker[Session]) -> int:
    with session_scope(sessions) as s:
        pod = record_pod_intent(s, job_id=new_job(s), role=PodRole.CPU, attempt=1, now=T0)
        set_pod_created(s, pod.id, runpod_pod_id="rp1", cost_per_hr_micros=80_000, now=T0, api_created_at=T0)
        return pod.id


SOON = T0 + dt.timedelta(seconds=30)
LATE = T0 + dt.timedelta(seconds=STARTUP_TIMEOUT_S + 1)


@pytest.mark.parametrize(
    ("status", "now", "seen", "row_status"),
    [
        ("PROVISIONING", SOON, PodSeen.STARTING, PodStatus.CREATING),
        ("STARTING", SOON, PodSeen.STARTING, PodStatus.CREATING),
        ("STARTING", LATE, PodSeen.STUCK, PodStatus.CREATING),
        ("RUNNING", LATE, PodSeen.RUNNING, PodStatus.RUNNING),
        ("ERROR", SOON, PodSeen.ERROR, PodStatus.EXITED),
        ("EXITED", SOON, PodSeen.GONE, PodStatus.EXITED),
        ("TERMINATED", SOON, PodSeen.GONE, PodStatus.EXITED),
        (None, SOON, PodSeen.GONE, PodStatus.TERMINATED),
    ],
)
async def test_observe_maps_runpods_status(
    db_sessions: sessionmaker[Session], status: Any, now: dt.datetime, seen: PodSeen, row_status: PodStatus
) -> None:
    pod_id = _created_pod(db_sessions)

    assert await _keeper(db_sessions, status, now).observe(pod_id) is seen

    with session_scope(db_sessions) as s:
        row = s.get(Pod, pod_id)
        assert row is not None and row.status is row_status
        if status == "ERROR":
            assert row.exit_reason == "RunPod reports ERROR (host lost or crash loop)"


async def test_a_pod_without_a_runpod_id_yet_is_starting(db_sessions: sessionmaker[Session]) -> None:
    with session_scope(db_sessions) as s:
        pod_id = record_pod_intent(s, job_id=new_job(s), role=PodRole.GPU, attempt=1, now=T0).id
    assert await _keeper(db_sessions, None, LATE).observe(pod_id) is PodSeen.STARTING
