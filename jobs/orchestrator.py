"""The controller: turns queued jobs into pods and pods into results, one small non-blocking step per tick.

Shape (STYLE.md: SkyPilot's controller, dstack's checks): `tick()` loads the active jobs and `advance()`s each by at
most one step: look at the world once (a status object, one `get_pod`), transition in the DB, then act. Every
transition is committed before its side effect, and every side effect is idempotent:
- pods have deterministic names and a row written *before* the API call; a pod row without a RunPod id is looked up
  by name before anything is created again (a crash between "RunPod answered" and "we wrote it down" costs nothing);
- terminate is idempotent and retried by the next tick, and a clean-up pass terminates any live pod of a finished
  job; the reaper terminates any `lorabot-*` pod at RunPod that no live job owns.
A restarted orchestrator is just the next tick: everything it needs is in the DB and the bucket.

Time comes from an injected clock, so the RunPod emulator's simulated time drives deadlines and costs in tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs import billing_sync, ledger
from jobs.captioned import captions_noticed, store_captioned
from jobs.captions import manifest_section as caption_manifest
from jobs.cloud import (
    AsyncCloud,
    CandidateForbidden,
    CandidateRefused,
    CloudContractError,
    CloudError,
    CloudTransientError,
    GpuOffer,
    InsufficientBalance,
    PodRequest,
)
from jobs.config import Settings
from jobs.leadership import Leadership
from jobs.manifest import JobKeys, ModelSource, agent_key, build_manifest, recipe_hash, start_command
from jobs.placement import Placement, Site, cold_cpu_stage_micros, place
from jobs.pods import Clock, PodKeeper, PodSeen
from jobs.prices import built_in_table
from jobs.queue import JobPlan, ModelFileRef
from jobs.sdscripts import HUB_ENDPOINT, TOKENIZERS, tokenizer_manifest
from jobs.states import CacheKind, JobStatus, NoticeKind, PodRole, PodStatus
from jobs.trying import Tries, try_manifest_key
from jobs.volumes import confirm_pruned, prune_in_flight, prune_order
from storage.artifacts import ArtifactStoreError
from storage.db import session_scope
from storage.models import Job, Notice, Pod, Volume
from storage.queries import (
    count_jobs_in,
    get_job,
    get_volume_for_data_center,
    is_cache_ready,
    list_active_jobs,
    list_live_pods,
    list_pods_for_job,
    mark_cache_ready,
    record_volume,
    record_volume_resize,
)
from storage.transitions import (
    InvalidTransition,
    NoticeDraft,
    add_notice,
    record_pod_intent,
    transition,
)
from storage.tries import pod_kept

log = logging.getLogger(__name__)


RUNNING_STATES = frozenset({JobStatus.PREPARING, JobStatus.TRAINING, JobStatus.INTERRUPTED, JobStatus.COLLECTING})
# What the agent's error kinds mean for the job, and what to tell the user to try.
_TRAINER_HINTS = {
    "oom": "the GPU ran out of memory: lower batch_size or resolution, or enable gradient checkpointing",
    "nan": "the loss became NaN: lower the learning rates (unet_lr, te_lr) or use bf16",
    "assertion": "sd-scripts refused the settings; the message above says which",
    "missing_file": "a file sd-scripts needed was missing on the volume",
    "trainer_crash": "sd-scripts crashed; the log tail is in the bucket",
    "no_gpu": "the pod had no usable GPU (CUDA not available); the job can be retried on another pod",
    "hang": "sd-scripts stopped making progress; /retry resumes from the last saved epoch",
    "tagger": "sd-scripts' WD14 tagger failed on the CPU pod while captioning; caption the images yourself, or train "
    "with captions: off",
}
# The cached environment on the volume does not work (jobs/agent/train.py check_gpu): the operator's to fix, so the
# job fails as internal, with what to do.
_ENV_HINTS = {
    "env_mismatch": "the cached environment's venv cannot run on this pod's image: its interpreter is missing or "
    "another Python than the one that built it. Another pod of the same image fails the same way, so no new pod is "
    "tried; an operator must make the recipe's interpreter (jobs/recipe.py VENV_PYTHON) exist at the recorded "
    "version on both the CPU and the GPU image",
    "env_broken": "the cached environment on the volume is broken (torch does not import in it). Every pod uses the "
    "same environment, so no new pod is tried; it must be rebuilt: an operator deletes lorabot/env/<hash> on the "
    "volume (or changes the recipe), and the next job's CPU stage builds it again",
}
# Agent error kinds that are the user's (their data, or sd-scripts on their options): a new pod would fail the same
# way, so the job fails at once. Any other failure (env_build, model_download, no_gpu, ready_timeout, internal,
# agent_restarted, ...) may be the pod's: one new pod is tried first.
_USERS_FAILURES = frozenset({"dataset", "oom", "nan", "assertion", "missing_file", "trainer_crash", "hang", "tagger"})
# Failures any new pod meets again: the user's, and an environment on the volume that does not work.
_FAILS_ON_EVERY_POD_KINDS = _USERS_FAILURES | frozenset(_ENV_HINTS)
# How many times a job's CPU or GPU agent that restarts, stops reporting or fails on the pod's side is replaced
# before the job fails with the agent's own error (lost GPU hosts are counted apart, by max_gpu_attempts).
_AGENT_REPLACEMENTS = 1
_AGENT_ERROR_CHARS = 300


class Store(Protocol):
    """The part of storage.artifacts.ArtifactStore the orchestrator uses."""

    def put_bytes(self, key: str, data: bytes, content_type: str = ...) -> Any: ...

    def get_bytes(self, key: str, max_bytes: int = ...) -> bytes | None: ...

    def exists(self, key: str) -> bool: ...

    def sha256_of(self, key: str) -> str | None: ...

    def presign_get(self, key: str, expires_s: int) -> str: ...

    def presign_put(self, key: str, expires_s: int) -> str: ...

    # The captioned dataset the CPU pod uploaded is stored under its hash (jobs/captioned.py).
    def download(self, key: str, path: Path) -> Any: ...

    def put_dataset(self, sha256: str, path: Path) -> Any: ...


@dataclass(frozen=True)
class GpuChoice:
    gpu_type_id: str
    cloud: str = "SECURE"

    def __post_init__(self) -> None:
        if self.cloud != "SECURE":
            # lorabot's GPU pods train on the Network Volume, which RunPod mounts only on Secure Cloud pods.
            raise ValueError(f"{self.gpu_type_id} ({self.cloud}): only SECURE GPUs can mount the Network Volume")


@dataclass(frozen=True)
class OrchestratorConfig:
    data_center_id: str = "EU-RO-1"
    # The data centers jobs may run in, in the operator's order (runpod.data_centers), one Network Volume each;
    # empty: data_center_id alone.
    data_centers: tuple[str, ...] = ()
    volume_size_gb: int = 30
    volume_max_gb: int = 500
    volume_mount_path: str = "/workspace"
    cpu_image: str = "runpod/base:1.0.2-ubuntu2204"
    gpu_image: str = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
    cpu_flavor: str = "cpu3g"
    cpu_vcpus: int = 2
    container_disk_gb: int = 20
    gpu_fallback: tuple[GpuChoice, ...] = (
        GpuChoice("NVIDIA GeForce RTX 4090", "SECURE"),
        GpuChoice("NVIDIA GeForce RTX 3090", "SECURE"),
    )
    min_gpu_memory_gb: int = 24
    max_gpu_price_micros_per_hr: int = 800_000
    reserve_margin_s: int = 120
    gpu_startup_guess_s: int = 120
    no_stock_deadline_s: int = 1800
    startup_timeout_s: int = 1200
    status_stale_s: int = 600
    max_concurrent_jobs: int = 2
    max_gpu_attempts: int = 3
    max_cpu_attempts: int = 2
    url_lifetime_s: int = 7 * 24 * 3600
    status_interval_s: float = 5.0
    # After RunPod's 402 (no balance), how long no pod is created before one create tries again.
    balance_retry_s: int = 300
    volume_price_micros_per_gb_month: int = ledger.VOLUME_PRICE_MICROS_PER_GB_MONTH
    # Monthly limits when the budgets table has none (None = unlimited).
    user_budget_micros: int | None = None
    team_budget_micros: int | None = None
    # Extra env for every pod (the sandbox's trainer speed; never secrets: pods' env is visible to their owner).
    pod_env: tuple[tuple[str, str], ...] = ()
    # Where the CPU stage fetches tokenizers (a stand-in Hub in the sandbox and the test world).
    hub_endpoint: str = HUB_ENDPOINT
    # A CPU-stage job checks its data center's GPU stock this often (one catalog call), to move before it is too late.
    stock_check_s: int = 60
    # /try (jobs/trying.py): the test window's default and largest length (minutes; 0 = none), how long a /try pod
    # idles for the next request, how long an estimate may wait for Confirm, and how often the window's line is redrawn.
    test_window_min: int = 0
    test_window_max_min: int = 60
    try_linger_s: int = 300
    try_confirm_s: int = 900
    window_refresh_s: int = 60

    @property
    def placement_data_centers(self) -> tuple[str, ...]:
        return self.data_centers or (self.data_center_id,)

    @classmethod
    def from_settings(cls, settings: Settings) -> OrchestratorConfig:
        rp = settings.runpod

        def micros(value: Decimal | None) -> int | None:
            return None if value is None else int(value * 1_000_000)

        return cls(
            data_center_id=rp.data_centers[0],
            data_centers=tuple(rp.data_centers),
            volume_size_gb=rp.volume_size_gb,
            volume_max_gb=rp.volume_max_gb,
            volume_mount_path=rp.volume_mount_path,
            cpu_image=rp.cpu_image,
            gpu_image=rp.gpu_image,
            cpu_flavor=rp.cpu_flavor,
            cpu_vcpus=rp.cpu_vcpus,
            container_disk_gb=rp.container_disk_gb,
            gpu_fallback=tuple(GpuChoice(c.gpu_type_id, c.cloud) for c in rp.gpu_fallback),
            min_gpu_memory_gb=rp.min_gpu_memory_gb,
            max_gpu_price_micros_per_hr=micros(rp.max_gpu_price_per_hr) or 0,
            reserve_margin_s=rp.reserve_margin_s,
            gpu_startup_guess_s=rp.gpu_startup_guess_s,
            no_stock_deadline_s=rp.no_stock_deadline_s,
            startup_timeout_s=rp.startup_timeout_s,
            status_stale_s=rp.status_stale_s,
            max_concurrent_jobs=settings.limits.max_concurrent_gpu_jobs,
            user_budget_micros=micros(settings.limits.monthly_budget_user_usd),
            team_budget_micros=micros(settings.limits.monthly_budget_team_usd),
            url_lifetime_s=settings.s3.link_lifetime_s,
            test_window_min=settings.limits.test_window_min,
            test_window_max_min=settings.limits.test_window_max_min,
            try_linger_s=settings.limits.try_linger_s,
        )


@dataclass
class TickReport:
    """What one tick did, for logs and tests."""

    advanced: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reaped: list[str] = field(default_factory=list)
    # True when another process holds the orchestrator lease and this tick did nothing.
    standby: bool = False


class Orchestrator:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        cloud: AsyncCloud,
        store: Store,
        config: OrchestratorConfig,
        env_recipe: dict[str, Any],
        agent_bundle: tuple[bytes, str],
        clock: Clock = lambda: dt.datetime.now(dt.UTC),
        model_token_env: dict[str, str] | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.sessions = sessions
        # The database lease that lets one process act when several share the database (None: always act, as
        # tests, benches and one-off tools that own their database do).
        self.leadership = leadership
        self.cloud = cloud
        self.store = store
        self.config = config
        self.env_recipe = env_recipe
        self.env_hash = recipe_hash(env_recipe)
        self._agent_bytes, self._agent_sha = agent_bundle
        self.clock = clock
        self.pods = PodKeeper(sessions=sessions, cloud=cloud, clock=clock, startup_timeout_s=config.startup_timeout_s)
        # Values of gated-model tokens by env name (HF_TOKEN): only those a job's model names go into its pod.
        self._model_tokens = dict(model_token_env or {})
        self._lock = asyncio.Lock()
        # Volume ids confirmed at RunPod by this process.
        self._volumes_seen: set[str] = set()
        # After a 402 no pod is created for anyone until this moment passes; then one create tries again.
        self._balance_blocked_until: dt.datetime | None = None
        # Pod row id -> (the seq of its stage's status, when this process saw that seq first): the preparing pods'
        # sign of life. Kept in memory: after a restart the silence counts again from the first look (later, never
        # wrongly, given up).
        self._status_seen: dict[int, tuple[int, dt.datetime]] = {}
        # Job id -> when this process last checked the GPU stock of the data center its CPU stage runs in.
        self._stock_checked: dict[int, dt.datetime] = {}
        # The CPU pod's hourly price from RunPod's catalog, read once (placement prices a cold CPU stage with it).
        self._cpu_hourly_micros: int | None = None
        # /try and the test window on finished jobs (jobs/trying.py), advanced by the same tick.
        self.tries = Tries(self)

    # -- the tick ----------------------------------------------------------------------------------------------

    async def tick(self) -> TickReport:
        """Advance every active job by one step, then clean up pods of finished jobs. Never runs twice at once."""
        report = TickReport()
        async with self._lock:
            if self.leadership is not None and not self.leadership.hold():
                report.standby = True
                return report
            with session_scope(self.sessions) as s:
                active = [(job.id, job.status) for job in list_active_jobs(s)]
            # Queued jobs start oldest first, as many as there are free slots; the rest wait without a look
            # (a long queue costs one query per tick, not one per job).
            free_slots = self.config.max_concurrent_jobs - sum(1 for _, st in active if st in RUNNING_STATES)
            job_ids = []
            balance_blocked = self._balance_blocked()
            for job_id, status in active:
                if status is JobStatus.QUEUED:
                    # Without balance a queued job waits where it is: nothing is started that cannot be paid.
                    if free_slots <= 0 or balance_blocked:
                        continue
                    free_slots -= 1
                job_ids.append(job_id)
            for job_id in job_ids:
                # A leader whose lease ran out while it worked (a hung call, a paused host) stops before the next step.
                if self.leadership is not None and not self.leadership.ensure():
                    report.standby = True
                    return report
                try:
                    await self._advance(job_id)
                    report.advanced.append(f"j{job_id}")
                except (CloudTransientError, ArtifactStoreError, OSError) as exc:
                    log.warning("job j%s: transient error, retrying next tick: %s", job_id, exc)
                    report.errors.append(f"j{job_id}: {exc}")
                except InsufficientBalance as exc:
                    self._balance_short(job_id, exc)
                    report.errors.append(f"j{job_id}: {exc}")
                except CloudContractError as exc:
                    # Our bug, not RunPod's mood: retrying sends the same invalid body. The log has RunPod's list.
                    report.errors.append(f"j{job_id}: {exc}")
                    await self._fail(
                        job_id,
                        JobStatus.FAILED_INTERNAL,
                        "RunPod refused lorabot's request as invalid (HTTP 422): a lorabot bug, details in the "
                        "bot's log; nothing more was created",
                    )
                except Exception as exc:  # one bad job must not stop the others
                    log.exception("job j%s: unexpected error", job_id)
                    report.errors.append(f"j{job_id}: {type(exc).__name__}: {exc}")
            try:
                await self.tries.tick()
            except Exception as exc:  # /try must never stop the jobs' tick
                log.exception("/try tick failed")
                report.errors.append(f"try: {type(exc).__name__}: {exc}")
            await self._clean_up_finished()
            # RunPod's own bill for pods of finished jobs, kept beside the ledger (never raises on RunPod's errors).
            await billing_sync.sync_finished_jobs(self.sessions, self.cloud, self.clock)
        return report

    async def cancel(self, job_id: int, *, by: str = "user") -> Job:
        """Stop a job at any state, pods first; safe to call twice and before any pod id is known."""
        now = self.clock()
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            if job.status is JobStatus.QUEUED and not list_pods_for_job(s, job_id):
                job = transition(
                    s,
                    job_id,
                    JobStatus.CANCELLED,
                    now=now,
                    reason=f"cancelled by {by}",
                    notice=NoticeDraft(NoticeKind.CANCELLED, {"cost": _cost_payload(s, job_id, now)}),
                )
                return job
            if not job.status.is_terminal() and job.status is not JobStatus.CANCELLING:
                transition(s, job_id, JobStatus.CANCELLING, now=now, reason=f"cancelled by {by}", notify=False)
        async with self._lock:
            # A standby only records the request: the leader's next tick stops the pods.
            if self.is_leader():
                await self._advance(job_id)
        with session_scope(self.sessions) as s:
            return _require_job(s, job_id)

    async def reap(self) -> list[str]:
        """Terminate every `lorabot-*` pod at RunPod that no live job owns; report each one (the leader only)."""
        if self.leadership is not None and not self.leadership.ensure():
            return []
        return await self.pods.reap()

    def is_leader(self) -> bool:
        """Whether this process may act on jobs now (holds the lease, or runs without one)."""
        return self.leadership is None or self.leadership.is_held()

    async def step_down(self) -> None:
        """A clean stop: let a tick in flight finish, then give the lease up so another process takes over now."""
        if self.leadership is None:
            return
        async with self._lock:
            self.leadership.release()

    # -- one job -----------------------------------------------------------------------------------------------

    async def _advance(self, job_id: int) -> None:
        now = self.clock()
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            status = job.status
            if status.is_terminal():
                return
            if status is not JobStatus.CANCELLING:
                failure = self._deadline_or_budget_failure(s, job, now)
                if failure is not None:
                    kind, reason = failure
                    transition(
                        s,
                        job_id,
                        kind,
                        now=now,
                        reason=reason,
                        notice=NoticeDraft(NoticeKind.FAILED, {"reason": reason}),
                    )
                    status = kind
        if status.is_terminal():
            await self._terminate_job_pods(job_id)
            self._close_costs(job_id)
            return
        handler = {
            JobStatus.QUEUED: self._queued,
            JobStatus.PREPARING: self._preparing,
            JobStatus.TRAINING: self._training,
            JobStatus.INTERRUPTED: self._interrupted,
            JobStatus.COLLECTING: self._collecting,
            JobStatus.CANCELLING: self._cancelling,
        }[status]
        await handler(job_id)

    def _deadline_or_budget_failure(self, s: Session, job: Job, now: dt.datetime) -> tuple[JobStatus, str] | None:
        # A queued job's deadline is moved to "start + wall time" when it starts (see _queued).
        if job.deadline_at is not None and job.status is not JobStatus.QUEUED and now > job.deadline_at:
            return (
                JobStatus.FAILED_TIMEOUT,
                f"the job ran past its wall-time limit ({job.deadline_at:%Y-%m-%d %H:%M} UTC)",
            )
        if job.status is not JobStatus.QUEUED and ledger.exceeds_job_budget(s, job.id, now=now):
            spent = ledger.job_cost(s, job.id, now=now).total_micros
            return JobStatus.FAILED_BUDGET, (
                f"the job spent {ledger.format_usd(spent)}, over its budget of "
                f"{ledger.format_usd(job.budget_micros or 0)}; pods were stopped"
            )
        return None

    async def _queued(self, job_id: int) -> None:
        now = self.clock()
        with session_scope(self.sessions) as s:
            if count_jobs_in(s, RUNNING_STATES) >= self.config.max_concurrent_jobs:
                return
            job = _require_job(s, job_id)
            if job.cancel_requested_at is not None:
                return
            refusal = self._budget_refusal(s, job, now)
        if refusal is not None:
            await self._fail(job_id, JobStatus.FAILED_BUDGET, refusal)
            return
        with session_scope(self.sessions) as s:
            planned = JobPlan.from_json(_require_job(s, job_id).plan_json)
        placement = await self._place(planned)
        volume = await self._ensure_volume(placement.data_center_id)
        if self._waits_for_prune(job_id, volume):
            return
        with session_scope(self.sessions) as s:
            need_gb = JobPlan.from_json(_require_job(s, job_id).plan_json).volume_gb
        if need_gb > volume.size_gb:
            if need_gb > self.config.volume_max_gb:
                await self._fail(
                    job_id,
                    JobStatus.FAILED_INTERNAL,
                    f"this job needs about {need_gb} GB on the Network Volume (environment, model, its LoRAs and "
                    f"states), more than the {self.config.volume_max_gb} GB lorabot may grow it to "
                    f"(runpod.volume_max_gb); nothing was started",
                )
                return
            volume = await self._grow_volume(job_id, volume, need_gb)
        self._ensure_agent_uploaded()
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            plan = JobPlan.from_json(job.plan_json)
            # The wall-time limit counts from the start, not from the time spent waiting in the queue.
            deadline = now + (job.deadline_at - job.queued_at) if job.deadline_at is not None else None
            warm = self._volume_warm(s, volume.id, plan)
        stages = ["prepare"] if plan.caption_only else ["prepare", "train"] if warm else ["train"]
        self._write_manifest(job_id, plan, stages=stages)
        where = f"{placement.reason}. " if placement.reason else ""
        with session_scope(self.sessions) as s:
            transition(
                s,
                job_id,
                JobStatus.PREPARING,
                now=now,
                expected=JobStatus.QUEUED,
                volume_id=volume.id,
                data_center_id=volume.data_center_id,
                env_hash=self.env_hash,
                cpu_needed=not warm,
                deadline_at=deadline,
                notice=NoticeDraft(
                    NoticeKind.PREPARING,
                    {
                        "warm": warm,
                        "data_center": volume.data_center_id,
                        "text": where
                        + (
                            "the volume already holds the environment and the model: straight to the GPU"
                            if warm
                            else "renting a CPU pod to build the environment and fetch the model and dataset"
                        ),
                    },
                ),
            )
        await self._preparing(job_id)

    async def _grow_volume(self, job_id: int, volume: Volume, size_gb: int) -> Volume:
        """Grow the data center's volume to what the job needs before any pod writes to it (RunPod grows a volume
        in place, files kept, and bills the new size from then on; the ledger follows from this moment)."""
        assert volume.runpod_volume_id is not None
        info = await self.cloud.resize_volume(volume.runpod_volume_id, size_gb)
        log.info(
            "volume %s grown from %s to %s GB for j%s", volume.runpod_volume_id, volume.size_gb, info.size_gb, job_id
        )
        with session_scope(self.sessions) as s:
            return record_volume_resize(s, volume.id, size_gb=max(info.size_gb, size_gb), now=self.clock())

    def _budget_refusal(self, s: Session, job: Job, now: dt.datetime) -> str | None:
        """Checked before any money is spent: the month's spending, this job's estimate included, within budget?"""
        check = ledger.would_exceed(
            s,
            job.user_id,
            ledger.month_of(job.created_at),
            0,
            now=now,
            default_user_limit_micros=self.config.user_budget_micros,
            default_team_limit_micros=self.config.team_budget_micros,
        )
        if check.allowed:
            return None
        if check.user_limit_micros is not None and check.user_committed_micros > check.user_limit_micros:
            return (
                f"this month's jobs, this one included (about {ledger.format_usd(job.estimate_micros)}), "
                f"would cost {ledger.format_usd(check.user_committed_micros)}: over your budget of "
                f"{ledger.format_usd(check.user_limit_micros)}; nothing was started"
            )
        return (
            f"the team's jobs this month would cost {ledger.format_usd(check.team_committed_micros)}: over the "
            f"team budget of {ledger.format_usd(check.team_limit_micros or 0)}; nothing was started"
        )

    async def _preparing(self, job_id: int) -> None:
        """The CPU pod fills the volume while the GPU pod is rented to be up when READY lands.

        A stage is done when the agent's status says so, never when a pod "exits": RunPod starts an ended container
        again. A pod whose agent restarted, went silent or failed on the pod's side is replaced once."""
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            cpu_needed = bool(job.cpu_needed)
            plan = JobPlan.from_json(job.plan_json)
        prepare: dict[str, Any] | None = None
        ready = not cpu_needed
        if cpu_needed:
            cpu_attempt = self._cpu_attempt(job_id)
            cpu = await self._ensure_pod(job_id, PodRole.CPU, attempt=cpu_attempt, offer=None)
            prepare = self._read_status(job_id, plan, "prepare", pod=cpu)
            # Its prune step's report comes before anything else it does: settled even if the stage fails later.
            self._confirm_prunes(job_id, cpu, prepare or {})
            ready = prepare is not None and prepare.get("phase") == "ready"
            if ready:
                await self.pods.terminate(cpu.id, reason="the volume is ready")
                self._store_captions(job_id, plan, prepare or {})
                self._mark_cache(job_id, plan)
                if plan.caption_only:
                    await self._captioned_only(job_id, prepare or {})
                    return
            else:
                if _fails_on_every_pod(prepare):
                    await self._fail_from_agent(job_id, prepare or {}, stage="prepare")
                    return
                trouble = _agent_trouble(prepare, "CPU", "prepare") or await self._pod_trouble(cpu, prepare, "CPU")
                if trouble is not None:
                    await self._replace_cpu(job_id, cpu, cpu_attempt, trouble, prepare)
                    return
        if plan.caption_only:
            return  # /caption: the CPU pod is the whole job; no GPU is ever rented for it
        gpu = self._current_gpu_pod(job_id)
        if gpu is None:
            if cpu_needed and not ready and await self._moved_for_stock(job_id, plan):
                return
            if ready or self._should_reserve_gpu(prepare):
                await self._reserve_gpu(job_id)
            return
        train = self._read_status(job_id, plan, "train", pod=gpu)
        if _fails_on_every_pod(train):
            await self._fail_from_agent(job_id, train or {}, stage="train")
            return
        if train is not None and train.get("phase") in ("training", "uploading", "succeeded"):
            with session_scope(self.sessions) as s:
                transition(
                    s,
                    job_id,
                    JobStatus.TRAINING,
                    now=self.clock(),
                    expected=JobStatus.PREPARING,
                    notice=NoticeDraft(
                        NoticeKind.INFO, {"text": "training started", "gpu": gpu.gpu_type_id, "cloud": gpu.cloud_type}
                    ),
                )
            await self._training(job_id)
            return
        # A warm job's GPU pod prepares the volume itself first: that status is its agent's voice until training.
        agent = train if train is not None or cpu_needed else self._read_status(job_id, plan, "prepare", pod=gpu)
        trouble = _agent_trouble(agent, "GPU", "train" if train is not None else "prepare")
        if trouble is not None:
            await self._gpu_agent_trouble(job_id, gpu, trouble, agent, stage="train")
            return
        seen = await self.pods.observe(gpu.id)
        if seen in (PodSeen.ERROR, PodSeen.GONE, PodSeen.STUCK):
            await self._replace_gpu(job_id, gpu, f"the GPU pod was {_SEEN_TEXT[seen]} before training started")
        elif seen is PodSeen.RUNNING and (ready or not cpu_needed) and self._silent(gpu, agent):
            await self._gpu_agent_trouble(job_id, gpu, "the GPU pod's agent stopped reporting", agent, stage="train")

    async def _training(self, job_id: int) -> None:
        with session_scope(self.sessions) as s:
            plan = JobPlan.from_json(_require_job(s, job_id).plan_json)
        gpu = self._current_gpu_pod(job_id)
        if gpu is None:
            await self._reserve_gpu(job_id)
            return
        train = self._read_status(job_id, plan, "train", pod=gpu)
        if train is not None:
            self._announce_epochs(job_id, plan, train)
            phase = train.get("phase")
            if phase == "succeeded":
                with session_scope(self.sessions) as s:
                    transition(
                        s, job_id, JobStatus.COLLECTING, now=self.clock(), expected=JobStatus.TRAINING, notify=False
                    )
                await self._collecting(job_id)
                return
            if _fails_on_every_pod(train):
                await self._fail_from_agent(job_id, train, stage="train")
                return
            if phase == "interrupted":
                await self._interrupt(
                    job_id, gpu, f"the GPU pod was interrupted after epoch {train.get('last_completed_epoch') or 0}"
                )
                return
        trouble = _agent_trouble(train, "GPU", "train")
        if trouble is not None:
            await self._gpu_agent_trouble(job_id, gpu, trouble, train, stage="train")
            return
        seen = await self.pods.observe(gpu.id)
        if seen in (PodSeen.ERROR, PodSeen.GONE):
            # A lost host: nothing wrong with the agent, so no agent replacement is counted (max_gpu_attempts is).
            await self._interrupt(job_id, gpu, f"the GPU pod was {_SEEN_TEXT[seen]} while training")
        elif seen is PodSeen.STUCK:
            await self._interrupt(job_id, gpu, "the GPU pod stopped reporting: it is not running")
        elif self._status_is_stale(job_id):
            await self._gpu_agent_trouble(job_id, gpu, "the GPU pod's agent stopped reporting", train, stage="train")

    async def _interrupted(self, job_id: int) -> None:
        attempts = self._gpu_pods_started(job_id)
        for pod in self._live_pods(job_id, PodRole.GPU):
            await self.pods.terminate(pod.id, reason="replaced after an interruption")
        if attempts >= self.config.max_gpu_attempts:
            await self._fail(
                job_id,
                JobStatus.FAILED_INTERNAL,
                f"the GPU pod was lost {attempts} times; giving up (the last saved epoch is kept)",
            )
            return
        if await self._reserve_gpu(job_id):
            with session_scope(self.sessions) as s:
                transition(
                    s,
                    job_id,
                    JobStatus.TRAINING,
                    now=self.clock(),
                    expected=JobStatus.INTERRUPTED,
                    notice=NoticeDraft(
                        NoticeKind.INFO, {"text": "resuming from the last saved epoch on a new GPU pod"}
                    ),
                )

    async def _collecting(self, job_id: int) -> None:
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            plan = JobPlan.from_json(job.plan_json)
        gpu = self._current_gpu_pod(job_id)
        train = self._read_status(job_id, plan, "train", pod=gpu) or {}
        self._announce_epochs(job_id, plan, train)
        keys = JobKeys(f"j{job_id}", plan.output_name)
        final = train.get("final") or {}
        stored_sha = self.store.sha256_of(keys.final)
        if not final.get("sha256") or stored_sha != final["sha256"]:
            await self._fail(
                job_id,
                JobStatus.FAILED_INTERNAL,
                "the final LoRA in the store does not match the sha256 the pod reported",
            )
            return
        # The test window (jobs/trying.py): the training pod stays up, serving /try, when the job has one.
        with session_scope(self.sessions) as s:
            wanted = self.tries.window_minutes(_require_job(s, job_id)) > 0
            keep = gpu if wanted and gpu is not None and gpu.status is not PodStatus.TERMINATED else None
        await self._terminate_job_pods(job_id, keep=keep)
        now = self.clock()
        with session_scope(self.sessions) as s:
            pods = [p for p in list_pods_for_job(s, job_id) if keep is None or p.id != keep.id]
            if any(p.status is not PodStatus.TERMINATED for p in pods):
                return  # a terminate failed: the next tick repeats it
        self._close_costs(job_id)
        with session_scope(self.sessions) as s:
            if keep is not None:
                self.tries.open_window(s, job_id, keep, now)
            epochs = [
                {
                    "epoch": e["epoch"],
                    "key": keys.checkpoint(e["epoch"]),
                    "sha256": (e.get("checkpoint") or {}).get("sha256"),
                    "size": (e.get("checkpoint") or {}).get("size"),
                }
                for e in train.get("epochs") or []
                if e.get("checkpoint")
            ]
            transition(
                s,
                job_id,
                JobStatus.SUCCEEDED,
                now=now,
                expected=JobStatus.COLLECTING,
                notice=NoticeDraft(
                    NoticeKind.SUCCEEDED,
                    {
                        "final": {"key": keys.final, "sha256": final["sha256"], "size": final.get("size")},
                        "epochs": epochs,
                        "cost": _cost_payload(s, job_id, now),
                    },
                ),
            )

    async def _captioned_only(self, job_id: int, prepare: dict[str, Any]) -> None:
        """A /caption job ends when its CPU pod has tagged the dataset: once that pod is gone (a failed terminate is
        repeated by the next tick), close the cost and succeed with the captioned dataset's hash."""
        with session_scope(self.sessions) as s:
            if any(p.status is not PodStatus.TERMINATED for p in list_pods_for_job(s, job_id)):
                return
        self._close_costs(job_id)
        now = self.clock()
        found = prepare.get("captions")
        summary: dict[str, Any] = found if isinstance(found, dict) else {}
        with session_scope(self.sessions) as s:
            transition(
                s,
                job_id,
                JobStatus.SUCCEEDED,
                now=now,
                expected=JobStatus.PREPARING,
                notice=NoticeDraft(
                    NoticeKind.SUCCEEDED,
                    {
                        "caption_only": True,
                        "sha256": summary.get("sha256"),
                        "tagged": summary.get("tagged"),
                        "images": summary.get("images"),
                        "cost": _cost_payload(s, job_id, now),
                    },
                ),
            )

    async def _cancelling(self, job_id: int) -> None:
        await self._terminate_job_pods(job_id)
        with session_scope(self.sessions) as s:
            if any(p.status is not PodStatus.TERMINATED for p in list_pods_for_job(s, job_id)):
                return
        self._close_costs(job_id)
        now = self.clock()
        with session_scope(self.sessions) as s:
            transition(
                s,
                job_id,
                JobStatus.CANCELLED,
                now=now,
                expected=JobStatus.CANCELLING,
                notice=NoticeDraft(NoticeKind.CANCELLED, {"cost": _cost_payload(s, job_id, now)}),
            )

    # -- failure and interruption ------------------------------------------------------------------------------

    async def _fail(self, job_id: int, kind: JobStatus, reason: str) -> None:
        now = self.clock()
        with session_scope(self.sessions) as s:
            try:
                transition(
                    s, job_id, kind, now=now, reason=reason, notice=NoticeDraft(NoticeKind.FAILED, {"reason": reason})
                )
            except InvalidTransition:
                log.info("job j%s: not failing (%s): it moved on", job_id, reason)
        await self._terminate_job_pods(job_id)
        self._close_costs(job_id)

    async def _fail_from_agent(self, job_id: int, status: dict[str, Any], *, stage: str, note: str = "") -> None:
        """Fail the job with the agent's own error (kind and message from its status, shortened)."""
        error = status.get("error") or {}
        kind = str(error.get("kind") or "internal")
        message = _shorten(str(error.get("message") or "no message"))
        if kind == "dataset":
            job_status = JobStatus.FAILED_DATASET
        elif kind in _TRAINER_HINTS:
            job_status = JobStatus.FAILED_TRAINER
        else:
            job_status = JobStatus.FAILED_INTERNAL
        hint = _TRAINER_HINTS.get(kind) or _ENV_HINTS.get(kind)
        reason = f"{stage} failed ({kind}): {message}{note}" + (f" — {hint}" if hint else "")
        await self._fail(job_id, job_status, reason)

    async def _give_up_on_agent(
        self, job_id: int, trouble: str, status: dict[str, Any] | None, *, stage: str, role: str, pods: int
    ) -> None:
        """The agent's trouble came back on a new pod: fail now with its own error, not at the wall-time limit."""
        note = f" ({trouble}, on {pods} {role} pods)"
        if status is not None and status.get("error"):
            await self._fail_from_agent(job_id, status, stage=stage, note=note)
        else:
            await self._fail(job_id, JobStatus.FAILED_INTERNAL, f"{stage} failed: {trouble}, on {pods} {role} pods")

    async def _replace_cpu(
        self, job_id: int, cpu: Pod, attempt: int, trouble: str, status: dict[str, Any] | None
    ) -> None:
        await self.pods.terminate(cpu.id, reason=trouble)
        self._status_seen.pop(cpu.id, None)
        # Counted in the job's data center: a CPU pod left behind by a move to another one was not a failure.
        here = self._cpu_pods_here(job_id)
        if here >= self.config.max_cpu_attempts:
            await self._give_up_on_agent(job_id, trouble, status, stage="prepare", role="CPU", pods=here)
            return
        with session_scope(self.sessions) as s:
            add_notice(
                s,
                job_id=job_id,
                kind=NoticeKind.INFO,
                key=f"j{job_id}:cpu:{attempt + 1}",
                now=self.clock(),
                payload={"text": f"{trouble}; trying a new CPU pod"},
            )
        # A bootstrap that met a flaky network, an image that never pulled: a fresh pod usually works.
        await self._ensure_pod(job_id, PodRole.CPU, attempt=attempt + 1, offer=None)

    async def _gpu_agent_trouble(
        self, job_id: int, gpu: Pod, trouble: str, status: dict[str, Any] | None, *, stage: str
    ) -> None:
        """Replace a GPU pod whose agent restarted, went silent or failed on the pod's side, once per job; the
        replacement resumes from the last saved epoch. A second time, the job fails with the agent's error."""
        key_prefix = f"j{job_id}:agent-replaced:gpu:"
        with session_scope(self.sessions) as s:
            replaced = s.execute(
                select(Notice.id).where(Notice.job_id == job_id, Notice.idempotency_key.startswith(key_prefix))
            ).all()
            status_now = _require_job(s, job_id).status
        self._status_seen.pop(gpu.id, None)
        if len(replaced) >= _AGENT_REPLACEMENTS:
            await self.pods.terminate(gpu.id, reason=trouble)
            await self._give_up_on_agent(job_id, trouble, status, stage=stage, role="GPU", pods=len(replaced) + 1)
            return
        with session_scope(self.sessions) as s:
            add_notice(
                s,
                job_id=job_id,
                kind=NoticeKind.INFO,
                key=f"{key_prefix}{gpu.attempt}",
                now=self.clock(),
                payload={"text": f"{trouble}; trying a new GPU pod"},
            )
        if status_now is JobStatus.TRAINING:
            await self._interrupt(job_id, gpu, trouble)
        else:
            await self._replace_gpu(job_id, gpu, trouble)

    async def _pod_trouble(self, pod: Pod, status: dict[str, Any] | None, role: str) -> str | None:
        """What RunPod (or the agent's silence) says is wrong with a preparing pod, if anything."""
        seen = await self.pods.observe(pod.id)
        if seen in (PodSeen.ERROR, PodSeen.GONE, PodSeen.STUCK):
            return f"the {role} pod was {_SEEN_TEXT[seen]}"
        if seen is PodSeen.RUNNING and self._silent(pod, status):
            return f"the {role} pod's agent stopped reporting"
        return None

    def _silent(self, pod: Pod, status: dict[str, Any] | None) -> bool:
        """No new status from this running pod's agent for status_stale_s (counted from the first look)."""
        now = self.clock()
        seq = int(status.get("seq") or 0) if status is not None else -1
        seen = self._status_seen.get(pod.id)
        if seen is None or seen[0] != seq:
            self._status_seen[pod.id] = (seq, now)
            return False
        return (now - seen[1]).total_seconds() > self.config.status_stale_s

    async def _interrupt(self, job_id: int, gpu: Pod, reason: str) -> None:
        with session_scope(self.sessions) as s:
            transition(
                s,
                job_id,
                JobStatus.INTERRUPTED,
                now=self.clock(),
                reason=reason,
                notice=NoticeDraft(NoticeKind.INTERRUPTED, {"reason": reason}),
            )
        await self.pods.terminate(gpu.id, reason=reason)
        await self._interrupted(job_id)

    async def _replace_gpu(self, job_id: int, gpu: Pod, reason: str) -> None:
        await self.pods.terminate(gpu.id, reason=reason)
        attempts = self._gpu_pods_started(job_id)
        if attempts >= self.config.max_gpu_attempts:
            await self._fail(job_id, JobStatus.FAILED_INTERNAL, f"{reason}; giving up after {attempts} GPU pods")
            return
        await self._reserve_gpu(job_id)

    # -- GPU reservation ---------------------------------------------------------------------------------------

    def _should_reserve_gpu(self, prepare: dict[str, Any] | None) -> bool:
        """Seed 000's trick: rent the GPU so that it is up just as the CPU stage finishes."""
        if prepare is None:
            return False
        eta = prepare.get("eta_seconds")
        if eta is None:
            return False
        return float(eta) <= self._gpu_startup_s() + self.config.reserve_margin_s

    def _gpu_startup_s(self) -> float:
        """The GPU start-up time observed on our recent pods (RunPod's image pull), else the configured guess."""
        with session_scope(self.sessions) as s:
            rows = s.execute(
                select(Pod.api_created_at, Pod.started_at)
                .where(Pod.role == PodRole.GPU, Pod.started_at.is_not(None), Pod.api_created_at.is_not(None))
                .order_by(Pod.id.desc())
                .limit(5)
            ).all()
        samples = [(started - created).total_seconds() for created, started in rows if started and created]
        return max(samples) if samples else float(self.config.gpu_startup_guess_s)

    async def _reserve_gpu(self, job_id: int) -> bool:
        """Create the next GPU pod through the fallback list; False (and a notice) when nothing could be placed.

        RunPod's createPod places one GPU type and never falls back, so the list is tried in order: a 400 (not
        placeable now) or a 403 (no access to that pool) moves on to the next candidate; a 402 stops them all.
        """
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            dc, status = job.data_center_id or self.config.data_center_id, job.status
            plan = JobPlan.from_json(job.plan_json)
        offers = await self.cloud.list_gpu_offers(dc, clouds=("SECURE",))
        candidates = self._candidates(offers)
        # Nothing trained yet: another data center with stock may take the job (its CPU stage runs there).
        if (
            not candidates
            and status is JobStatus.PREPARING
            and self._gpu_pods_started(job_id) == 0
            and await self._move(job_id, plan, why=f"no suitable GPU is in stock in {dc} any more")
        ):
            return False
        for offer in candidates:
            attempt = self._next_gpu_attempt(job_id)
            try:
                pod = await self._ensure_pod(job_id, PodRole.GPU, attempt=attempt, offer=offer)
            except CandidateRefused as exc:
                log.info("job j%s: %s/%s not placeable: %s", job_id, offer.gpu_type_id, offer.cloud, exc)
                continue
            except CandidateForbidden as exc:
                log.warning("job j%s: no access to %s/%s: %s", job_id, offer.gpu_type_id, offer.cloud, exc)
                continue
            with session_scope(self.sessions) as s:
                job = _require_job(s, job_id)
                job.attempts = attempt
                job.gpu_type_id, job.gpu_cloud_type = offer.gpu_type_id, offer.cloud
                add_notice(
                    s,
                    job_id=job_id,
                    kind=NoticeKind.INFO,
                    key=f"j{job_id}:gpu:{attempt}",
                    now=self.clock(),
                    payload={
                        "text": f"GPU reserved: {offer.display_name} ({offer.cloud.lower()} cloud, "
                        f"{ledger.format_usd(pod.cost_per_hr_micros or 0)}/h)"
                    },
                )
            return True
        await self._no_capacity(job_id, [f"{c.gpu_type_id} ({c.cloud.lower()})" for c in self.config.gpu_fallback])
        return False

    # -- data centers ------------------------------------------------------------------------------------------

    async def preview_placement(self, plan: JobPlan) -> Placement | None:
        """Where the job would run if it left the queue now, for the plan the user confirms; None with one data
        center (nothing to choose). The job is placed again, by the same rule, when it does leave the queue."""
        if len(self.config.placement_data_centers) < 2:
            return None
        return await self._place(plan)

    async def env_ready_where_placed(self, plan: JobPlan) -> bool:
        """Whether the volume this job would be placed on now already holds the environment (what /caption's
        estimate counts: its CPU pod then builds nothing). Placed by the same rule as when it leaves the queue."""
        placement = await self._place(plan)
        if not placement.data_center_id:
            return False
        with session_scope(self.sessions) as s:
            volume = get_volume_for_data_center(s, placement.data_center_id)
            return volume is not None and is_cache_ready(s, volume.id, CacheKind.ENV, self.env_hash)

    async def _place(self, plan: JobPlan, *, exclude: tuple[str, ...] = ()) -> Placement:
        """Where the job runs (jobs/placement.py's rule), from the live catalog of each listed data center and the
        warmth of its volume. With one data center there is nothing to choose and the catalog is not asked."""
        centers = [dc for dc in self.config.placement_data_centers if dc not in exclude]
        if len(centers) == 1 and not exclude:
            with session_scope(self.sessions) as s:
                volume = get_volume_for_data_center(s, centers[0])
                warm = volume is not None and self._volume_warm(s, volume.id, plan)
            return Placement(centers[0], None, warm, 0, "")
        sites = [await self._site(dc, plan) for dc in centers]
        if not sites:
            return Placement("", None, False, 0, "no other data center is listed")
        gpu_seconds = plan.training_seconds + self.config.gpu_startup_guess_s
        return place(sites, gpu_seconds=gpu_seconds, cpu_stage_micros=await self._cpu_stage_micros(plan))

    async def _site(self, dc: str, plan: JobPlan) -> Site:
        offers = await self.cloud.list_gpu_offers(dc, clouds=("SECURE",))
        candidates = self._candidates(offers)
        with session_scope(self.sessions) as s:
            volume = get_volume_for_data_center(s, dc)
            warm = volume is not None and self._volume_warm(s, volume.id, plan)
        return Site(dc, candidates[0] if candidates else None, warm)

    def _volume_warm(self, s: Session, volume_id: int, plan: JobPlan) -> bool:
        """The volume holds this job's environment and model (and tokenizers): no CPU stage needed, unless the job
        captions its dataset, which the CPU pod does (tagging is not done on GPU time)."""
        return (
            plan.captions is None
            and is_cache_ready(s, volume_id, CacheKind.ENV, self.env_hash)
            and is_cache_ready(s, volume_id, CacheKind.MODEL, _model_cache_key(plan))
        )

    async def _cpu_stage_micros(self, plan: JobPlan) -> int:
        """What a cold CPU stage costs, at the CPU pod's catalog price (the built-in price when RunPod cannot say)."""
        if self._cpu_hourly_micros is None:
            try:
                flavors = {f.id: f for f in await self.cloud.list_cpu_flavors()}
            except CloudError as exc:
                log.warning("CPU prices unavailable, pricing the CPU stage at the built-in rate: %s", exc)
                flavors = {}
            flavor = flavors.get(self.config.cpu_flavor)
            self._cpu_hourly_micros = (
                flavor.price_micros_per_vcpu_hr * self.config.cpu_vcpus
                if flavor is not None
                else built_in_table().cpu_pod_hourly_micros
            )
        model_bytes = sum(f.size or 0 for f in (plan.model, *plan.model.extra_files))
        return cold_cpu_stage_micros(model_bytes, self._cpu_hourly_micros)

    async def _moved_for_stock(self, job_id: int, plan: JobPlan) -> bool:
        """During the CPU stage, at most once per stock_check_s: has the job's data center lost every suitable GPU?
        Then it moves where one is in stock (before any GPU pod: nothing has trained, only the CPU stage is lost)."""
        if len(self.config.placement_data_centers) < 2 or self._gpu_pods_started(job_id) > 0:
            return False
        now = self.clock()
        last = self._stock_checked.get(job_id)
        if last is not None and (now - last).total_seconds() < self.config.stock_check_s:
            return False
        self._stock_checked[job_id] = now
        with session_scope(self.sessions) as s:
            dc = _require_job(s, job_id).data_center_id or self.config.data_center_id
        if (await self._site(dc, plan)).offer is not None:
            return False
        return await self._move(job_id, plan, why=f"no suitable GPU is in stock in {dc} any more")

    async def _move(self, job_id: int, plan: JobPlan, *, why: str) -> bool:
        """Move a job that has not trained to another data center with stock: its CPU pod there prepares that
        data center's volume (none when it is warm), the thread is told why and what the job now costs. False
        (and nothing changed) when no other data center has a suitable GPU in stock now."""
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            here = job.data_center_id or self.config.data_center_id
        placement = await self._place(plan, exclude=(here,))
        if placement.offer is None:
            return False
        for pod in self._live_pods(job_id, PodRole.CPU):
            self._status_seen.pop(pod.id, None)
            await self.pods.terminate(pod.id, reason=f"the job moved to {placement.data_center_id}: {why}")
        volume = await self._ensure_volume(placement.data_center_id)
        if 0 < plan.volume_gb <= self.config.volume_max_gb and plan.volume_gb > volume.size_gb:
            volume = await self._grow_volume(job_id, volume, plan.volume_gb)
        with session_scope(self.sessions) as s:
            warm = self._volume_warm(s, volume.id, plan)
        self._write_manifest(job_id, plan, stages=["prepare", "train"] if warm else ["train"])
        now = self.clock()
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            spent = ledger.job_cost(s, job_id, now=now).total_micros
            was = job.estimate_micros
            job.volume_id, job.data_center_id, job.cpu_needed = volume.id, volume.data_center_id, not warm
            # The budgets reserve the estimate: it now holds what was spent plus what the new data center costs.
            job.estimate_micros = spent + placement.cost_micros
            moves = s.execute(
                select(Notice.id).where(Notice.job_id == job_id, Notice.idempotency_key.startswith(f"j{job_id}:moved:"))
            ).all()
            stage = "no CPU stage: its volume is warm" if warm else "the CPU stage runs again there"
            add_notice(
                s,
                job_id=job_id,
                kind=NoticeKind.INFO,
                key=f"j{job_id}:moved:{len(moves) + 1}",
                now=now,
                payload={
                    "text": f"moved to {placement.data_center_id} before training ({why}); {stage}. "
                    f"{placement.reason}. Estimate now about {ledger.format_usd(job.estimate_micros)} "
                    f"(was {ledger.format_usd(was)}): {ledger.format_usd(spent)} spent in {here} so far",
                    "data_center": placement.data_center_id,
                    "estimate_micros": job.estimate_micros,
                },
            )
        log.info("job j%s moved from %s to %s: %s", job_id, here, placement.data_center_id, why)
        return True

    # -- balance -----------------------------------------------------------------------------------------------

    def _balance_blocked(self) -> bool:
        until = self._balance_blocked_until
        return until is not None and self.clock() < until

    def _balance_short(self, job_id: int, exc: InsufficientBalance) -> None:
        """RunPod answered 402: no new pod for anyone for a while; tell the operator and the job's thread.

        Pods already running are not touched (they are paid for as they go); the job keeps its place and its
        state, and creating is tried again once the pause has passed.
        """
        now = self.clock()
        self._balance_blocked_until = now + dt.timedelta(seconds=self.config.balance_retry_s)
        log.error("RunPod: insufficient balance, no new pods for %ss: %s", self.config.balance_retry_s, exc)
        text = (
            "RunPod says the account's balance is too low for a new pod: this job waits and goes on by itself "
            "once the operator has topped it up (nothing already running is stopped)"
        )
        with session_scope(self.sessions) as s:
            add_notice(
                s,
                job_id=job_id,
                kind=NoticeKind.INFO,
                key=f"j{job_id}:balance:{now:%Y%m%d%H}",
                now=now,
                payload={"text": text},
            )
            add_notice(
                s,
                job_id=None,
                kind=NoticeKind.INFO,
                key=f"operator:balance:{now:%Y%m%d%H}",
                now=now,
                payload={"text": "RunPod balance too low for new pods (HTTP 402): top up the account"},
            )

    def _cpu_attempt(self, job_id: int) -> int:
        """The CPU pod attempt in use: the newest row's (1 before any); the next one when the job moved to another
        data center since (that pod prepares the other volume)."""
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            cpus = [p for p in list_pods_for_job(s, job_id) if p.role is PodRole.CPU]
            if not cpus:
                return 1
            newest = max(cpus, key=lambda p: p.attempt)
            return newest.attempt + 1 if newest.data_center_id != job.data_center_id else newest.attempt

    def _cpu_pods_here(self, job_id: int) -> int:
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            return sum(
                1
                for p in list_pods_for_job(s, job_id)
                if p.role is PodRole.CPU and p.data_center_id == job.data_center_id
            )

    def _next_gpu_attempt(self, job_id: int) -> int:
        """Attempt numbers are never reused: a create refused for lack of stock keeps its row as a record.
        The exception is a row whose create may have gone through unseen (the bot died before RunPod's answer
        was written down): that attempt is continued, so `_ensure_pod` finds the pod by name instead of paying
        for a second GPU."""
        with session_scope(self.sessions) as s:
            gpu_rows = [p for p in list_pods_for_job(s, job_id) if p.role is PodRole.GPU]
            unresolved = [
                p.attempt for p in gpu_rows if p.runpod_pod_id is None and p.status is not PodStatus.TERMINATED
            ]
            if unresolved:
                return max(unresolved)
            return 1 + max((p.attempt for p in gpu_rows), default=0)

    def _gpu_pods_started(self, job_id: int) -> int:
        with session_scope(self.sessions) as s:
            return sum(
                1 for p in list_pods_for_job(s, job_id) if p.role is PodRole.GPU and p.api_created_at is not None
            )

    def _candidates(self, offers: list[GpuOffer]) -> list[GpuOffer]:
        by_key: dict[tuple[str, str], GpuOffer] = {(o.gpu_type_id, o.cloud): o for o in offers}
        wanted: list[GpuOffer] = []
        for choice in self.config.gpu_fallback:
            offer = by_key.get((choice.gpu_type_id, choice.cloud))
            if offer is None or not offer.available or offer.memory_gb < self.config.min_gpu_memory_gb:
                continue
            if offer.price_micros_per_hr > self.config.max_gpu_price_micros_per_hr:
                continue
            wanted.append(offer)
        return wanted

    async def _no_capacity(self, job_id: int, tried: list[str]) -> None:
        now = self.clock()
        # The wait's notice doubles as its persisted start: the deadline counts from when the user was told and
        # survives restarts. It is keyed by the GPU pods that actually started, not by attempt numbers: refused
        # creates use up attempt numbers, and a key that moved with them would restart the deadline on every
        # refusal. A wait after a lost pod gets its own deadline.
        key = f"j{job_id}:waiting_gpu:{self._gpu_pods_started(job_id) + 1}"
        with session_scope(self.sessions) as s:
            add_notice(
                s,
                job_id=job_id,
                kind=NoticeKind.WAITING_GPU,
                key=key,
                now=now,
                payload={"tried": tried, "deadline_s": self.config.no_stock_deadline_s},
            )
            first = s.execute(select(Notice.created_at).where(Notice.idempotency_key == key)).scalar_one()
        if (now - first).total_seconds() >= self.config.no_stock_deadline_s:
            await self._fail(
                job_id,
                JobStatus.FAILED_NO_CAPACITY,
                f"no GPU with stock for {self.config.no_stock_deadline_s // 60} min; tried " + ", ".join(tried),
            )

    # -- pods --------------------------------------------------------------------------------------------------

    async def _ensure_pod(self, job_id: int, role: PodRole, *, attempt: int, offer: GpuOffer | None) -> Pod:
        """The pod of (job, role, attempt): recorded first, then found by name, created only when absent."""
        now = self.clock()
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            pod = record_pod_intent(
                s,
                job_id=job_id,
                role=role,
                attempt=attempt,
                now=now,
                gpu_type_id=offer.gpu_type_id if offer else None,
                cloud_type=offer.cloud if offer else "SECURE",
                data_center_id=job.data_center_id,
                container_disk_gb=self.config.container_disk_gb,
            )
            volume = s.get(Volume, job.volume_id) if job.volume_id else None
            plan = JobPlan.from_json(job.plan_json)
        if pod.runpod_pod_id is not None or pod.status is PodStatus.TERMINATED:
            return pod
        if volume is None or volume.runpod_volume_id is None:
            raise CloudError(f"job j{job_id} has no volume")
        if self._balance_blocked():
            raise CloudTransientError("waiting for the RunPod balance to be topped up before creating a pod")
        if role is PodRole.CPU:
            self._carry_prune_order(job_id, plan, volume.id)
        make_request = lambda: self._pod_request(job_id, role, pod.name, offer, volume, plan)  # noqa: E731
        if role is not PodRole.CPU:
            return await self.pods.create(pod, make_request)
        try:
            # The CPU pod has no fallback: a refusal keeps its row open and the next tick asks again.
            return await self.pods.create(pod, make_request, close_when_refused=False)
        except (CandidateRefused, CandidateForbidden) as exc:
            with session_scope(self.sessions) as s:
                add_notice(
                    s,
                    job_id=job_id,
                    kind=NoticeKind.INFO,
                    key=f"j{job_id}:cpu_refused:{attempt}",
                    now=self.clock(),
                    payload={"text": f"RunPod could not place the CPU pod yet ({str(exc)[:160]}); trying again"},
                )
            raise CloudTransientError(f"CPU pod not placed: {exc}") from None

    def _pod_request(
        self, job_id: int, role: PodRole, name: str, offer: GpuOffer | None, volume: Volume, plan: JobPlan
    ) -> PodRequest:
        keys = JobKeys(f"j{job_id}", plan.output_name)
        # A /try pod serves from its own manifest (the training one with stages ["serve"], jobs/trying.py).
        manifest_key = try_manifest_key(job_id) if role is PodRole.TRY else keys.manifest
        env = {
            "LORABOT_AGENT_URL": self.store.presign_get(agent_key(self._agent_sha), self.config.url_lifetime_s),
            "LORABOT_MANIFEST_URL": self.store.presign_get(manifest_key, self.config.url_lifetime_s),
            "LORABOT_STAGE": {PodRole.CPU: "prepare", PodRole.GPU: "train", PodRole.TRY: "serve"}[role],
            "LORABOT_VOLUME": self.config.volume_mount_path,
            **dict(self.config.pod_env),
        }
        for file in (plan.model, *plan.model.extra_files):
            if file.token_env and file.token_env in self._model_tokens:
                env[file.token_env] = self._model_tokens[file.token_env]
        return PodRequest(
            name=name,
            image=self.config.cpu_image if role is PodRole.CPU else self.config.gpu_image,
            args=start_command(),
            env=env,
            network_volume_id=volume.runpod_volume_id or "",
            data_center_id=volume.data_center_id,
            volume_mount_path=self.config.volume_mount_path,
            container_disk_gb=self.config.container_disk_gb,
            gpu_type_id=offer.gpu_type_id if offer else None,
            cloud=offer.cloud if offer else "SECURE",
            cpu_flavor_id=self.config.cpu_flavor,
            cpu_vcpu_count=self.config.cpu_vcpus,
        )

    async def _terminate_job_pods(self, job_id: int, *, keep: Pod | None = None) -> None:
        with session_scope(self.sessions) as s:
            ids = [
                p.id
                for p in list_pods_for_job(s, job_id)
                if p.status is not PodStatus.TERMINATED and (keep is None or p.id != keep.id)
            ]
        for pod_id in ids:
            await self.pods.terminate(pod_id, reason="job ended")

    async def _clean_up_finished(self) -> None:
        """Pods whose job is already terminal (a terminate that failed last time, a /try pod past its linger, a test
        window's pod past its end): terminate them now. A finished job's pod is kept while ``pod_kept`` says so."""
        now = self.clock()
        with session_scope(self.sessions) as s:
            leftovers = [
                (p.id, p.job_id)
                for p in list_live_pods(s)
                if (job := get_job(s, p.job_id)) is not None and job.status.is_terminal() and not pod_kept(s, p, now)
            ]
        for pod_id, job_id in leftovers:
            try:
                await self.pods.terminate(pod_id, reason="job already finished")
                self._close_costs(job_id)
            except CloudError as exc:
                log.warning("could not terminate leftover pod %s: %s", pod_id, exc)

    def _current_gpu_pod(self, job_id: int) -> Pod | None:
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            if job.attempts == 0:
                return None
            return s.execute(
                select(Pod).where(Pod.job_id == job_id, Pod.role == PodRole.GPU, Pod.attempt == job.attempts)
            ).scalar_one_or_none()

    def _live_pods(self, job_id: int, role: PodRole) -> list[Pod]:
        with session_scope(self.sessions) as s:
            return [p for p in list_pods_for_job(s, job_id) if p.role is role and p.status is not PodStatus.TERMINATED]

    # -- volume, agent, manifest, status ----------------------------------------------------------------------

    async def _ensure_volume(self, dc: str) -> Volume:
        """The data center's volume: from the DB, checked once per process against RunPod (a volume deleted by
        hand, or the sandbox's volumes after a restart, must not send pods to a volume that is gone); created on
        the first job placed there."""
        with session_scope(self.sessions) as s:
            volume = get_volume_for_data_center(s, dc)
        if volume is not None and volume.runpod_volume_id is not None:
            if volume.runpod_volume_id in self._volumes_seen:
                return volume
            existing = {v.id for v in await self.cloud.list_volumes()}
            if volume.runpod_volume_id in existing:
                self._volumes_seen.add(volume.runpod_volume_id)
                return volume
            log.warning("volume %s of %s is gone at RunPod: creating a new one", volume.runpod_volume_id, dc)
            with session_scope(self.sessions) as s:
                row = s.get(Volume, volume.id)
                assert row is not None
                row.deleted_at = self.clock()  # its cache entries go with it: they are keyed by this row
        name = f"lorabot-{dc.lower()}"
        found = [v for v in await self.cloud.list_volumes() if v.name == name and v.data_center_id == dc]
        info = found[0] if found else await self.cloud.create_volume(name, self.config.volume_size_gb, dc)
        self._volumes_seen.add(info.id)
        with session_scope(self.sessions) as s:
            return record_volume(s, runpod_volume_id=info.id, data_center_id=dc, size_gb=info.size_gb, now=self.clock())

    # -- prune: stale cache deleted by the next CPU stage on the volume (jobs/volumes.py) --------------------------

    def _waits_for_prune(self, job_id: int, volume: Volume) -> bool:
        """True while another job's CPU pod on this volume may be deleting something this job uses (marked by
        `lorabot volumes prune`): the job stays queued until that stage is over, then finds the cache as it is."""
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            other = prune_in_flight(s, volume.id, job, env_hash=self.env_hash)
            if other is None:
                return False
            add_notice(
                s,
                job_id=job_id,
                kind=NoticeKind.INFO,
                key=f"j{job_id}:prune_wait:{other}",
                now=self.clock(),
                payload={
                    "text": f"waiting for {other}'s CPU stage on the {volume.data_center_id} volume: it may be "
                    "deleting stale files this job would use"
                },
            )
        log.info("j%s waits for %s's CPU stage on volume %s (prune)", job_id, other, volume.runpod_volume_id)
        return True

    def _carry_prune_order(self, job_id: int, plan: JobPlan, volume_id: int) -> None:
        """Before the CPU pod is asked for: its manifest gets the volume's prune marks (or loses a stale order)."""
        with session_scope(self.sessions) as s:
            order = prune_order(s, volume_id, job_id, env_hash=self.env_hash, now=self.clock())
        key = JobKeys(f"j{job_id}", plan.output_name).manifest
        raw = self.store.get_bytes(key)
        if raw is None:
            return
        manifest = json.loads(raw)
        if manifest.get("prune") == order:
            return
        if order is None:
            manifest.pop("prune", None)
        else:
            manifest["prune"] = order
        self.store.put_bytes(key, json.dumps(manifest).encode())

    def _confirm_prunes(self, job_id: int, cpu: Pod, prepare: dict[str, Any]) -> None:
        if not prepare.get("pruned"):
            return
        with session_scope(self.sessions) as s:
            volume_id = _require_job(s, job_id).volume_id
            if volume_id is not None:
                confirm_pruned(
                    s, volume_id, job_id=job_id, pod_name=cpu.name, pruned=prepare["pruned"], now=self.clock()
                )

    def _ensure_agent_uploaded(self) -> None:
        key = agent_key(self._agent_sha)
        if not self.store.exists(key):
            self.store.put_bytes(key, self._agent_bytes)

    def _write_manifest(self, job_id: int, plan: JobPlan, *, stages: list[str]) -> None:
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            sha, size = job.dataset_sha256, job.dataset_size
        manifest = build_manifest(
            job_id=f"j{job_id}",
            output_name=plan.output_name,
            stages=stages,
            env_recipe=self.env_recipe,
            model=_model_source(plan.model),
            dataset_sha256=sha,
            dataset_size=size,
            script=plan.script,
            args=plan.args,
            files=plan.files,
            epochs=plan.epochs,
            sample_prompts=plan.sample_prompts,
            store=self.store,
            expires_s=self.config.url_lifetime_s,
            status_interval_s=self.config.status_interval_s,
            tokenizers=tokenizer_manifest(plan.script, self.config.hub_endpoint),
            captions=caption_manifest(plan.captions, self.config.hub_endpoint) if plan.captions else None,
            caption_only=plan.caption_only,
        )
        with session_scope(self.sessions) as s:
            manifest = self.tries.with_serve(manifest, _require_job(s, job_id))
        self.store.put_bytes(JobKeys(f"j{job_id}", plan.output_name).manifest, json.dumps(manifest).encode())

    def _read_status(self, job_id: int, plan: JobPlan, stage: str, pod: Pod | None = None) -> dict[str, Any] | None:
        """The agent's latest status for a stage; for `train`, only one written by the current GPU pod."""
        raw = self.store.get_bytes(JobKeys(f"j{job_id}", plan.output_name).status(stage))
        if raw is None:
            return None
        try:
            status = json.loads(raw)
        except ValueError:
            return None  # a torn or foreign write: the agent rewrites it within seconds
        if not isinstance(status, dict):
            return None
        if pod is not None and status.get("pod_id") not in (None, "", pod.runpod_pod_id):
            return None
        seq = int(status.get("seq") or 0)
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            if stage == "train" and seq != job.last_status_seq:
                # updated_at doubles as "last sign of life from the pod" for the staleness check.
                job.last_status_seq, job.updated_at = seq, self.clock()
        return status

    def _status_is_stale(self, job_id: int) -> bool:
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            return (self.clock() - job.updated_at).total_seconds() > self.config.status_stale_s

    def _store_captions(self, job_id: int, plan: JobPlan, prepare: dict[str, Any]) -> None:
        """The CPU pod captioned the dataset: store it by hash and tell the thread, once, before training."""
        summary = prepare.get("captions")
        if not isinstance(summary, dict) or not summary.get("sha256"):
            return
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            if captions_noticed(s, job_id):
                return
            store_captioned(
                self.store,
                s,
                job_id=job_id,
                keys=JobKeys(f"j{job_id}", plan.output_name),
                owner_user_id=job.user_id,
                summary=summary,
                link_lifetime_s=self.config.url_lifetime_s,
                now=self.clock(),
            )

    def _mark_cache(self, job_id: int, plan: JobPlan) -> None:
        now = self.clock()
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            if job.volume_id is None:
                return
            mark_cache_ready(s, job.volume_id, CacheKind.ENV, self.env_hash, now=now)
            if not plan.caption_only:  # a /caption job's CPU pod fetched no model
                mark_cache_ready(s, job.volume_id, CacheKind.MODEL, _model_cache_key(plan), now=now)
            mark_cache_ready(s, job.volume_id, CacheKind.DATASET, job.dataset_sha256, now=now)
            add_notice(
                s,
                job_id=job_id,
                kind=NoticeKind.PREPARING,
                key=f"j{job_id}:prepared",
                now=now,
                payload={"text": "the volume is ready; the CPU pod is gone"},
            )

    def _announce_epochs(self, job_id: int, plan: JobPlan, status: dict[str, Any]) -> None:
        """One EPOCH notice per finished epoch whose checkpoint reached the store, in order, exactly once."""
        keys = JobKeys(f"j{job_id}", plan.output_name)
        now = self.clock()
        with session_scope(self.sessions) as s:
            job = _require_job(s, job_id)
            done = job.last_epoch_notified
            progress = status.get("progress") or {}
            for entry in sorted(status.get("epochs") or [], key=lambda e: int(e.get("epoch") or 0)):
                epoch = int(entry.get("epoch") or 0)
                if epoch <= done:
                    continue
                # Announce an epoch once its checkpoint and all its samples are in the store, in order: the
                # gallery is the point of the notice (a finished run may legitimately lack samples). Samples the
                # agent reports lost (a pod gone between the epoch's save and its sampling) will never come.
                finished = status.get("phase") in ("succeeded", "failed", "interrupted")
                samples_in = len(entry.get("samples") or [])
                samples_lost = len(entry.get("samples_lost") or [])
                if not entry.get("checkpoint") or (samples_in + samples_lost < plan.sample_prompts and not finished):
                    break
                samples = [keys.sample(epoch, int(x.get("index", i))) for i, x in enumerate(entry.get("samples") or [])]
                add_notice(
                    s,
                    job_id=job_id,
                    kind=NoticeKind.EPOCH,
                    key=f"j{job_id}:epoch:{epoch}",
                    now=now,
                    payload={
                        "epoch": epoch,
                        "epochs": plan.epochs,
                        "loss": entry.get("loss"),
                        "step": progress.get("step"),
                        "total_steps": progress.get("total_steps") or plan.total_steps,
                        "eta_seconds": progress.get("eta_seconds"),
                        "checkpoint": {"key": keys.checkpoint(epoch), **(entry.get("checkpoint") or {})},
                        "samples": samples,
                        "samples_lost": samples_lost,
                        "cost": _cost_payload(s, job_id, now),
                    },
                )
                done = epoch
            job.last_epoch_notified = done

    def _close_costs(self, job_id: int) -> None:
        with session_scope(self.sessions) as s:
            for pod in list_pods_for_job(s, job_id):
                if pod.status is PodStatus.TERMINATED:
                    ledger.close_pod_cost(s, pod)
            ledger.close_volume_cost(
                s, job_id, now=self.clock(), price_micros_per_gb_month=self.config.volume_price_micros_per_gb_month
            )


