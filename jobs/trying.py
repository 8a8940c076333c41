"""/try and the test window, the orchestration side: quote, confirm, serve on a pod over the job's volume, collect.

What happens to a /try (``storage/tries.py`` records every step; ``jobs/tryplan.py`` is the generation side):
- ``quote`` checks the request before anything is rented (the job finished training and is not a /caption job, the
  epochs exist and their checkpoints are still in the store, the prompt passes the sample-prompt rules, the
  estimate fits the owner's and the team's budget and the job's own) and records it PENDING with its estimate:
  GPU start-up (the orchestrator's observed figure) + generation (``estimate_generation_s``) + the linger the pod
  waits for a next /try, at the first suitable GPU's price; nothing of that when a pod already serves the job.
- ``confirm`` moves it to CONFIRMED; the tick then gives it to the pod serving the job: the warm training pod while
  its test window is open, else the job's live TRY pod, else a new TRY pod (recorded before it is requested, created
  through the orchestrator's pod machinery: Secure Cloud, the job's data center and volume, the GPU fallback list).
  The request goes into ``jobs/<id>/try/requests.json`` (RUNNING); the agent's ``serve`` stage answers it.
- Its status in the bucket ends it (DONE or FAILED); a TRY_RESULT notice makes the notifier draw the grid.
- A pod of a finished job lives only while ``storage.tries.pod_kept`` says so: a TRY pod ``try_linger_s`` after its
  last request, the window's pod until the window ends. The orchestrator's clean-up terminates it after that, the
  reaper too; ``close_window`` and ``cancel`` (``/cancel``) end it at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs import ledger
from jobs.catalog import load_catalog
from jobs.cloud import CandidateForbidden, CandidateRefused, CloudError
from jobs.manifest import JobKeys
from jobs.pods import PodSeen
from jobs.queue import JobPlan
from jobs.spec import SPEC_FIELDS, TrainSpec
from jobs.states import JobStatus, NoticeKind, PodRole, PodStatus, TryStatus
from jobs.tryplan import (
    LoraRef,
    TryJob,
    TryRefused,
    TrySpec,
    describe_epochs,
    estimate_generation_s,
    parse_request_status,
    parse_try,
    request_entry,
    requests_document,
    requests_key,
    status_key,
)
from storage.db import session_scope
from storage.models import Job, Notice, Pod, TestWindow, TryRequest
from storage.queries import get_job, list_pods_for_job
from storage.transitions import add_notice
from storage.tries import (
    InvalidTryTransition,
    close_window,
    create_try_request,
    get_try_request,
    open_try_requests,
    open_window,
    open_windows,
    set_try_status,
    window_of_job,
)

if TYPE_CHECKING:
    from jobs.orchestrator import Orchestrator

log = logging.getLogger(__name__)

# The agent polls requests.json this often (simulated seconds in the sandbox).
SERVE_POLL_S = 5.0
# Status objects and cells are small; anything bigger is not the agent's.
_STATUS_MAX_BYTES = 64 * 1024


def try_manifest_key(job_id: int) -> str:
    """The TRY pod's manifest: the training manifest with ``stages: ["serve"]`` (jobs.manifest.try_pod_manifest)."""
    return f"jobs/j{job_id}/try/manifest.json"


def train_spec_of(spec_json: Mapping[str, Any]) -> TrainSpec:
    """The job's TrainSpec back from ``jobs.spec_json`` (``dataclasses.asdict`` of it: tuples came back as lists)."""
    values: dict[str, Any] = {}
    for spec_field in dataclasses.fields(TrainSpec):
        if spec_field.name not in spec_json:
            continue
        value = spec_json[spec_field.name]
        values[spec_field.name] = tuple(value) if isinstance(value, list) else value
    unknown = set(spec_json) - SPEC_FIELDS
    if unknown:
        log.info("spec_json keys TrainSpec does not know, ignored: %s", sorted(unknown))
    return TrainSpec(**values)


def trained_epochs(s: Session, job_id: int) -> dict[int, LoraRef]:
    """Every epoch checkpoint the job's SUCCEEDED notice lists (key, sha256, size), by epoch."""
    payload = s.execute(
        select(Notice.payload_json).where(Notice.job_id == job_id, Notice.kind == NoticeKind.SUCCEEDED)
    ).scalar_one_or_none()
    refs: dict[int, LoraRef] = {}
    for entry in (payload or {}).get("epochs") or []:
        if entry.get("sha256") and entry.get("key"):
            refs[int(entry["epoch"])] = LoraRef(str(entry["key"]), str(entry["sha256"]), entry.get("size"))
    return refs


