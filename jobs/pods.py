"""Pods at RunPod, from the create call to the terminate: each call's effect written down with its time.

The orchestrator decides which pod a job needs; this module makes RunPod's side true and keeps the record that every
cost comes from (``jobs/ledger.py``):
- the pod row exists before anything is asked of RunPod (the orchestrator's ``record_pod_intent``), the create call's
  moment is saved before it goes out, RunPod's id the moment it answers;
- a pod whose answer was lost (the bot died) is found by its deterministic name, never created twice;
- a call took effect somewhere between sending it and its answer, so its time is the middle of the two;
- ``reap`` terminates any ``lorabot-*`` pod at RunPod that no live job owns.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Callable, Collection

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs import ledger
from jobs.cloud import AsyncCloud, CandidateForbidden, CandidateRefused, PodInfo, PodNotFound, PodRequest
from jobs.names import parse_pod_name
from jobs.states import NoticeKind, PodStatus
from storage.db import session_scope
from storage.models import Pod
from storage.queries import get_job
from storage.transitions import (
    add_notice,
    set_pod_create_requested,
    set_pod_created,
    set_pod_exited,
    set_pod_running,
    set_pod_seen,
    set_pod_terminate_requested,
    set_pod_terminated,
)
from storage.tries import pod_kept

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


class PodSeen(enum.StrEnum):
    """What one look at a pod at RunPod found."""

    STARTING = "starting"  # PROVISIONING/STARTING (or no RunPod id yet), within the start-up timeout
    RUNNING = "running"
    ERROR = "error"  # RunPod's ERROR: the host was lost or the container crash-looped; it bills until terminated
    GONE = "gone"  # 404, TERMINATED or EXITED: nobody but lorabot stops or terminates its pods
    STUCK = "stuck"  # still not running after the start-up timeout (an image pull that never ends)


def during(sent: dt.datetime, answered: dt.datetime) -> dt.datetime:
    """When a RunPod call took effect: somewhere between sending it and its answer, so the middle.

    RunPod bills per second from the create to the terminate; taking the middle of each call keeps the ledger within
    half a round trip of RunPod's bill at either end, whichever way the network was slow.
    """
    return sent + (answered - sent) / 2


def _billing_start_if_found(pod: Pod) -> dt.datetime:
    """When a pod we find by name (its create's answer was lost) started billing: the create call's moment.

    Without it (a row from before the column existed) the intent row's time stands in: earlier, so the error is an
    overcharge, never a missed second.
    """
    return pod.create_requested_at or pod.created_at


def owned_by_live_job(s: Session, pod: PodInfo, now: dt.datetime | None = None) -> bool:
    """The reaper's rule: a `lorabot-*` pod at RunPod belongs to a live job when its name points at a job that has
    not ended and the pod row of that name is still open and is this pod (or has no RunPod id yet: its create's
    answer was lost). A finished job's pod (a /try pod, the test window's) is its job's only while
    ``storage.tries.pod_kept`` says so at ``now``: its request or its window is still open. Anything else lorabot
    named is an orphan. A pod lorabot did not name is never lorabot's."""
    parsed = parse_pod_name(pod.name)
    if parsed is None:
        return False
    job = get_job(s, parsed.job_id)
    row = s.execute(select(Pod).where(Pod.name == pod.name)).scalar_one_or_none()
    if job is None or row is None or row.status is PodStatus.TERMINATED or row.runpod_pod_id not in (None, pod.id):
        return False
    if not job.status.is_terminal():
        return True
    return now is not None and pod_kept(s, row, now)


