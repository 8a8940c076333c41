"""A whole job with every secret configured: no secret appears in any log line, pod log, status object, uploaded
log, notice payload, stored failure reason or pod exit reason."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from jobs.states import JobStatus
from storage.db import session_scope
from storage.models import Job, Notice, Pod
from tests.faults.harness import drive
from tests.world.lorabot_world import LorabotWorld
from tests.world.s3 import FAKE_SECRET, S3World

HF_TOKEN = "hf_SECRETtokenFORgatedMODEL0123456789"
DISCORD_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.SECRET.discordTOKENvalue0123456789"
URL_SECRET = "url-signing-SECRET-0123456789abcdef0123456789"


def everything_written(world: LorabotWorld, s3_world: S3World, job_id: int, log_text: str) -> dict[str, str]:
    """Every place a secret could leak to, by name."""
    places = {"log records (DEBUG)": log_text}
    for key in s3_world.keys(f"jobs/j{job_id}/status/") + s3_world.keys(f"jobs/j{job_id}/logs/"):
        places[f"bucket {key}"] = s3_world.read(key).decode(errors="replace")
    for pod in world.emulator.all_pods():
        places[f"pod log {pod.name}"] = world.emulator.pod_log(pod.id)
    with session_scope(world.sessions) as s:
        places["notices"] = "\n".join(
            json.dumps(n.payload_json) + (n.last_error or "") for n in s.query(Notice).order_by(Notice.id)
        )
        places["failure reasons"] = "\n".join(j.failure_reason or "" for j in s.query(Job))
        places["pod exit reasons"] = "\n".join(p.exit_reason or "" for p in s.query(Pod))
    return places


@pytest.mark.parametrize("ending", ["succeeds", "fails in the trainer"])
async def test_no_configured_secret_reaches_a_log_a_notice_or_a_stored_error(
    fault_world: Callable[..., LorabotWorld],
    s3_world: S3World,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    ending: str,
) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("DISCORD_TOKEN", DISCORD_TOKEN)
    monkeypatch.setenv("LORABOT_URL_SECRET", URL_SECRET)
    caplog.set_level(logging.DEBUG)
    pod_env = [("LORABOT_STANDIN_STEPS_PER_SECOND", "0.05")]
    if ending == "fails in the trainer":
        pod_env.append(("LORABOT_STANDIN_FAULT", "crash@2"))
    world = fault_world(pod_env=tuple(pod_env))
    job_id = world.submit(images=3, epochs=2)
    world.emulator.fail_next(2, 503)  # error paths log too

    await drive(world, job_id, timeout=90)

    assert world.status(job_id) in (JobStatus.SUCCEEDED, JobStatus.FAILED_TRAINER), world.describe()
    secrets = {
        "RunPod API key": world.emulator.api_key,
        "S3 secret key": FAKE_SECRET,
        "HF token": HF_TOKEN,
        "Discord token": DISCORD_TOKEN,
        "URL signing secret": URL_SECRET,
    }
    places = everything_written(world, s3_world, job_id, caplog.text)
    assert len(places) > 8, sorted(places)  # logs, status objects, uploaded logs, pod logs, notices, reasons
    leaks = [f"{name} in {where}" for name, value in secrets.items() for where, text in places.items() if value in text]
    assert leaks == []
