"""The `lorabot_world` fixture: orchestrator + DB + RunPod emulator + moto S3, ready for a job."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.world.lorabot_world import LorabotWorld
from tests.world.s3 import S3World


async def tear_down_worlds(made: list[LorabotWorld]) -> None:
    """Closes each world's RunPod client (its HTTP session), then fails the test if lorabot ever asked RunPod for a
    Community Cloud pod with the volume (RunPod refuses it), or a GPU pod reached past the bucket, whatever the test
    did."""
    for world in made:
        await world.orchestrator.cloud.close()
    community = [attempt for world in made for attempt in world.community_volume_attempts()]
    if community:
        pytest.fail("lorabot asked RunPod for a Community Cloud pod with a Network Volume:\n" + "\n".join(community))
    reached = [log for world in made if (log := world.gpu_network_violations())]
    if reached:
        pytest.fail("a GPU pod reached past the bucket (nothing may be fetched on GPU time):\n" + reached[0])


@pytest.fixture
async def make_lorabot_world(
    make_runpod_emulator: Callable[..., Any], s3_world: S3World, db_sessions: sessionmaker[Session], tmp_path: Path
) -> AsyncIterator[Callable[..., LorabotWorld]]:
    """Factory: `make_lorabot_world(time_scale=120, status_stale_s=300, ...)`; kwargs other than the emulator's
    go to OrchestratorConfig. Each world's RunPod client (its HTTP session) is closed at teardown."""
    made: list[LorabotWorld] = []

    def make(*, time_scale: float = 60.0, kill_grace_s: float = 10.0, **config: Any) -> LorabotWorld:
        emulator = make_runpod_emulator(time_scale=time_scale, kill_grace_s=kill_grace_s)
        world = LorabotWorld.create(emulator, s3_world, db_sessions, tmp_path, **config)
        made.append(world)
        return world

    yield make
    await tear_down_worlds(made)


@pytest.fixture
async def lorabot_world(make_lorabot_world: Callable[..., LorabotWorld]) -> AsyncIterator[LorabotWorld]:
    yield make_lorabot_world()
