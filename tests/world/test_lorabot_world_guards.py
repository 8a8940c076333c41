"""The checks every lorabot world runs at teardown can fail: each is shown catching what it exists for."""

from __future__ import annotations

import shlex
from pathlib import Path
from urllib.parse import urlsplit

import requests
from sqlalchemy.orm import Session, sessionmaker

from tests.world.fixtures_runpod import EmulatorFactory
from tests.world.lorabot_world import RTX_4090, LorabotWorld
from tests.world.s3 import S3World


def test_a_community_pod_with_the_volume_asked_of_runpod_is_named(
    make_runpod_emulator: EmulatorFactory, s3_world: S3World, db_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Built without the `lorabot_world` fixture, whose teardown would fail this test for the request it makes.
    world = LorabotWorld.create(make_runpod_emulator(time_scale=1.0), s3_world, db_sessions, tmp_path)
    assert world.community_volume_attempts() == []
    volume = world.emulator.create_volume("lorabot-cache", 30, "EU-RO-1")

    answer = requests.post(
        world.emulator.rest_url + "/v2/pods",
        json={
            "name": "lorabot-j1-gpu-1",
            "image": "runpod/pytorch",
            "gpu": {"id": RTX_4090, "count": 1},
            "cloud": "COMMUNITY",
            "mounts": {"network": [{"volumeId": volume.id, "path": "/workspace"}]},
        },
        headers={"Authorization": f"Bearer {world.emulator.api_key}"},
        timeout=10,
    )

    assert answer.status_code == 400
    [attempt] = world.community_volume_attempts()
    assert attempt.startswith("createPod at sim") and "only available for Secure Cloud pods" in attempt


def test_a_gpu_pod_reaching_past_the_bucket_is_logged_and_the_bucket_is_not(
    make_runpod_emulator: EmulatorFactory, s3_world: S3World, db_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Every GPU pod of a lorabot world runs under the network guard: its processes may reach the bucket only. The
    pod below asks the stand-in Hub for a tokenizer (as a trainer without its offline cache would) and then the
    bucket; the first is refused and logged for the world's teardown, the second goes through."""
    import sys

    from tests.agent.world import standin_hub

    world = LorabotWorld.create(make_runpod_emulator(time_scale=60.0), s3_world, db_sessions, tmp_path)
    hub, bucket = standin_hub().url, s3_world.endpoint_url
    script = (
        "import urllib.request\n"
        "try:\n"
        f"    urllib.request.urlopen({hub + '/openai/clip-vit-large-patch14/resolve/main/vocab.json'!r}, timeout=5)\n"
        "except OSError as exc:\n"
        "    print('hub refused:', exc, flush=True)\n"
        "import socket\n"
        f"socket.create_connection(({urlsplit(bucket).hostname!r}, {urlsplit(bucket).port}), timeout=5).close()\n"
        "print('bucket reached', flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    args = f"{sys.executable} -c {shlex.quote(script)}"
    answer = requests.post(
        world.emulator.rest_url + "/v2/pods",
        json={"name": "lorabot-j9-gpu-1", "image": "runpod/pytorch", "gpu": {"id": RTX_4090, "count": 1}, "args": args},
        headers={"Authorization": f"Bearer {world.emulator.api_key}"},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    pod_id = answer.json()["id"]
    world.emulator.wait_until(lambda: "bucket reached" in world.emulator.pod_log(pod_id), 60, "the pod's two tries")

    log = world.emulator.pod_log(pod_id)
    assert "hub refused:" in log and "a GPU pod may reach only the bucket" in log
    violations = world.gpu_network_violations()
    assert "name lookup of" in violations or "connect to" in violations
    assert str(urlsplit(bucket).port) not in violations.split("\n")[0]