_SEEN_TEXT = {
    PodSeen.ERROR: "in ERROR at RunPod (host lost or crash loop)",
    PodSeen.GONE: "gone at RunPod",
    PodSeen.STUCK: "stuck starting",
}


def _fails_on_every_pod(status: dict[str, Any] | None) -> bool:
    """A failure a new pod would meet again (the user's data or options, or the environment on the volume): the job
    fails at once."""
    if status is None or status.get("phase") != "failed":
        return False
    return str((status.get("error") or {}).get("kind") or "internal") in _FAILS_ON_EVERY_POD_KINDS


def _agent_trouble(status: dict[str, Any] | None, role: str, stage: str) -> str | None:
    """Why the agent's own status says its pod should be given up: it failed on the pod's side, or it restarted
    (RunPod starts an ended container again, so a crash shows as a second boot on the same pod)."""
    if status is None:
        return None
    if status.get("phase") == "failed":
        kind = str((status.get("error") or {}).get("kind") or "internal")
        return f"{stage} failed on the {role} pod ({kind})"
    boots = int(status.get("boots") or 1)
    if boots > 1 and status.get("phase") not in ("ready", "succeeded"):
        return f"the {role} pod's agent restarted (boot {boots})"
    return None


def _shorten(text: str, limit: int = _AGENT_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _model_cache_key(plan: JobPlan) -> str:
    """The model's cache entry on a volume covers the tokenizers its script loads: the CPU stage fetches both, and a
    warm job (no CPU stage) must find both there, since its GPU pod would otherwise fetch them on GPU time."""
    repos = TOKENIZERS.get(plan.script, ())
    if not repos:
        return plan.model.filename
    spec = json.dumps([dataclasses.asdict(repo) for repo in repos], sort_keys=True).encode()
    return f"{plan.model.filename}+tokenizers-{hashlib.sha256(spec).hexdigest()[:12]}"


def _model_source(ref: ModelFileRef) -> ModelSource:
    return ModelSource(
        ref.url, ref.filename, ref.size, ref.sha256, ref.token_env, tuple(_model_source(f) for f in ref.extra_files)
    )


def _require_job(s: Session, job_id: int) -> Job:
    job = get_job(s, job_id)
    if job is None:
        raise LookupError(f"no job j{job_id}")
    return job


def _cost_payload(s: Session, job_id: int, now: dt.datetime) -> dict[str, Any]:
    cost = ledger.job_cost(s, job_id, now=now)
    return {
        "volume_micros": cost.volume_micros,
        "cpu_pod_micros": cost.cpu_pod_micros,
        "gpu_pod_micros": cost.gpu_pod_micros,
        "disk_micros": cost.disk_micros,
        "total_micros": cost.total_micros,
        "live": cost.live,
        "try_micros": cost.try_micros,
    }
