"""The cost of one LoRA from the ledger, for seed 000's job, against seed 000's $0.75 hand-run.

    python -m bench.cost_per_lora [--time-scale 60] [--no-warm]

Seed 000's job: 59 images x 10 repeats x 10 epochs = 5,900 steps, about 50 minutes on an RTX 4090. The timing model
is `bench.gpu_overhead`'s (issue 5): CPU stage 30 min (a recipe step that sleeps, with an honest `expected_s`), GPU
pod start-up 2 min, training 50 min. The job here has seed 000's 59 images and 10 epochs (10 checkpoints, 10 rounds
of samples) at 1 repeat: each of the stand-in trainer's 590 steps stands for 10 of seed 000's, at 590 / 3,000 it/s.
(Run at 5,900 real stand-in steps, the stand-in's ~1 ms of real work per step, times the time scale, adds 7
simulated minutes of training that a 4090 would not spend.) The world is the REST v2 emulator with lorabot's
default fallback: the Secure Cloud 4090 (the only cloud whose pods mount the Network Volume), as seed 000 ran in
EU-RO-1. A cold job (empty volume: CPU pod first) is followed by a warm one (environment and model already on the
volume).

Every figure is what `jobs.ledger.job_cost` reads from the database after the job (volume by started hour, pods
per second at the rate RunPod reported, container disk included), checked against RunPod's own billing records
for the same pods (`GET /v2/billing/pods`, compute + disk, read through lorabot's REST client).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from bench.gpu_overhead import CPU_STAGE_S, GPU_STARTUP_S, TRAINING_S, _iso, slow_recipe
from jobs import ledger
from jobs.sandbox.emulator import RunpodEmulator
from jobs.states import JobStatus, PodRole
from storage.db import make_engine, make_session_factory, migrate, session_scope
from storage.models import Job, Pod
from tests.world.lorabot_world import LorabotWorld
from tests.world.money import fetch_pod_billing, record_total
from tests.world.s3 import S3Server, S3World

SEED_IMAGES, SEED_REPEATS, SEED_EPOCHS = 59, 10, 10
SEED_STEPS = SEED_IMAGES * SEED_REPEATS * SEED_EPOCHS
STANDIN_REPEATS = 1  # each stand-in step stands for SEED_REPEATS of seed 000's (see the module's note)
STANDIN_STEPS = SEED_IMAGES * STANDIN_REPEATS * SEED_EPOCHS
SEED_TOTAL_MICROS = 750_000
# Seed 000's measured table (item, rate, time, cost), printed next to ours.
SEED_TABLE = (
    ("Network Volume 30GB", "$0.003/h", "4 h", "$0.01"),
    ("CPU Pod (2vCPU, 8GB RAM)", "$0.08/h", "40 min", "$0.05"),
    ("RTX 4090 (Secure Cloud, EU-RO-1)", "$0.69/h", "60 min", "$0.69"),
    ("Total", "", "", "~$0.75"),
)


@dataclass(frozen=True)
class PodLine:
    role: PodRole
    label: str
    rate_micros_per_hour: int
    billed_s: int
    ledger_micros: int
    disk_micros: int
    runpod_micros: int


@dataclass(frozen=True)
class JobResult:
    world: str
    kind: str
    cost: ledger.CostBreakdown
    volume_gb: int
    volume_hours: int
    pods: list[PodLine]
    training_s: float


def submit_seed_job(world: LorabotWorld, user_id: int) -> int:
    """Seed 000's images and epochs, ingested, planned and queued as /train would."""
    return world.submit(
        images=SEED_IMAGES,
        epochs=SEED_EPOCHS,
        user_id=user_id,
        name=f"seed000-{user_id}",
        image_size=512,
        repeats=STANDIN_REPEATS,
    )


def read_result(world: LorabotWorld, label: str, kind: str, job_id: int) -> JobResult:
    runpod_ids = {p.name: p.id for p in world.emulator.all_pods()}
    now = world.now()
    with session_scope(world.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status is JobStatus.SUCCEEDED, world.describe()
        cost = ledger.job_cost(s, job_id, now=now)
        pods = list(s.query(Pod).filter(Pod.job_id == job_id).order_by(Pod.id))
        window = ledger.job_volume_window(pods, now)
        hours = ledger.volume_billed_hours(*window) if window else 0
        bills = fetch_pod_billing(world, [runpod_ids[p.name] for p in pods if p.name in runpod_ids])
        lines = []
        for pod in pods:
            start_end = ledger.pod_billing_window(pod, now)
            seconds = ledger.billed_seconds(*start_end) if start_end else 0
            records = bills.get(runpod_ids.get(pod.name, ""), [])
            label_text = (
                f"{pod.gpu_type_id.replace('NVIDIA GeForce ', '')} ({(pod.cloud_type or '').title()} Cloud)"
                if pod.role is PodRole.GPU and pod.gpu_type_id
                else "CPU Pod"
            )
            lines.append(
                PodLine(
                    pod.role,
                    label_text,
                    pod.cost_per_hr_micros or 0,
                    seconds,
                    ledger.pod_cost_so_far(pod, now),
                    ledger.pod_charge(pod, now).disk_micros,
                    sum(record_total(r) for r in records),
                )
            )
        volume_gb = world.orchestrator.config.volume_size_gb
    return JobResult(label, kind, cost, volume_gb, hours, lines, _training_seconds(world, job_id))


def _training_seconds(world: LorabotWorld, job_id: int) -> float:
    """The agent's own training window (simulated time), from the train stage's last status."""
    timings = json.loads(world.store.get_bytes(f"jobs/j{job_id}/status/train.json") or b"{}")["timings"]
    return (_iso(timings["finished_at"]) - _iso(timings["training_started_at"])).total_seconds()


async def run_world(label: str, server: S3Server, time_scale: float, warm: bool) -> list[JobResult]:
    emulator = RunpodEmulator(time_scale=time_scale, startup_delay_s={"gpu": GPU_STARTUP_S, "cpu": 30}).start()
    results = []
    try:
        s3 = S3World(server)
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            migrate(url)
            world = LorabotWorld.create(
                emulator,
                s3,
                make_session_factory(make_engine(url)),
                Path(tmp),
                env_recipe=slow_recipe(time_scale),
                reserve_margin_s=15,
                gpu_startup_guess_s=GPU_STARTUP_S,
                status_interval_s=5.0,
                pod_env=(("LORABOT_STANDIN_STEPS_PER_SECOND", f"{STANDIN_STEPS / TRAINING_S:.6f}"),),
            )
            for kind in ("cold", "warm") if warm else ("cold",):
                job_id = await asyncio.to_thread(submit_seed_job, world, 7 if kind == "cold" else 8)
                await world.run_until(
                    functools.partial(_finished, world, job_id),
                    timeout=3 * (CPU_STAGE_S + TRAINING_S) / time_scale,
                    interval=min(0.05, 5 / time_scale),
                )
                results.append(read_result(world, label, kind, job_id))
            await world.orchestrator.cloud.close()
    finally:
        emulator.stop()
    return results


def _finished(world: LorabotWorld, job_id: int) -> bool:
    return world.status(job_id).is_terminal()


def _gpu_ratio(result: JobResult) -> float:
    gpu_s = sum(p.billed_s for p in result.pods if p.role is PodRole.GPU)
    return gpu_s / result.training_s


def usd(micros: int) -> str:
    return ledger.format_usd(micros)


def rate(micros_per_hour: int) -> str:
    """Like seed 000 writes them: "$0.44/h", "$0.003/h" (cents unless the rate is below one)."""
    places = 2 if micros_per_hour % 10_000 == 0 else 3
    return f"${Decimal(micros_per_hour) / 1_000_000:.{places}f}/h" if micros_per_hour else "-"


def print_job(result: JobResult) -> None:
    c = result.cost
    print(
        f"\n{result.world}, {result.kind} job (seed 000's {SEED_STEPS:,} steps as {STANDIN_STEPS} stand-in steps; "
        f"training {result.training_s / 60:.1f} min):"
    )
    print("| item | rate | time | cost (ledger) | of which container disk | RunPod's billing records |")
    print("|---|---:|---:|---:|---:|---:|")
    volume_rate = ledger.volume_rate_micros_per_hour(result.volume_gb)
    print(
        f"| Network Volume {result.volume_gb}GB | {rate(volume_rate)} | {result.volume_hours} h (started hours) | "
        f"{usd(c.volume_micros)} | - | - |"
    )
    for pod in result.pods:
        print(
            f"| {pod.label} | {rate(pod.rate_micros_per_hour)} | {pod.billed_s / 60:.1f} min | "
            f"{usd(pod.ledger_micros)} | {usd(pod.disk_micros)} | {usd(pod.runpod_micros)} |"
        )
    runpod_total = sum(p.runpod_micros for p in result.pods)
    ledger_pods = sum(p.ledger_micros for p in result.pods)
    print(f"| Total | | | **{usd(c.total_micros)}** | {usd(c.disk_micros)} | pods {usd(runpod_total)} |")
    diff = ledger_pods - runpod_total
    print(f"pods: ledger {ledger_pods:,} µ$, RunPod's billing records {runpod_total:,} µ$ ({diff:+,} µ$)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=60.0, help="simulated seconds per real second")
    parser.add_argument("--no-warm", action="store_true", help="only the cold jobs")
    args = parser.parse_args()
    # moto's werkzeug server would log every request of the pods' polling, from a thread of this process, and
    # cost the time being measured.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = S3Server()
    try:
        s3_env = S3World(server).env
        os.environ.update({k: v for k, v in s3_env.items() if k != "LORABOT_S3_BUCKET"})

        results = asyncio.run(run_world("secure 4090", server, args.time_scale, warm=not args.no_warm))
    finally:
        server.stop()
    print(
        f"timing model: CPU stage {CPU_STAGE_S // 60} min, GPU start-up {GPU_STARTUP_S // 60} min, training "
        f"{TRAINING_S // 60} min; time scale {args.time_scale:g}"
    )
    print("\nseed 000's hand-run (measured):")
    print("| item | rate | time | cost |")
    print("|---|---:|---:|---:|")
    for row in SEED_TABLE:
        print("| " + " | ".join(row) + " |")
    for result in results:
        print_job(result)
    print("\n| job | volume | CPU pod | GPU pod | total | vs seed 000's $0.75 | GPU billed / training |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        c = r.cost
        print(
            f"| {r.world}, {r.kind} | {usd(c.volume_micros)} | {usd(c.cpu_pod_micros)} | {usd(c.gpu_pod_micros)} | "
            f"**{usd(c.total_micros)}** | {c.total_micros * 100 // SEED_TOTAL_MICROS} % | {_gpu_ratio(r):.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