def try_job_of(job: Job, epochs_available: Sequence[int]) -> TryJob:
    spec = train_spec_of(job.spec_json or {})
    extra: dict[str, str] = {}
    if spec.family == "flux":
        model = load_catalog().get(job.base_model)
        extra = {role: model.extra(role).volume_path for role in ("clip_l", "t5xxl", "ae")}
    return TryJob.from_spec(
        spec,
        job_id=job.public_id,
        epochs_available=epochs_available,
        picked_epoch=job.picked_epoch,
        extra_model_paths=extra,
    )


def spec_to_json(spec: TrySpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def spec_from_json(data: Mapping[str, Any]) -> TrySpec:
    return TrySpec(
        prompts=tuple(data["prompts"]),
        epochs=tuple(int(e) for e in data["epochs"]),
        seed=int(data["seed"]),
        negative=str(data.get("negative") or ""),
        strength=float(data["strength"]),
        steps=int(data["steps"]),
        compare=bool(data.get("compare")),
    )


def window_minutes(job: Job, default: int, largest: int) -> int:
    """The job's test window: its /train option, else the operator's default; never over the largest allowed."""
    asked = (job.spec_json or {}).get("test_window_min")
    minutes = default if asked is None else int(asked)
    return max(0, min(minutes, largest))


@dataclass(frozen=True)
class TryQuote:
    """What the user confirms: the request and its estimate (nothing rented yet)."""

    request_id: int
    job_id: int
    spec: TrySpec
    startup_s: int
    generation_s: int
    linger_s: int
    price_micros_per_hr: int
    estimate_micros: int
    # True when a pod already serves the job (the test window's, or a /try pod lingering): no start-up.
    warm: bool
    gpu: str
    source: str

    @property
    def public_id(self) -> str:
        return f"t{self.request_id}"

    @property
    def seconds(self) -> int:
        return self.startup_s + self.generation_s + self.linger_s


class Tries:
    """The orchestrator's /try desk: one per Orchestrator, acting only under its tick lock (or for quotes, which
    write nothing but a PENDING row)."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.o = orchestrator

    # -- quote, confirm, dismiss (the bot calls these) ----------------------------------------------------------

    async def quote(
        self,
        job_id: int,
        *,
        user_id: int,
        prompt: str,
        epochs: str | None = None,
        seed: int | None = None,
        negative: str | None = None,
        strength: float | None = None,
        steps: int | None = None,
        compare: bool = False,
    ) -> TryQuote:
        """Check a /try and record it PENDING with its estimate; raises TryRefused (nothing written, nothing rented)."""
        job, trained, existing = await asyncio.to_thread(self._finished_job, job_id)
        # The default epochs come from those still stored; epochs asked for are checked against all the job
        # trained, so that a deleted one is named as deleted (below) rather than as never trained.
        available = existing if epochs is None or not epochs.strip() else sorted(trained)
        try_job = try_job_of(job, available)
        spec = parse_try(
            try_job,
            prompt=prompt,
            epochs=epochs,
            seed=seed,
            negative=negative,
            strength=strength,
            steps=steps,
            compare=compare,
        )
        deleted = [epoch for epoch in spec.epochs if epoch not in existing]
        if deleted:
            which = (
                f"epoch {deleted[0]}'s checkpoint"
                if len(deleted) == 1
                else (f"the checkpoints of epochs {describe_epochs(deleted)}")
            )
            kept = describe_epochs(existing) if existing else "none"
            raise TryRefused(
                f"{which} of `{job.public_id}` was deleted from the store (epochs nobody picked expire; kept: "
                f"{kept}): choose other epochs. Nothing was rented."
            )
        generation = estimate_generation_s(try_job, spec)
        serving = await asyncio.to_thread(self._serving_pod, job_id)
        if serving is not None and serving.cost_per_hr_micros:
            price, startup, linger = serving.cost_per_hr_micros, 0, 0
            gpu, warm = serving.gpu_type_id or "the GPU pod", True
        else:
            offer = await self._first_offer(job.data_center_id or self.o.config.data_center_id)
            if offer is None:
                raise TryRefused(
                    f"no suitable GPU is in stock in {job.data_center_id} (where `{job.public_id}`'s volume is) right "
                    "now; nothing was rented: try again in a few minutes."
                )
            price, startup = offer.price_micros_per_hr, math.ceil(self.o._gpu_startup_s())
            linger, gpu, warm = self.o.config.try_linger_s, offer.display_name, False
        generation_s = math.ceil(generation.seconds)
        seconds = startup + generation_s + linger
        micros = ledger.pod_cost_micros(seconds, price) + ledger.disk_cost_micros(
            seconds, self.o.config.container_disk_gb
        )
        now = self.o.clock()
        with session_scope(self.o.sessions) as s:
            refusal = self._budget_refusal(s, job_id, micros, now)
            if refusal is not None:
                raise TryRefused(refusal)
            row = create_try_request(
                s,
                job_id=job_id,
                user_id=user_id,
                spec=spec_to_json(spec),
                estimate_s=seconds,
                estimate_micros=micros,
                now=now,
            )
            request_id = row.id
        return TryQuote(
            request_id=request_id,
            job_id=job_id,
            spec=spec,
            startup_s=startup,
            generation_s=generation_s,
            linger_s=linger,
            price_micros_per_hr=price,
            estimate_micros=micros,
            warm=warm,
            gpu=gpu,
            source=generation.source,
        )

    def _finished_job(self, job_id: int) -> tuple[Job, dict[int, LoraRef], list[int]]:
        """The job if /try can run on it, what it trained, and which of those checkpoints the store still has."""
        with session_scope(self.o.sessions) as s:
            job = get_job(s, job_id)
            if job is None:
                raise TryRefused(f"there is no job `j{job_id}`.")
            public = job.public_id
            if job.status is not JobStatus.SUCCEEDED:
                if job.status.is_terminal():
                    raise TryRefused(
                        f"`{public}` ended {job.status.value}; /try needs a job that finished training. "
                        "Nothing was rented."
                    )
                raise TryRefused(
                    f"`{public}` is still {job.status.value}: /try works once it has finished training (the grid "
                    "is drawn from its saved epochs). Nothing was rented."
                )
            if (job.plan_json or {}).get("caption_only"):
                raise TryRefused(f"`{public}` is a /caption job: it trained no LoRA to try. Nothing was rented.")
            trained = trained_epochs(s, job_id)
            s.expunge(job)
        existing = [epoch for epoch, ref in sorted(trained.items()) if self.o.store.exists(ref.key)]
        return job, trained, existing

    def _budget_refusal(self, s: Session, job_id: int, micros: int, now: dt.datetime) -> str | None:
        """The owner's and the team's month (the job's month: its costs belong there) and the job's own budget."""
        job = s.get(Job, job_id)
        assert job is not None
        if job.budget_micros is not None:
            spent = ledger.job_cost(s, job_id, now=now).total_micros
            if spent + micros > job.budget_micros:
                return (
                    f"this /try (about {ledger.format_usd(micros)}) would take `{job.public_id}` to "
                    f"{ledger.format_usd(spent + micros)}, over its budget of {ledger.format_usd(job.budget_micros)}; "
                    "nothing was rented."
                )
        check = ledger.would_exceed(
            s,
            job.user_id,
            ledger.month_of(job.created_at),
            micros,
            now=now,
            default_user_limit_micros=self.o.config.user_budget_micros,
            default_team_limit_micros=self.o.config.team_budget_micros,
        )
        if check.allowed or check.reason is None:
            return None
        return check.reason.replace("this job", "this /try", 1) + "; nothing was rented."

    async def _first_offer(self, dc: str) -> Any:
        candidates = self.o._candidates(await self.o.cloud.list_gpu_offers(dc, clouds=("SECURE",)))
        return candidates[0] if candidates else None

    def confirm(self, request_id: int, *, user_id: int) -> TryRequest:
        """PENDING → CONFIRMED for the one who asked; an old estimate expires instead. Raises TryRefused."""
        now = self.o.clock()
        with session_scope(self.o.sessions) as s:
            row = get_try_request(s, request_id)
            if row is None:
                raise TryRefused(f"there is no /try `t{request_id}`.")
            if row.user_id != user_id:
                raise TryRefused(f"only the one who asked for `t{request_id}` can confirm it.")
            if row.status is TryStatus.PENDING and (now - row.created_at).total_seconds() > self.o.config.try_confirm_s:
                set_try_status(s, request_id, TryStatus.EXPIRED, now=now)
                raise TryRefused(
                    f"this estimate is older than {self.o.config.try_confirm_s // 60} minutes: run /try again."
                )
            try:
                row = set_try_status(s, request_id, TryStatus.CONFIRMED, now=now)
            except InvalidTryTransition:
                raise TryRefused(f"`t{request_id}` is already {row.status.value}.") from None
            s.expunge(row)
            return row

    def dismiss(self, request_id: int, *, user_id: int) -> None:
        now = self.o.clock()
        with session_scope(self.o.sessions) as s:
            row = get_try_request(s, request_id)
            if row is None or row.user_id != user_id:
                raise TryRefused(f"only the one who asked for `t{request_id}` can cancel it.")
            try:
                set_try_status(s, request_id, TryStatus.DISMISSED, now=now)
            except InvalidTryTransition:
                raise TryRefused(f"`t{request_id}` is already {row.status.value}.") from None

    # -- the test window (the orchestrator's _collecting and the bot call these) -------------------------------

    def window_minutes(self, job: Job) -> int:
        return window_minutes(job, self.o.config.test_window_min, self.o.config.test_window_max_min)

    def with_serve(self, manifest: dict[str, Any], job: Job) -> dict[str, Any]:
        """The training manifest, with the serve object when the job gets a test window."""
        if self.window_minutes(job) <= 0:
            return manifest
        from jobs.manifest import add_serve  # the generation side's (H3), imported where used

        return add_serve(manifest, store=self.o.store, expires_s=self.o.config.url_lifetime_s, poll_s=SERVE_POLL_S)

    def open_window(self, s: Session, job_id: int, pod: Pod, now: dt.datetime) -> TestWindow | None:
        """At SUCCEEDED, in its transaction: the training pod stays up for the job's window (None: no window)."""
        job = s.get(Job, job_id)
        assert job is not None
        minutes = self.window_minutes(job)
        if minutes <= 0:
            return None
        window = open_window(s, job_id=job_id, pod_id=pod.id, minutes=minutes, now=now)
        add_notice(
            s,
            job_id=job_id,
            kind=NoticeKind.TEST_WINDOW,
            key=f"j{job_id}:window:open",
            now=now,
            payload={"state": "open"},
        )
        return window

    async def close_window(self, job_id: int, *, by: str) -> TestWindow | None:
        """End the job's open window now: its pod is terminated, its open requests cancelled, its cost closed and
        the thread told. None when no window was open."""
        now = self.o.clock()
        with session_scope(self.o.sessions) as s:
            window = close_window(s, job_id, now=now, by=by)
            if window is None:
                return None
            pod_id = window.pod_id
            self._cancel_open(s, job_id, now, "the test window closed before it was answered")
        # A standby process (another holds the orchestrator lease) only records the close: the leader's clean-up
        # terminates the pod (no longer kept) and its next tick writes the cost and the final line.
        if pod_id is not None and self.o.is_leader():
            await self.o.pods.terminate(pod_id, reason=f"test window closed ({by})")
        return self._window_closed(job_id)

    def _window_closed(self, job_id: int) -> TestWindow | None:
        """Once the window's pod is gone: its cost (the pod's TRY_GPU item) kept on the row, the final line queued."""
        now = self.o.clock()
        self.o._close_costs(job_id)
        with session_scope(self.o.sessions) as s:
            window = window_of_job(s, job_id)
            if window is None:
                return None
            pod = s.get(Pod, window.pod_id) if window.pod_id is not None else None
            if pod is not None and pod.status is not PodStatus.TERMINATED:
                return window  # the terminate failed: the clean-up repeats it, and this runs again
            if window.cost_micros is None:
                window.cost_micros = self._window_cost(s, window, now)
            add_notice(
                s,
                job_id=job_id,
                kind=NoticeKind.TEST_WINDOW,
                key=f"j{job_id}:window:closed",
                now=now,
                payload={"state": "closed"},
            )
            s.flush()
            s.expunge(window)
            return window

    @staticmethod
    def _window_cost(s: Session, window: TestWindow, now: dt.datetime) -> int:
        if window.pod_id is None:
            return 0
        pod = s.get(Pod, window.pod_id)
        if pod is None:
            return 0
        parts = ledger.pod_parts(pod, now, window.opened_at)
        return sum(part.charge.total_micros for part in parts if part.kind.value == "try_gpu")

    async def cancel(self, job_id: int, *, by: str) -> int:
        """/cancel on a finished job: its window closes, its open requests are cancelled, its TRY pods terminated.
        Returns how many pods were stopped."""
        window = await self.close_window(job_id, by=f"cancel by {by}")
        now = self.o.clock()
        with session_scope(self.o.sessions) as s:
            self._cancel_open(s, job_id, now, f"cancelled by {by}")
            pods = [p.id for p in list_pods_for_job(s, job_id) if p.role is PodRole.TRY and p.status.is_live()]
            for pod_id in pods:
                row = s.get(Pod, pod_id)
                if row is not None:
                    row.keep_until = now
        for pod_id in pods if self.o.is_leader() else []:  # a standby records; the leader's clean-up terminates
            await self.o.pods.terminate(pod_id, reason=f"/cancel by {by}")
        self.o._close_costs(job_id)
        return len(pods) + (1 if window is not None else 0)

    def has_something_to_cancel(self, job_id: int) -> bool:
        with session_scope(self.o.sessions) as s:
            window = window_of_job(s, job_id)
            if window is not None and window.closed_at is None:
                return True
            if open_try_requests(s, job_id):
                return True
            return any(p.role is PodRole.TRY and p.status.is_live() for p in list_pods_for_job(s, job_id))

    def _cancel_open(self, s: Session, job_id: int, now: dt.datetime, why: str) -> None:
        for row in open_try_requests(s, job_id):
            set_try_status(s, row.id, TryStatus.CANCELLED, now=now, error=why)
            self._result_notice(s, row.job_id, row.id, now)

    @staticmethod
    def _result_notice(s: Session, job_id: int, request_id: int, now: dt.datetime) -> None:
        add_notice(
            s,
            job_id=job_id,
            kind=NoticeKind.TRY_RESULT,
            key=f"j{job_id}:try:t{request_id}",
            now=now,
            payload={"request_id": request_id},
        )

    # -- the tick ----------------------------------------------------------------------------------------------

    async def tick(self) -> None:
        """Expire old estimates, end windows whose time is up, and advance every job with open requests."""
        now = self.o.clock()
        with session_scope(self.o.sessions) as s:
            self._expire_estimates(s, now)
            windows = [(w.job_id, w.until_at, w.opened_at) for w in open_windows(s)]
            jobs = sorted({r.job_id for r in open_try_requests(s)})
            closing = [
                w.job_id
                for w in s.execute(
                    select(TestWindow).where(TestWindow.closed_at.is_not(None), TestWindow.cost_micros.is_(None))
                ).scalars()
            ]
        for job_id, until, opened in windows:
            if now >= until:
                await self.close_window(job_id, by="time")
            else:
                self._refresh_window(job_id, opened, now)
        for job_id in closing:
            self._window_closed(job_id)  # a window whose pod's terminate failed before: finish it
        for job_id in jobs:
            try:
                await self._advance(job_id)
            except (CloudError, OSError) as exc:
                log.warning("j%s: /try step failed, retrying next tick: %s", job_id, exc)

    def _expire_estimates(self, s: Session, now: dt.datetime) -> None:
        cutoff = now - dt.timedelta(seconds=self.o.config.try_confirm_s)
        stale = s.execute(
            select(TryRequest.id).where(TryRequest.status == TryStatus.PENDING, TryRequest.created_at < cutoff)
        ).scalars()
        for request_id in list(stale):
            set_try_status(s, request_id, TryStatus.EXPIRED, now=now)

    def _refresh_window(self, job_id: int, opened: dt.datetime, now: dt.datetime) -> None:
        """One redraw of the window's line per window_refresh_s (the notifier edits the same message)."""
        step = max(self.o.config.window_refresh_s, 1)
        n = int((now - opened).total_seconds() // step)
        if n < 1:
            return
        with session_scope(self.o.sessions) as s:
            add_notice(
                s,
                job_id=job_id,
                kind=NoticeKind.TEST_WINDOW,
                key=f"j{job_id}:window:{n}",
                now=now,
                payload={"state": "open"},
            )

    def _serving_pod(self, job_id: int) -> Pod | None:
        """The pod answering the job's /try now: the window's while it is open, else its newest live TRY pod."""
        now = self.o.clock()
        with session_scope(self.o.sessions) as s:
            window = window_of_job(s, job_id)
            if window is not None and window.closed_at is None and now < window.until_at and window.pod_id:
                pod = s.get(Pod, window.pod_id)
                if pod is not None and pod.status in (PodStatus.RUNNING, PodStatus.CREATING):
                    s.expunge(pod)
                    return pod
            tries = [
                p
                for p in list_pods_for_job(s, job_id)
                if p.role is PodRole.TRY and p.status is not PodStatus.TERMINATED
            ]
            if not tries:
                return None
            pod = max(tries, key=lambda p: p.attempt)
            s.expunge(pod)
            return pod

    async def _advance(self, job_id: int) -> None:
        serving = await asyncio.to_thread(self._serving_pod, job_id)
        if serving is None:
            serving = await self._rent(job_id)
            if serving is None:
                return
        now = self.o.clock()
        if serving.role is PodRole.TRY:
            with session_scope(self.o.sessions) as s:
                row = s.get(Pod, serving.id)
                if row is not None:
                    # Open requests keep it; after the last one it lingers for the next /try.
                    keep = now + dt.timedelta(seconds=self.o.config.try_linger_s)
                    row.keep_until = max(row.keep_until or keep, keep)
        self._send_confirmed(job_id, serving)
        self._collect(job_id)
        await self._check_pod(job_id, serving)

    async def _rent(self, job_id: int) -> Pod | None:
        """A new TRY pod for the job, through the GPU fallback list; when none can be placed, its confirmed
        requests fail saying so (nothing was rented)."""
        with session_scope(self.o.sessions) as s:
            job = get_job(s, job_id)
            assert job is not None
            dc = job.data_center_id or self.o.config.data_center_id
        self._write_try_manifest(job_id)
        offers = self.o._candidates(await self.o.cloud.list_gpu_offers(dc, clouds=("SECURE",)))
        for offer in offers:
            attempt = self._next_try_attempt(job_id)
            try:
                pod = await self.o._ensure_pod(job_id, PodRole.TRY, attempt=attempt, offer=offer)
            except (CandidateRefused, CandidateForbidden) as exc:
                log.info("j%s: /try pod on %s not placeable: %s", job_id, offer.gpu_type_id, exc)
                continue
            now = self.o.clock()
            with session_scope(self.o.sessions) as s:
                row = s.get(Pod, pod.id)
                if row is not None:
                    row.keep_until = now + dt.timedelta(
                        seconds=self.o.config.startup_timeout_s + self.o.config.try_linger_s
                    )
                add_notice(
                    s,
                    job_id=job_id,
                    kind=NoticeKind.INFO,
                    key=f"j{job_id}:try-pod:{attempt}",
                    now=now,
                    payload={
                        "text": f"/try: GPU pod rented ({offer.display_name}, "
                        f"{ledger.format_usd(pod.cost_per_hr_micros or offer.price_micros_per_hr)}/h) over the job's "
                        "volume; it stays a few minutes after the last /try so the next one shares it"
                    },
                )
            return pod
        now = self.o.clock()
        with session_scope(self.o.sessions) as s:
            for request in open_try_requests(s, job_id):
                if request.status is TryStatus.CONFIRMED:
                    set_try_status(
                        s,
                        request.id,
                        TryStatus.FAILED,
                        now=now,
                        error=f"no suitable GPU could be placed in {dc} now; nothing was rented: try again later",
                    )
                    self._result_notice(s, job_id, request.id, now)
        return None

    def _next_try_attempt(self, job_id: int) -> int:
        with session_scope(self.o.sessions) as s:
            rows = [p for p in list_pods_for_job(s, job_id) if p.role is PodRole.TRY]
            unresolved = [p.attempt for p in rows if p.runpod_pod_id is None and p.status is not PodStatus.TERMINATED]
            if unresolved:
                return max(unresolved)
            return 1 + max((p.attempt for p in rows), default=0)

    def _write_try_manifest(self, job_id: int) -> None:
        with session_scope(self.o.sessions) as s:
            job = get_job(s, job_id)
            assert job is not None
            keys = JobKeys(job.public_id, JobPlan.from_json(job.plan_json).output_name)
        raw = self.o.store.get_bytes(keys.manifest)
        if raw is None:
            raise OSError(f"j{job_id}: the training manifest is not in the store")
        from jobs.manifest import try_pod_manifest

        manifest = try_pod_manifest(
            json.loads(raw), store=self.o.store, expires_s=self.o.config.url_lifetime_s, poll_s=SERVE_POLL_S
        )
        self.o.store.put_bytes(try_manifest_key(job_id), json.dumps(manifest).encode())

    def _send_confirmed(self, job_id: int, serving: Pod) -> None:
        """Rewrite requests.json with every open request, then mark the confirmed ones RUNNING on this pod."""
        now = self.o.clock()
        with session_scope(self.o.sessions) as s:
            rows = list(open_try_requests(s, job_id))
            if not any(r.status is TryStatus.CONFIRMED for r in rows):
                return
            job = get_job(s, job_id)
            assert job is not None
            refs = trained_epochs(s, job_id)
            try_job = try_job_of(job, sorted(refs))
            lifetime = self.o.config.url_lifetime_s
            entries = []
            for row in rows:
                spec = spec_from_json(row.spec_json)
                entries.append(
                    request_entry(
                        try_job,
                        spec,
                        tid=row.public_id,
                        loras={epoch: refs[epoch] for epoch in spec.epochs if epoch in refs},
                        presign_get=lambda key: self.o.store.presign_get(key, lifetime),
                        presign_put=lambda key: self.o.store.presign_put(key, lifetime),
                    )
                )
            public = job.public_id
            confirmed = [r.id for r in rows if r.status is TryStatus.CONFIRMED]
        self.o.store.put_bytes(requests_key(public), requests_document(entries), "application/json")
        with session_scope(self.o.sessions) as s:
            for request_id in confirmed:
                set_try_status(s, request_id, TryStatus.RUNNING, now=now, pod_id=serving.id)

    def _collect(self, job_id: int) -> None:
        """Each running request's status from the bucket: done or failed ends it and queues its answer."""
        with session_scope(self.o.sessions) as s:
            running = [(r.id, r.public_id) for r in open_try_requests(s, job_id) if r.status is TryStatus.RUNNING]
        for request_id, tid in running:
            raw = self.o.store.get_bytes(status_key(f"j{job_id}", tid), _STATUS_MAX_BYTES)
            if raw is None:
                continue
            try:
                status = parse_request_status(raw)
            except ValueError:
                continue  # a torn write: the agent rewrites it
            now = self.o.clock()
            result = {"cells_done": status.cells_done, "cells": status.cells, "seconds": status.seconds}
            with session_scope(self.o.sessions) as s:
                if status.phase == "done":
                    set_try_status(s, request_id, TryStatus.DONE, now=now, result=result)
                elif status.phase == "failed":
                    error = f"{status.error_kind or 'internal'}: {status.error_message or 'no message'}"
                    set_try_status(s, request_id, TryStatus.FAILED, now=now, error=error, result=result)
                else:
                    row = s.get(TryRequest, request_id)
                    if row is not None:
                        row.result_json = result
                    continue
                self._result_notice(s, job_id, request_id, now)

    async def _check_pod(self, job_id: int, serving: Pod) -> None:
        """A serving pod that is lost, stuck or whose serve stage failed: its open requests fail, the pod goes."""
        trouble: str | None = None
        seen = await self.o.pods.observe(serving.id)
        if seen in (PodSeen.ERROR, PodSeen.GONE, PodSeen.STUCK):
            trouble = f"the GPU pod was {seen.value} at RunPod"
        else:
            raw = self.o.store.get_bytes(f"jobs/j{job_id}/status/serve.json", _STATUS_MAX_BYTES)
            status = _json_object(raw)
            if (
                status is not None
                and status.get("phase") == "failed"
                and status.get("pod_id")
                in (
                    None,
                    "",
                    serving.runpod_pod_id,
                )
            ):
                error = status.get("error") or {}
                trouble = f"the pod could not serve ({error.get('kind') or 'internal'}: {error.get('message') or ''})"
        if trouble is None:
            return
        now = self.o.clock()
        with session_scope(self.o.sessions) as s:
            for row in open_try_requests(s, job_id):
                set_try_status(s, row.id, TryStatus.FAILED, now=now, error=trouble[:400])
                self._result_notice(s, job_id, row.id, now)
            pod = s.get(Pod, serving.id)
            if pod is not None:
                pod.keep_until = now
        if serving.role is PodRole.GPU:
            await self.close_window(job_id, by="the pod was lost")
        else:
            await self.o.pods.terminate(serving.id, reason=trouble)
            self.o._close_costs(job_id)


def _json_object(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


__all__ = ["Tries", "TryQuote", "spec_from_json", "train_spec_of", "try_job_of", "try_manifest_key", "window_minutes"]
