"""Job and pod states, the legal job transitions, and the other small enums the store keeps.

The job state machine (``ALLOWED_TRANSITIONS`` below is the source of truth; this drawing mirrors it)::

                  ┌──────────────(warm: env + model already cached on the volume)──────────────┐
                  │                                                                             ▼
    /train ──► QUEUED ──► PREPARING ──► TRAINING ──► COLLECTING ──► SUCCEEDED              (TRAINING)
                  │            │          │   ▲            │
                  │            │          ▼   │            │
                  │            │       INTERRUPTED         │      (GPU host lost: resume from
                  │            │          │                │       the last --save_state on a new pod)
                  ▼            ▼          ▼                ▼
        any non-terminal ──► CANCELLING ──► CANCELLED            (/cancel: pods terminated, cost kept)
        any non-terminal ──► FAILED_DATASET | FAILED_NO_CAPACITY | FAILED_TRAINER
                             | FAILED_BUDGET | FAILED_TIMEOUT | FAILED_INTERNAL   (reason stored, cost kept)
        QUEUED ──► CANCELLED                 (nothing was started, so there is nothing to clean up)
        FAILED_* | CANCELLED ──► QUEUED      (/retry)
        /caption ──► QUEUED ──► PREPARING ──► SUCCEEDED   (caption-only: the CPU pod tags the dataset, no GPU is rented)

SUCCEEDED is final. CANCELLING only ends in CANCELLED: once a user asked to stop, a late failure or success of the
pod no longer changes the outcome (the orchestrator finishes the clean-up and closes the cost).
"""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    """Where a training job is. Values are stored in the ``jobs.status`` column: never rename one."""

    # Accepted and planned; waiting for a free GPU slot, the user's budget, or the next tick.
    QUEUED = "queued"
    # A CPU pod builds what the volume's cache lacks (venv, sd-scripts, base model, dataset); the GPU may be reserved.
    PREPARING = "preparing"
    # A GPU pod runs sd-scripts; epochs, samples and checkpoints arrive in the bucket.
    TRAINING = "training"
    # The GPU pod went away mid-training (its host was lost); the job resumes from its last saved state.
    INTERRUPTED = "interrupted"
    # Training finished; the final LoRA is being verified (sha256) and the pods torn down.
    COLLECTING = "collecting"
    # The user (or an admin) asked to stop; pods are being terminated and the cost closed.
    CANCELLING = "cancelling"
    # The final LoRA is in the store, every pod is gone, the cost is closed.
    SUCCEEDED = "succeeded"
    # Stopped on request; whatever was uploaded is kept.
    CANCELLED = "cancelled"
    # The dataset could not be used (ingest refused it, or the pod could not fetch or read it).
    FAILED_DATASET = "failed_dataset"
    # No GPU in the fallback list had stock before the capacity deadline.
    FAILED_NO_CAPACITY = "failed_no_capacity"
    # sd-scripts failed (OOM, NaN loss, assertion, crash, missing file).
    FAILED_TRAINER = "failed_trainer"
    # The job would exceed, or did exceed, the user's or team's monthly budget.
    FAILED_BUDGET = "failed_budget"
    # The job ran past its wall-time deadline, or a pod stayed silent for too long.
    FAILED_TIMEOUT = "failed_timeout"
    # A bug or an unexpected error in lorabot itself (the cloud API, the store, the orchestrator).
    FAILED_INTERNAL = "failed_internal"

    def is_terminal(self) -> bool:
        """True when no work is left for this job (only ``/retry`` may take it back to QUEUED)."""
        return self in _TERMINAL

    def is_failed(self) -> bool:
        return self in _FAILED

    @classmethod
    def terminal_statuses(cls) -> frozenset[JobStatus]:
        return _TERMINAL

    @classmethod
    def failure_statuses(cls) -> frozenset[JobStatus]:
        return _FAILED

    @classmethod
    def active_statuses(cls) -> frozenset[JobStatus]:
        """Statuses the orchestrator's tick must look at (everything not terminal)."""
        return frozenset(status for status in cls if status not in _TERMINAL)


_FAILED: frozenset[JobStatus] = frozenset(status for status in JobStatus if status.name.startswith("FAILED_"))
_TERMINAL: frozenset[JobStatus] = _FAILED | {JobStatus.SUCCEEDED, JobStatus.CANCELLED}

