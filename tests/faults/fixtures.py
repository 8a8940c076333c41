"""`fault_world`: the whole back end on a fast clock, for the fault suite and the security checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.world.fixtures_lorabot import tear_down_worlds
from tests.world.lorabot_world import LorabotWorld
from tests.world.s3 import S3World

# Fast world: 120 sim s per real s (GPU start-up 120 s = 1 real s); a "timeout" fault holds 0.5 s, not 35.
FAST: dict[str, Any] = {"time_scale": 120.0, "kill_grace_s": 10.0, "timeout_hold_s": 0.5}


@pytest.fixture
async def fault_world(
    make_runpod_emulator: Callable[..., Any], s3_world: S3World, db_sessions: sessionmaker[Session], tmp_path: Path
) -> AsyncIterator[Callable[..., LorabotWorld]]:
    """Factory: `fault_world(status_stale_s=120, ...)`: emulator kwargs (time_scale, kill_grace_s, timeout_hold_s,
    startup_delay_s) go to the emulator, the rest to OrchestratorConfig. Each world's RunPod client is closed at
    teardown."""
    made: list[LorabotWorld] = []

    def make(**kwargs: Any) -> LorabotWorld:
        emulator_kwargs = {**FAST}
        for name in ("time_scale", "kill_grace_s", "timeout_hold_s", "startup_delay_s"):
            if name in kwargs:
                emulator_kwargs[name] = kwargs.pop(name)
        # Training long enough in sim time (≈ 60 s an epoch) that a fault can land between epochs.
        kwargs.setdefault("pod_env", (("LORABOT_STANDIN_STEPS_PER_SECOND", "0.05"),))
        emulator = make_runpod_emulator(**emulator_kwargs)
        world = LorabotWorld.create(emulator, s3_world, db_sessions, tmp_path, **kwargs)
        made.append(world)
        return world

    yield make
    await tear_down_worlds(made)
