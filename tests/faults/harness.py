"""The fault suite's tools: drive a job to its end under a fault, then check the four promises of issue 7.

    world = fault_world()                                   # fixture: the whole back end, fast clock
    job_id = world.submit(images=3, epochs=2)
    await drive(world, job_id, hooks=[When(JobStatus.TRAINING, lambda: world.emulator.fail_next(3, 503))])
    outcome = check_promises(world, job_id, case=..., fault=..., state=...)

The promises, checked for every case (`check_promises`):
1. the job ends SUCCEEDED or FAILED_* with a reason, within a real-time bound (`drive` raises if it hangs);
2. no pod is left at RunPod (emulator's record) and no pod process is left on the machine;
3. the ledger's pod cost (compute + container disk) equals RunPod's billing records (`/v2/billing/pods`) within 1%,
   plus what no ledger could know (`tests/world/money.py`);
4. no notice lost or duplicated: unique idempotency keys, exactly one terminal notice, and for a succeeded job
   epochs announced exactly 1..N in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from jobs import ledger
from jobs.cloud import AsyncCloud, Cloud, GpuOffer, PodInfo, PodRequest, VolumeInfo
from jobs.orchestrator import Orchestrator
from jobs.queue import JobPlan
from jobs.states import JobStatus, NoticeKind, PodRole
from tests.world.lorabot_world import LorabotWorld
from tests.world.money import assert_ledger_matches_runpod, pod_costs
from tests.world.timed_cloud import TimedCloud

TERMINAL_NOTICES = {NoticeKind.SUCCEEDED, NoticeKind.FAILED, NoticeKind.CANCELLED}


class ProcessKilled(BaseException):
    """Stands for SIGKILL of the bot: not an Exception, so nothing in the tick catches it."""


# -- outcomes -----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One row of tests/faults/README.md."""

    case: str
    fault: str
    state: str
    outcome: str
    reason: str
    pods_left: int
    ledger_micros: int
    billed_micros: int
    seconds: float

    @property
    def ledger_vs_billing(self) -> str:
        if self.billed_micros == 0:
            return "0 = 0" if self.ledger_micros == 0 else f"{self.ledger_micros} vs 0"
        diff = (self.ledger_micros - self.billed_micros) / self.billed_micros * 100
        return f"{ledger.format_usd(self.ledger_micros)} vs {ledger.format_usd(self.billed_micros)} ({diff:+.2f}%)"


RESULTS: list[Outcome] = []


# -- driving ------------------------------------------------------------------------------------------------------


@dataclass
class When:
    """Fire `action` once, the first time `condition(world, job_id)` holds before a tick (a state, a pod, an epoch)."""

    condition: Callable[[LorabotWorld, int], bool]
    action: Callable[[], Any]
    fired_in: str | None = None

    @classmethod
    def state(cls, status: JobStatus, action: Callable[[], Any]) -> When:
        return cls(lambda world, job_id: world.status(job_id) is status, action)

    def maybe_fire(self, world: LorabotWorld, job_id: int) -> None:
        if self.fired_in is None and self.condition(world, job_id):
            self.fired_in = world.status(job_id).value
            self.action()


@dataclass
class Drive:
    """What happened while driving: tick errors (transient ones are expected under faults) and unexpected ones."""

    errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ticks: int = 0


