"""RunPod starts a container again whenever its process ends, so "the pod exited" never happens: an agent that
crashes runs again and again, and a finished one would too. The bot reads only the agent's status: a stage is done
when the status says so, and a pod whose agent restarts, goes silent or fails on the pod's side is replaced once,
then the job fails with the agent's own error within minutes, never at the wall-time limit."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from jobs.manifest import JobKeys
from jobs.queue import JobPlan
from jobs.sandbox.recipe import sandbox_recipe
from jobs.states import JobStatus, NoticeKind, PodRole, PodStatus
from tests.faults.harness import check_promises, drive
from tests.world.lorabot_world import STANDIN, LorabotWorld

# These cases time the detection in simulated minutes: at the suite's 120x a real second of a busy test machine
# (an agent boot is one or two: Python, the zipapp, S3 round trips) would count as two minutes.
SLOWER = 30.0
OOM_LINE = "lorabot-test: Killed (out of memory) while building the environment"


def recipe_with_first_step(name: str, shell: str) -> dict[str, Any]:
    recipe = sandbox_recipe(STANDIN)
    recipe["name"] = f"sandbox-{name}"
    recipe["steps"] = [{"name": name, "argv": ["sh", "-c", shell]}, *recipe["steps"]]
    return recipe


def status_of(world: LorabotWorld, job_id: int, stage: str) -> dict[str, Any] | None:
    plan = JobPlan.from_json(world.job(job_id).plan_json)
    raw = world.store.get_bytes(JobKeys(f"j{job_id}", plan.output_name).status(stage))
    return None if raw is None else json.loads(raw)


def sim_seconds_preparing(world: LorabotWorld, job_id: int) -> float:
    """Simulated seconds from the job's start (PREPARING) to its failure notice."""
    preparing = world.notices(job_id, NoticeKind.PREPARING)[0].created_at
    failed = world.notices(job_id, NoticeKind.FAILED)[0].created_at
    return (failed - preparing).total_seconds()


async def test_a_crash_looping_cpu_agent_fails_the_job_with_its_error_after_one_new_pod(
    fault_world: Callable[..., LorabotWorld],
) -> None:
    """The environment build kills the agent (the OOM killer, say) on every boot: RunPod restarts the container,
    the agent's second boot says so, and after a second CPU pod does the same the job fails with the log's words."""
    started = time.monotonic()
    world = fault_world(
        env_recipe=recipe_with_first_step("oom", f"echo '{OOM_LINE}'; kill -9 $PPID"), time_scale=SLOWER
    )
    job_id = world.submit(images=3, epochs=2)

    result = await drive(world, job_id)

    job = world.job(job_id)
    reason = job.failure_reason or ""
    assert job.status is JobStatus.FAILED_INTERNAL, reason
    assert "prepare failed (agent_restarted)" in reason and OOM_LINE in reason, reason
    assert "on 2 CPU pods" in reason, reason
    cpus = [p for p in world.pods(job_id) if p.role is PodRole.CPU and p.runpod_pod_id]
    assert len(cpus) == 2 and all("restarted (boot 2)" in (p.exit_reason or "") for p in cpus), cpus
    emulated = [world.emulator.pod(str(pod.runpod_pod_id)) for pod in cpus]
    assert all(pod.restarts >= 1 for pod in emulated)  # RunPod, not the bot, started each one again
    assert [n.payload_json["text"] for n in world.notices(job_id, NoticeKind.INFO) if "CPU pod" in str(n.payload_json)]
    elapsed = sim_seconds_preparing(world, job_id)
    assert elapsed < 300, f"detected after {elapsed:.0f} simulated seconds: {[e.events for e in emulated]}"
    check_promises(
        world,
        job_id,
        case="CPU agent crash-loops",
        fault="an environment step SIGKILLs the agent on every boot; RunPod restarts the container",
        state="preparing",
        expect=JobStatus.FAILED_INTERNAL,
        drive_result=result,
        started=started,
    )


async def test_an_agent_that_reports_the_same_failure_twice_fails_the_job_after_one_new_pod(
    fault_world: Callable[..., LorabotWorld],
) -> None:
    started = time.monotonic()
    world = fault_world(
        env_recipe=recipe_with_first_step("mirror", "echo 'mirror unreachable' >&2; exit 7"), time_scale=SLOWER
    )
    job_id = world.submit(images=3, epochs=2)

    result = await drive(world, job_id)

    reason = world.job(job_id).failure_reason or ""
    assert reason.startswith("prepare failed (env_build): environment step 'mirror' exited with code 7"), reason
    assert "on 2 CPU pods" in reason, reason
    infos = [n.payload_json["text"] for n in world.notices(job_id, NoticeKind.INFO)]
    assert "prepare failed on the CPU pod (env_build); trying a new CPU pod" in infos, infos
    assert len([p for p in world.pods(job_id) if p.role is PodRole.CPU and p.runpod_pod_id]) == 2
    assert sim_seconds_preparing(world, job_id) < 300
    check_promises(
        world,
        job_id,
        case="agent reports the same failure twice",
        fault="an environment step exits 7 on every CPU pod",
        state="preparing",
        expect=JobStatus.FAILED_INTERNAL,
        drive_result=result,
        started=started,
    )


async def test_a_finished_prepare_agent_restarted_by_runpod_does_no_work_and_its_pod_is_terminated(
    fault_world: Callable[..., LorabotWorld],
) -> None:
    """The bot is slow to come by (no tick) while the prepare agent finishes, exits and is started again."""
    started = time.monotonic()
    world = fault_world()
    job_id = world.submit(images=3, epochs=2)

    def cpu_running() -> bool:
        return any(p.role is PodRole.CPU and p.status is PodStatus.RUNNING for p in world.pods(job_id))

    await drive(world, job_id, until=cpu_running)
    cpu = next(p for p in world.pods(job_id) if p.role is PodRole.CPU)
    runpod_id = str(cpu.runpod_pod_id)
    deadline = time.monotonic() + 30
    while (status_of(world, job_id, "prepare") or {}).get("boots") != 2:
        assert time.monotonic() < deadline, f"no second boot: {status_of(world, job_id, 'prepare')}"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # a minute of simulated time: an agent that exits again would be restarted by now

    report = world.emulator.pod(runpod_id)
    assert (report.state, report.restarts, report.process_alive) == ("RUNNING", 1, True), report.events
    log = world.emulator.pod_log(runpod_id)
    assert log.count("step env: done") == 1, log
    assert "this pod already finished the prepare stage (ready); idling" in log
    assert status_of(world, job_id, "prepare")["phase"] == "ready"  # type: ignore[index]

    result = await drive(world, job_id)

    cpu = next(p for p in world.pods(job_id) if p.role is PodRole.CPU)
    assert cpu.exit_reason == "the volume is ready"
    assert world.emulator.pod(runpod_id).state == "TERMINATED"
    check_promises(
        world,
        job_id,
        case="finished prepare agent restarted by RunPod",
        fault="the prepare agent exits after READY and RunPod starts it again before the bot looks",
        state="preparing",
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )
