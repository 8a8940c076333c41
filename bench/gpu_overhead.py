"""GPU billed seconds / training seconds for a cold and a warm job, in the emulator's timing model.

The model (issue 5): the CPU stage takes 30 min (a recipe step that sleeps, with an honest `expected_s`), a GPU pod
needs 2 min to start, training takes 50 min. The real orchestrator, agent and stand-in trainer run it on the RunPod
emulator's scaled clock, so the figures come from RunPod-style per-second billing of the pods that really ran.

    python -m bench.gpu_overhead [--time-scale 120]

Prints one line per job and the ratio; seed 000's hand-run billed 60 min of 4090 for 50 min of training (1.20).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from jobs.sandbox.recipe import sandbox_recipe
from jobs.states import JobStatus, PodRole
from storage.db import make_engine, make_session_factory, migrate
from tests.world.lorabot_world import STANDIN, LorabotWorld

CPU_STAGE_S = 30 * 60
GPU_STARTUP_S = 2 * 60
TRAINING_S = 50 * 60
IMAGES, EPOCHS = 10, 5  # 50 steps


def slow_recipe(time_scale: float) -> dict[str, Any]:
    recipe = sandbox_recipe(STANDIN)
    sleep = {
        "name": "model-sized-work",
        "argv": ["{python}", "-c", f"import time; time.sleep({CPU_STAGE_S / time_scale})"],
        "expected_s": CPU_STAGE_S,
    }
    return {**recipe, "steps": [*recipe["steps"], sleep]}


def _iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


async def run(time_scale: float) -> dict[str, Any]:
    from jobs.sandbox.emulator import RunpodEmulator
    from tests.world.s3 import S3Server, S3World

    server = S3Server()
    emulator = RunpodEmulator(time_scale=time_scale, startup_delay_s={"gpu": GPU_STARTUP_S, "cpu": 30}).start()
    results: dict[str, Any] = {}
    try:
        s3 = S3World(server)
        os.environ.update(s3.env)
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            migrate(url)
            sessions = make_session_factory(make_engine(url))
            steps_per_s = IMAGES * EPOCHS / TRAINING_S
            world = LorabotWorld.create(
                emulator,
                s3,
                sessions,
                Path(tmp),
                env_recipe=slow_recipe(time_scale),
                reserve_margin_s=15,
                gpu_startup_guess_s=GPU_STARTUP_S,
                status_interval_s=5.0,
                pod_env=(("LORABOT_STANDIN_STEPS_PER_SECOND", f"{steps_per_s:.6f}"),),
            )
            for label in ("cold", "warm"):
                job_id = world.submit(images=IMAGES, epochs=EPOCHS, user_id=7 if label == "cold" else 8)
                await world.run_until(
                    functools.partial(_finished, world, job_id),
                    timeout=3 * (CPU_STAGE_S + TRAINING_S) / time_scale,
                    interval=min(0.05, 5 / time_scale),
                )
                assert world.status(job_id) is JobStatus.SUCCEEDED, world.describe()
                gpu_names = {p.name for p in world.pods(job_id) if p.role is PodRole.GPU}
                billed = sum(p.billed_seconds for p in emulator.all_pods() if p.name in gpu_names)
                cost = sum(p.cost_micros for p in emulator.all_pods() if p.name in {q.name for q in world.pods(job_id)})
                status = json.loads(world.store.get_bytes(f"jobs/j{job_id}/status/train.json") or b"{}")
                timings = status["timings"]
                training = (_iso(timings["finished_at"]) - _iso(timings["training_started_at"])).total_seconds()
                results[label] = {
                    "gpu_billed_s": billed,
                    "training_s": training,
                    "ratio": round(billed / training, 3),
                    "pods_cost_usd": cost / 1e6,
                }
            await world.orchestrator.cloud.close()
    finally:
        emulator.stop()
        server.stop()
    return results


def _finished(world: LorabotWorld, job_id: int) -> bool:
    return world.status(job_id).is_terminal()


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request: noise, and time
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=120.0, help="simulated seconds per real second")
    args = parser.parse_args()
    results = asyncio.run(run(args.time_scale))
    print(
        f"timing model: CPU stage {CPU_STAGE_S // 60} min, GPU start-up {GPU_STARTUP_S // 60} min, "
        f"training {TRAINING_S // 60} min (time scale {args.time_scale:g})"
    )
    for label, r in results.items():
        print(
            f"{label}: GPU billed {r['gpu_billed_s']:.0f} s / training {r['training_s']:.0f} s = {r['ratio']:.3f}"
            f"  (pods ${r['pods_cost_usd']:.4f} at emulator prices)"
        )


if __name__ == "__main__":
    main()