class _UnexpectedErrors(logging.Handler):
    """Collects the orchestrator's "unexpected error" records: a fault must map to a known error, not a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        self.messages.append(text)


async def drive(
    world: LorabotWorld,
    job_id: int,
    *,
    orchestrator: Orchestrator | None = None,
    hooks: list[When] | None = None,
    timeout: float = 60.0,
    interval: float = 0.1,
    until: Callable[[], bool] | None = None,
) -> Drive:
    """Tick like the scheduler until the job is terminal (or `until()`), then until its pods are gone.
    Raises AssertionError naming the state if `timeout` real seconds pass: a hang is a failed case."""
    orch = orchestrator or world.orchestrator
    done = until or (lambda: world.status(job_id).is_terminal())
    result = Drive()
    catcher = _UnexpectedErrors()
    orch_log = logging.getLogger("jobs.orchestrator")
    orch_log.addHandler(catcher)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            for hook in hooks or []:
                hook.maybe_fire(world, job_id)
            if done():
                break
            if loop.time() > deadline:
                raise AssertionError(f"hung: still {world.status(job_id).value} after {timeout} s\n{world.describe()}")
            report = await orch.tick()
            result.ticks += 1
            result.errors.extend(report.errors)
            await asyncio.sleep(interval)
        if until is None:
            # A terminate refused by a flaky API is repeated by the next tick: give the clean-up a few.
            for _ in range(30):
                if not world.running_pods():
                    break
                report = await orch.tick()
                result.errors.extend(report.errors)
                await asyncio.sleep(interval)
    finally:
        orch_log.removeHandler(catcher)
        result.unexpected.extend(catcher.messages)
    return result


# -- the promises -------------------------------------------------------------------------------------------------


def check_promises(
    world: LorabotWorld,
    job_id: int,
    *,
    case: str,
    fault: str,
    state: str,
    expect: set[JobStatus] | JobStatus,
    drive_result: Drive | None = None,
    started: float | None = None,
) -> Outcome:
    """Assert the four promises and record the case's row for the README table."""
    expected = {expect} if isinstance(expect, JobStatus) else expect
    job = world.job(job_id)
    status = job.status
    assert status.is_terminal(), f"{case}: the job is {status.value}, not finished"
    assert status is JobStatus.SUCCEEDED or status.value.startswith("failed"), status
    assert status in expected, f"{case}: ended {status.value} ({job.failure_reason}), expected {expected}"
    if status is not JobStatus.SUCCEEDED:
        assert job.failure_reason and len(job.failure_reason) > 10, f"{case}: failed without a reason"

    # 2. no pod left: RunPod's record, then the processes standing in for containers.
    left = world.running_pods()
    assert left == [], f"{case}: pods left running: {left}"
    world.wait_for_no_processes(timeout=10)
    assert not world.emulator.failures, world.emulator.failures

    # 3. ledger = RunPod's billing records within 1%, plus what the bot could not know: RunPod bills from the instant
    # a create or terminate took effect, somewhere inside the call's round trip, which the scaled clock stretches.
    assert_ledger_matches_runpod(world, job_id, case=case)
    in_ledger, billed = pod_costs(world, job_id)

    # 4. notices: none duplicated, none lost.
    notices = world.notices(job_id)
    keys = [n.idempotency_key for n in notices]
    assert len(keys) == len(set(keys)), f"{case}: duplicate notice keys {keys}"
    terminal = [n for n in notices if n.kind in TERMINAL_NOTICES]
    assert len(terminal) == 1, f"{case}: terminal notices {[(n.kind, n.idempotency_key) for n in terminal]}"
    if status is JobStatus.SUCCEEDED:
        assert terminal[0].kind is NoticeKind.SUCCEEDED
        planned = JobPlan.from_json(job.plan_json).epochs
        epochs = [n.payload_json["epoch"] for n in notices if n.kind is NoticeKind.EPOCH]
        assert epochs == list(range(1, planned + 1)), f"{case}: epochs announced {epochs}, planned {planned}"
        final = terminal[0].payload_json["final"]
        assert world.store.sha256_of(final["key"]) == final["sha256"]
    else:
        assert terminal[0].kind is NoticeKind.FAILED
        assert terminal[0].payload_json.get("reason") == job.failure_reason
    # Faults must surface as known errors, never as an orchestrator traceback.
    if drive_result is not None:
        assert drive_result.unexpected == [], f"{case}: unexpected errors {drive_result.unexpected}"

    outcome = Outcome(
        case=case,
        fault=fault,
        state=state,
        outcome=status.value,
        reason=(job.failure_reason or "")[:120],
        pods_left=len(left),
        ledger_micros=in_ledger,
        billed_micros=billed,
        seconds=round(time.monotonic() - started, 1) if started is not None else 0.0,
    )
    RESULTS.append(outcome)
    return outcome


# -- predicates and fault actions ---------------------------------------------------------------------------------