_S = JobStatus
_ANY_FAILURE = _FAILED

ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    # TRAINING straight from QUEUED is the warm path: the volume already holds the env and the model.
    _S.QUEUED: frozenset({_S.PREPARING, _S.TRAINING, _S.CANCELLING, _S.CANCELLED}) | _ANY_FAILURE,
    # SUCCEEDED from PREPARING: a caption-only job (/caption) is done when its CPU pod has tagged the dataset.
    _S.PREPARING: frozenset({_S.TRAINING, _S.SUCCEEDED, _S.CANCELLING}) | _ANY_FAILURE,
    _S.TRAINING: frozenset({_S.COLLECTING, _S.INTERRUPTED, _S.CANCELLING}) | _ANY_FAILURE,
    _S.INTERRUPTED: frozenset({_S.TRAINING, _S.CANCELLING}) | _ANY_FAILURE,
    _S.COLLECTING: frozenset({_S.SUCCEEDED, _S.CANCELLING}) | _ANY_FAILURE,
    _S.CANCELLING: frozenset({_S.CANCELLED}),
    _S.SUCCEEDED: frozenset(),
    _S.CANCELLED: frozenset({_S.QUEUED}),
    _S.FAILED_DATASET: frozenset({_S.QUEUED}),
    _S.FAILED_NO_CAPACITY: frozenset({_S.QUEUED}),
    _S.FAILED_TRAINER: frozenset({_S.QUEUED}),
    _S.FAILED_BUDGET: frozenset({_S.QUEUED}),
    _S.FAILED_TIMEOUT: frozenset({_S.QUEUED}),
    _S.FAILED_INTERNAL: frozenset({_S.QUEUED}),
}


def allowed_sources(target: JobStatus) -> frozenset[JobStatus]:
    """Every status a job may be in for a move to ``target`` to be legal (the guard of the SQL compare-and-set)."""
    return frozenset(source for source, targets in ALLOWED_TRANSITIONS.items() if target in targets)


class PodStatus(enum.StrEnum):
    """What lorabot knows about one pod it asked RunPod for. Stored in ``pods.status``."""

    # The row exists (written before the API call); RunPod may not have answered yet, or the container is starting.
    CREATING = "creating"
    # The container runs (RunPod reports a runtime).
    RUNNING = "running"
    # The container stopped by itself (the agent finished or crashed); the pod still exists and still bills.
    EXITED = "exited"
    # We asked RunPod to terminate it and wait for confirmation.
    TERMINATING = "terminating"
    # Gone for good; billing stopped at ``terminated_at``.
    TERMINATED = "terminated"
    # RunPod no longer knows the pod although we never terminated it (its host was lost).
    LOST = "lost"

    def is_live(self) -> bool:
        """True while the pod may exist at RunPod and bill us."""
        return self is not PodStatus.TERMINATED


class PodRole(enum.StrEnum):
    """Why a pod exists; part of its deterministic name ``lorabot-<job>-cpu|gpu[-N]``."""

    # The cheap CPU pod that fills the volume's cache (env, model, dataset).
    CPU = "cpu"
    # The GPU pod that trains.
    GPU = "gpu"
    # A GPU pod over the job's volume that generates /try images from a finished job's LoRAs (agent stage "serve").
    TRY = "try"


class NoticeKind(enum.StrEnum):
    """The kind of an outbox notice; the bot's notifier picks the message layout from it."""

    # The dataset report and plan (steps, duration, cost breakdown, rule notices).
    PLAN = "plan"
    # The CPU stage started or progressed (steps, cache hits).
    PREPARING = "preparing"
    # No stock for the preferred GPU: the fallback in use, the next retry.
    WAITING_GPU = "waiting_gpu"
    # One epoch done: samples, loss, ETA, cost so far.
    EPOCH = "epoch"
    # The final LoRA links and the cost table.
    SUCCEEDED = "succeeded"
    # The failure kind, its reason and a hint.
    FAILED = "failed"
    # Stopped on request, with the final cost.
    CANCELLED = "cancelled"
    # The GPU pod was lost; the job resumes.
    INTERRUPTED = "interrupted"
    # Anything else worth a line in the thread (queued again, training started, collecting...).
    INFO = "info"
    # Its owner or an admin picked an epoch as the job's result: say so, and redraw the final message for it.
    PICKED = "picked"
    # Refresh the job's contact sheets (queued by the notifier once an epoch's gallery or the final message is out):
    # the sheet messages are edited, or posted the first time.
    CONTACT_SHEET = "contact_sheet"
    # The CPU pod captioned the dataset: tag frequencies, example captions, unreadable images and a download link,
    # posted before training starts (jobs/captioned.py).
    CAPTIONS = "captions"
    # A /try request's answer: the grid of its images (read from the bucket and drawn by the notifier), or why none.
    TRY_RESULT = "try_result"
    # The test window's line in the thread ("open until HH:MM, $x so far", its Close button, then its final cost):
    # posted once, then edited in place as the cost grows and when it closes.
    TEST_WINDOW = "test_window"


