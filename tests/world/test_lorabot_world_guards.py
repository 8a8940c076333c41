"""The checks every lorabot world runs at teardown can fail: each is shown catching what it exists for."""

from __future__ import annotations

from pathlib import Path

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