class PodKeeper:
    def __init__(
        self, *, sessions: sessionmaker[Session], cloud: AsyncCloud, clock: Clock, startup_timeout_s: float
    ) -> None:
        self.sessions = sessions
        self.cloud = cloud
        self.clock = clock
        self.startup_timeout_s = startup_timeout_s

    async def create(self, pod: Pod, make_request: Callable[[], PodRequest], *, close_when_refused: bool = True) -> Pod:
        """RunPod's pod for this recorded intent: found by name when an earlier run created it, else created.

        Raises ``CandidateRefused``/``CandidateForbidden`` (RunPod's 400/403: the row is then closed as never
        created, the next candidate gets a row of its own) and the cloud's other errors (the row stays open, so
        the next tick looks the name up and asks again: a 5xx or a timeout may have made the pod after all).
        """
        existing = [p for p in await self.cloud.list_pods(pod.name) if p.name == pod.name]
        if existing:
            # Made by an earlier run whose answer was lost: RunPod bills it from that run's create call.
            info, created_at = existing[0], _billing_start_if_found(pod)
        else:
            request = make_request()
            sent = self.clock()
            with session_scope(self.sessions) as s:
                set_pod_create_requested(s, pod.id, now=sent)
            try:
                info = await self.cloud.create_pod(request)
            except (CandidateRefused, CandidateForbidden) as exc:
                if not close_when_refused:
                    raise
                with session_scope(self.sessions) as s:
                    set_pod_terminated(s, pod.id, now=self.clock(), exit_reason=f"never created: {exc}"[:200])
                raise
            created_at = during(sent, self.clock())
        with session_scope(self.sessions) as s:
            created = set_pod_created(
                s,
                pod.id,
                runpod_pod_id=info.id,
                cost_per_hr_micros=info.cost_per_hr_micros,
                now=self.clock(),
                api_created_at=created_at,
            )
        if not created.cost_per_hr_micros:
            # The create mutation's answer carries no price: read costPerHr from the pod itself.
            await self.observe(created.id)
            with session_scope(self.sessions) as s:
                refreshed = s.get(Pod, created.id)
                assert refreshed is not None
                return refreshed
        return created

    async def observe(self, pod_id: int) -> PodSeen:
        """One look at a pod at RunPod (see ``PodSeen``). Only the agent's status says a stage is done: RunPod
        starts a container again whenever its process ends, so an ended process is never visible here."""
        with session_scope(self.sessions) as s:
            pod = s.get(Pod, pod_id)
            assert pod is not None
            runpod_id, created = pod.runpod_pod_id, pod.api_created_at
        if runpod_id is None:
            return PodSeen.STARTING
        now = self.clock()
        try:
            info = await self.cloud.get_pod(runpod_id)
        except PodNotFound:
            with session_scope(self.sessions) as s:
                set_pod_terminated(s, pod_id, now=now, exit_reason="RunPod no longer knows the pod")
            return PodSeen.GONE
        with session_scope(self.sessions) as s:
            row = s.get(Pod, pod_id)
            if row is not None and not row.cost_per_hr_micros and info.cost_per_hr_micros:
                row.cost_per_hr_micros = info.cost_per_hr_micros
            if info.status == "ERROR":
                set_pod_exited(s, pod_id, now=now, exit_reason="RunPod reports ERROR (host lost or crash loop)")
                return PodSeen.ERROR
            if info.status in ("EXITED", "TERMINATED"):
                set_pod_exited(s, pod_id, now=now, exit_reason=f"RunPod reports {info.status}")
                return PodSeen.GONE
            if info.is_running:
                set_pod_running(s, pod_id, now=now, uptime_seconds_api=info.uptime_seconds)
                return PodSeen.RUNNING
            set_pod_seen(s, pod_id, now=now, uptime_seconds_api=info.uptime_seconds)
        if created is not None and (now - created).total_seconds() > self.startup_timeout_s:
            return PodSeen.STUCK
        return PodSeen.STARTING

    async def terminate(self, pod_id: int, *, reason: str) -> None:
        now = self.clock()
        with session_scope(self.sessions) as s:
            pod = s.get(Pod, pod_id)
            assert pod is not None
            if pod.status is PodStatus.TERMINATED:
                return
            asked_before = pod.terminate_requested_at  # a run that died right after asking RunPod
            set_pod_terminate_requested(s, pod_id, now=now)
            runpod_id, name, billing_start = pod.runpod_pod_id, pod.name, _billing_start_if_found(pod)
        if runpod_id is None:
            # Never confirmed by RunPod: look it up by name in case the create went through after all.
            found = [p for p in await self.cloud.list_pods(name) if p.name == name]
            if found:
                with session_scope(self.sessions) as s:
                    set_pod_created(
                        s,
                        pod_id,
                        runpod_pod_id=found[0].id,
                        cost_per_hr_micros=found[0].cost_per_hr_micros,
                        now=now,
                        # Billed since that run's create call, not since we found it.
                        api_created_at=billing_start,
                    )
                runpod_id = found[0].id
        billing_ended_at: dt.datetime | None = None
        if runpod_id is not None:
            if asked_before is not None:
                try:
                    await self.cloud.get_pod(runpod_id)
                except PodNotFound:
                    billing_ended_at = asked_before  # the earlier terminate went through: billing ended then
            ended = await self._terminate_call(runpod_id)
            billing_ended_at = billing_ended_at or ended
        with session_scope(self.sessions) as s:
            set_pod_terminated(s, pod_id, now=billing_ended_at or self.clock(), exit_reason=reason)
            pod = s.get(Pod, pod_id)
            assert pod is not None
            ledger.close_pod_cost(s, pod)

    async def _terminate_call(self, runpod_id: str) -> dt.datetime:
        """Terminate at RunPod; when it took effect: the middle of the try that worked (earlier ones failed)."""
        sent = [self.clock()]
        await self.cloud.terminate_pod(runpod_id, on_attempt=lambda: sent.append(self.clock()))
        return during(sent[-1], self.clock())

    async def reap(self, only: Collection[str] | None = None) -> list[str]:
        """Terminate every `lorabot-*` pod at RunPod that no live job owns; report each one.

        ``only`` (RunPod pod ids) limits it to pods an operator was shown; each is checked again here, so a pod
        a job took over in the meantime is left alone."""
        reaped = []
        pods = await self.cloud.list_pods("lorabot-")
        now = self.clock()
        for pod in pods:
            parsed = parse_pod_name(pod.name)
            if parsed is None or (only is not None and pod.id not in only):
                continue
            with session_scope(self.sessions) as s:
                job = get_job(s, parsed.job_id)
                row = s.execute(select(Pod).where(Pod.name == pod.name)).scalar_one_or_none()
                owned = owned_by_live_job(s, pod, now)
            if owned:
                continue
            ended = await self._terminate_call(pod.id)
            with session_scope(self.sessions) as s:
                if row is not None and row.runpod_pod_id in (None, pod.id):
                    if row.runpod_pod_id is None:
                        # Created by a run that died before writing the id down: billed since its create call.
                        set_pod_created(
                            s,
                            row.id,
                            runpod_pod_id=pod.id,
                            cost_per_hr_micros=pod.cost_per_hr_micros,
                            now=now,
                            api_created_at=_billing_start_if_found(row),
                        )
                    set_pod_terminated(s, row.id, now=ended, exit_reason="reaped: no live job owns it")
                    reaped_row = s.get(Pod, row.id)
                    assert reaped_row is not None
                    ledger.close_pod_cost(s, reaped_row)
                add_notice(
                    s,
                    job_id=parsed.job_id if job is not None else None,
                    kind=NoticeKind.INFO,
                    key=f"reaper:{pod.id}",
                    now=now,
                    payload={"text": f"reaper terminated pod {pod.name} ({pod.id}): no live job owned it"},
                )
            reaped.append(pod.name)
            log.warning("reaper terminated %s (%s)", pod.name, pod.id)
        return reaped