class CostKind(enum.StrEnum):
    """What a cost item pays for; the columns of the cost breakdown (seed 000's table)."""

    CPU_POD = "cpu_pod"
    GPU_POD = "gpu_pod"
    # The job's share of its data center's Network Volume, by the hour.
    VOLUME = "volume"
    # Artifact storage (bucket), when the operator prices it.
    STORAGE = "storage"
    # GPU time after training: /try pods, and the training pod's time kept warm for the test window (split from
    # its GPU_POD line at the moment the window opened).
    TRY_GPU = "try_gpu"


class CacheKind(enum.StrEnum):
    """What a volume cache entry holds (the agent's ``COMPLETE`` markers, mirrored in the DB)."""

    ENV = "env"
    MODEL = "model"
    DATASET = "dataset"
    # Not a thing on the volume: `lorabot volumes prune` asked for another entry of this volume to be deleted (key
    # ``<kind>:<key>``, ready_at = when); the next CPU stage there deletes it and the bot then forgets both.
    PRUNE = "prune"


def default_notice_kind(target: JobStatus) -> NoticeKind:
    """The notice a transition to ``target`` announces when the caller gives none."""
    if target.is_failed():
        return NoticeKind.FAILED
    return _NOTICE_FOR_TARGET.get(target, NoticeKind.INFO)


_NOTICE_FOR_TARGET: dict[JobStatus, NoticeKind] = {
    JobStatus.PREPARING: NoticeKind.PREPARING,
    JobStatus.INTERRUPTED: NoticeKind.INTERRUPTED,
    JobStatus.SUCCEEDED: NoticeKind.SUCCEEDED,
    JobStatus.CANCELLED: NoticeKind.CANCELLED,
}


class TryStatus(enum.StrEnum):
    """Where a /try request is. Stored in ``try_requests.status``; ``TRY_TRANSITIONS`` is the source of truth::

    /try ──► PENDING ──(Confirm)──► CONFIRMED ──(in requests.json)──► RUNNING ──► DONE | FAILED
                │                        │                               │
                ▼                        ▼                               ▼
         DISMISSED | EXPIRED        CANCELLED | FAILED                CANCELLED (/cancel, window closed)
    """

    # The estimate is shown with Confirm/Cancel; nothing is rented.
    PENDING = "pending"
    # Confirmed: waiting for a pod to serve it (a TRY pod is being rented, or the warm window pod takes it).
    CONFIRMED = "confirmed"
    # Written into the job's requests.json; the serving pod's agent generates it.
    RUNNING = "running"
    # Every cell is in the bucket; the grid is (being) posted.
    DONE = "done"
    # The agent (or the pod) failed it; ``error`` says why.
    FAILED = "failed"
    # Stopped before it finished: /cancel on the job, or the serving pod went away for good.
    CANCELLED = "cancelled"
    # Cancel on the estimate.
    DISMISSED = "dismissed"
    # Not confirmed in time (the estimate and the pod prices it used are old).
    EXPIRED = "expired"

    def is_open(self) -> bool:
        """True while the request may still need a pod (the reaper and the linger count these)."""
        return self in (TryStatus.CONFIRMED, TryStatus.RUNNING)

    def is_final(self) -> bool:
        return not TRY_TRANSITIONS[self]


_T = TryStatus
TRY_TRANSITIONS: dict[TryStatus, frozenset[TryStatus]] = {
    _T.PENDING: frozenset({_T.CONFIRMED, _T.DISMISSED, _T.EXPIRED}),
    _T.CONFIRMED: frozenset({_T.RUNNING, _T.CANCELLED, _T.FAILED}),
    _T.RUNNING: frozenset({_T.DONE, _T.FAILED, _T.CANCELLED}),
    _T.DONE: frozenset(),
    _T.FAILED: frozenset(),
    _T.CANCELLED: frozenset(),
    _T.DISMISSED: frozenset(),
    _T.EXPIRED: frozenset(),
}


def try_sources(target: TryStatus) -> frozenset[TryStatus]:
    """Every status a /try request may be in for a move to ``target`` to be legal."""
    return frozenset(source for source, targets in TRY_TRANSITIONS.items() if target in targets)
