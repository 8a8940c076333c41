"""A whole job with every secret configured: no secret appears in any log line, pod log, status object, uploaded
log, notice payload, stored failure reason or pod exit reason.

The S3 access key id is the one value that does leave, by design (README, "Artifact links and the S3 key id"): a
SigV4 presigned link names it in `X-Amz-Credential`, so the LoRA links posted to Discord carry it. The test holds
that decision exactly: the key id appears only inside presigned-link query strings, never in a log line or in error
text, and the secret key appears nowhere. botocore's own DEBUG records (a signed request's Authorization header,
its canonical request) do name the key id; in the bot they pass the log filter the launcher installs from
`Settings.secret_values()`, which lists the key id, so the log check runs the records through that same filter.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable

import pytest
from pydantic import SecretStr

from bot import render
from jobs.config import S3Settings, SecretRedactingFilter, Settings
from jobs.states import JobStatus, NoticeKind
from storage.db import session_scope
from storage.models import Job, Notice, Pod
from tests.faults.harness import drive
from tests.world.lorabot_world import LorabotWorld
from tests.world.s3 import FAKE_KEY_ID, FAKE_SECRET, S3World

HF_TOKEN = "hf_SECRETtokenFORgatedMODEL0123456789"
DISCORD_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.SECRET.discordTOKENvalue0123456789"
URL_SECRET = "url-signing-SECRET-0123456789abcdef0123456789"
# A whole SigV4 presigned link (scheme to the end of its query) whose query names a credential.
PRESIGNED_LINK = re.compile(r"https?://[^\s\"'<>]+\?[^\s\"'<>]*X-Amz-Credential=[^\s\"'<>]*")


def without_presigned_links(text: str) -> str:
    return PRESIGNED_LINK.sub("<presigned link>", text)


def logs_as_the_bot_writes_them(records: list[logging.LogRecord]) -> str:
    """The log records after the redaction filter the launcher installs (built from the bot's configured secrets)."""
    s3 = S3Settings(bucket="b", access_key_id=SecretStr(FAKE_KEY_ID), secret_access_key=SecretStr(FAKE_SECRET))
    settings = Settings(s3=s3)
    assert FAKE_KEY_ID in settings.secret_values(), "the bot's log filter must know the key id"
    redacting = SecretRedactingFilter([FAKE_KEY_ID])
    lines = []
    for record in records:
        copy = logging.makeLogRecord(record.__dict__)
        redacting.filter(copy)
        lines.append(copy.getMessage())
    return "\n".join(lines)


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
    for notice in world.notices(job_id, NoticeKind.SUCCEEDED):
        # The message the thread gets, rendered as bot/notifier.py does: the LoRA link is minted only then.
        payload = notice.payload_json
        link = world.store.public_link((payload.get("final") or {}).get("key") or "")
        embed = render.succeeded_embed(f"j{job_id}", payload, final_url=link, epoch_count=1)
        places[f"Discord message for notice {notice.id}"] = json.dumps(embed.to_dict())
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
    # The key id is public in presigned links (the documented decision) and nowhere else.
    places["log records (DEBUG)"] = logs_as_the_bot_writes_them(caplog.records)
    leaks += [
        f"S3 access key id outside a presigned link in {where}"
        for where, text in places.items()
        if FAKE_KEY_ID in without_presigned_links(text)
    ]
    assert leaks == []
    if ending == "succeeds":
        # Not vacuous: the final LoRA links the thread gets are presigned and do name the key id.
        messages = "\n".join(text for where, text in places.items() if where.startswith("Discord message"))
        links = PRESIGNED_LINK.findall(messages)
        assert links and all(f"X-Amz-Credential={FAKE_KEY_ID}%2F" in link for link in links), messages
