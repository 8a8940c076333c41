"""An orchestrator in a process of its own, over a test world's database, emulator and bucket: the bot process of
a two-process test (`python -m tests.world.orchestrator_process <spec.pickle>`). It ticks until it is killed, with
the orchestrator lease on, as `lorabot run` does; its clock follows the emulator's simulated one."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.agent_bundle import build_agent
from jobs.cloud import AsyncCloud
from jobs.leadership import Leadership
from jobs.orchestrator import Orchestrator, OrchestratorConfig
from jobs.runpod_rest import RestClient
from storage.artifacts_s3 import S3ArtifactStore
from storage.db import make_engine, make_session_factory


@dataclass(frozen=True)
class ProcessSpec:
    db_url: str
    emulator_url: str
    api_key: str
    bucket: str
    config: OrchestratorConfig
    env_recipe: dict[str, Any]
    holder: str
    lease_s: float
    tick_s: float
    # The emulator's simulated time at a wall-clock instant, and its scale: the child's clock runs in step with it.
    sim_anchor: dt.datetime
    wall_anchor: float
    time_scale: float


def write_spec(spec: ProcessSpec, path: Path) -> Path:
    path.write_bytes(pickle.dumps(spec))
    return path


async def run(spec: ProcessSpec) -> None:
    def sim_now() -> dt.datetime:
        return spec.sim_anchor + dt.timedelta(seconds=(time.time() - spec.wall_anchor) * spec.time_scale)

    sessions = make_session_factory(make_engine(spec.db_url))
    orchestrator = Orchestrator(
        sessions=sessions,
        cloud=AsyncCloud(RestClient(spec.api_key, spec.emulator_url)),
        store=S3ArtifactStore(bucket=spec.bucket, region="us-east-1"),
        config=spec.config,
        env_recipe=spec.env_recipe,
        agent_bundle=build_agent(),
        clock=sim_now,
        leadership=Leadership(sessions, lease_s=spec.lease_s, holder=spec.holder),
    )
    while True:
        report = await orchestrator.tick()
        for error in report.errors:
            logging.warning("tick: %s", error)
        await asyncio.sleep(spec.tick_s)


def main() -> None:
    spec: ProcessSpec = pickle.loads(Path(sys.argv[1]).read_bytes())
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s {spec.holder} %(name)s: %(message)s", stream=sys.stderr
    )
    asyncio.run(run(spec))


if __name__ == "__main__":
    main()