def gpu_pod_created(world: LorabotWorld, job_id: int) -> bool:
    return any(p.role is PodRole.GPU and p.runpod_pod_id for p in world.pods(job_id))


def cpu_pod_created(world: LorabotWorld, job_id: int) -> bool:
    return any(p.role is PodRole.CPU and p.runpod_pod_id for p in world.pods(job_id))


def epochs_announced(world: LorabotWorld, job_id: int) -> int:
    return len(world.notices(job_id, NoticeKind.EPOCH))


def current_gpu_runpod_id(world: LorabotWorld, job_id: int) -> str:
    gpus = [p for p in world.pods(job_id) if p.role is PodRole.GPU and p.runpod_pod_id]
    assert gpus, "no GPU pod yet"
    return str(gpus[-1].runpod_pod_id)


def freeze_pod(pod_id: str) -> list[int]:
    """SIGSTOP every process of an emulated pod (the agent and its detached trainer): a pod that stops reporting.
    The emulator marks its processes with RUNPOD_POD_ID; psutil finds them even in other sessions."""
    frozen = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get("RUNPOD_POD_ID") == pod_id:
                os.kill(proc.pid, signal.SIGSTOP)
                frozen.append(proc.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    assert frozen, f"no process of pod {pod_id} to freeze"
    return frozen


# -- the bot process dying ----------------------------------------------------------------------------------------


class KillingCloud(TimedCloud):
    """The real cloud client, except that the bot process 'dies' right after a call has reached RunPod, when
    `should_die(call_number, method, job_status)` says so: the effect happened, the bot never saw the answer."""

    def __init__(
        self, inner: AsyncCloud, world: LorabotWorld, job_id: int, should_die: Callable[[int, str, JobStatus], bool]
    ) -> None:
        super().__init__(inner.client, clock=world.emulator.clock.utcnow, calls=world.cloud_calls)
        self.world, self.job_id, self.should_die = world, job_id, should_die
        self.calls = 0
        self.died_at: str | None = None

    def _after(self, method: str) -> None:
        self.calls += 1
        status = self.world.status(self.job_id)
        if self.died_at is None and self.should_die(self.calls, method, status):
            self.died_at = f"{status.value} after {method} (call {self.calls})"
            raise ProcessKilled(self.died_at)

    async def create_pod(self, req: PodRequest) -> PodInfo:
        info = await super().create_pod(req)
        self._after("create_pod")
        return info

    async def get_pod(self, pod_id: str) -> PodInfo:
        info = await super().get_pod(pod_id)
        self._after("get_pod")
        return info

    async def list_pods(self, name_prefix: str = "lorabot-") -> list[PodInfo]:
        pods = await super().list_pods(name_prefix)
        self._after("list_pods")
        return pods

    async def terminate_pod(self, pod_id: str, *, on_attempt: Callable[[], None] | None = None) -> None:
        await super().terminate_pod(pod_id, on_attempt=on_attempt)
        self._after("terminate_pod")

    async def list_gpu_offers(
        self, data_center_id: str | None = None, clouds: Sequence[Cloud] = ("SECURE",)
    ) -> list[GpuOffer]:
        offers = await super().list_gpu_offers(data_center_id, clouds)
        self._after("list_gpu_offers")
        return offers

    async def list_volumes(self) -> list[VolumeInfo]:
        volumes = await super().list_volumes()
        self._after("list_volumes")
        return volumes

    async def create_volume(self, name: str, size_gb: int, data_center_id: str) -> VolumeInfo:
        volume = await super().create_volume(name, size_gb, data_center_id)
        self._after("create_volume")
        return volume


def doomed_orchestrator(world: LorabotWorld, cloud: AsyncCloud) -> Orchestrator:
    """The bot before the kill: same DB, store and config as the world's, but over a cloud that can kill it."""
    base = world.orchestrator
    return Orchestrator(
        sessions=world.sessions,
        cloud=cloud,
        store=world.store,
        config=base.config,
        env_recipe=base.env_recipe,
        agent_bundle=(base._agent_bytes, base._agent_sha),
        clock=world.emulator.clock.utcnow,
    )
