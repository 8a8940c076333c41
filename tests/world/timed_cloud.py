"""The real cloud client, noting on the simulated clock when each create and terminate call went out and when
its answer came back, and what each look at a pod found.

RunPod bills from the moment a call takes effect, which lies somewhere inside that window; the bot can only know
the window. On the emulator's scaled clock a slow moment of the test machine widens it 120-fold, so the money check
(`tests/world/money.py`) allows what these windows leave unknown, plus a second of per-second rounding, and no more.

A pod RunPod shows in ERROR leaves one more window unknown: its host may have died (billing stopped) or its
container crash-looped (billing goes on), and RunPod's answer carries no time. The ledger bills it until the bot's
terminate, an upper bound; the truth lies somewhere after the last look that found the pod healthy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from jobs.cloud import AsyncCloud, CloudApi, PodInfo, PodRequest


@dataclass(frozen=True)
class CallWindow:
    method: str  # "create_pod" | "terminate_pod"
    pod: str  # the pod's name for a create, RunPod's id for a terminate
    sent: dt.datetime
    answered: dt.datetime

    @property
    def seconds(self) -> float:
        return (self.answered - self.sent).total_seconds()


@dataclass(frozen=True)
class StatusLook:
    pod: str  # RunPod's id
    answered: dt.datetime
    status: str


@dataclass
class CallLog:
    windows: list[CallWindow] = field(default_factory=list)
    looks: list[StatusLook] = field(default_factory=list)

    def unknown_seconds(self, *, name: str, runpod_id: str | None) -> float:
        """How long the bot could not tell whether a pod was billing: its create and terminate windows."""
        return sum(
            w.seconds
            for w in self.windows
            if (w.method == "create_pod" and w.pod == name) or (w.method == "terminate_pod" and w.pod == runpod_id)
        ) + self._after_last_healthy_look(runpod_id)

    def _after_last_healthy_look(self, runpod_id: str | None) -> float:
        """For a pod once seen in ERROR: from the last look that found it healthy (or its create's answer) to the
        terminate's answer, where the ledger could only assume it billed. Zero for every other pod."""
        looks = [look for look in self.looks if look.pod == runpod_id]
        if runpod_id is None or not any(look.status == "ERROR" for look in looks):
            return 0.0
        first_error = next(i for i, look in enumerate(looks) if look.status == "ERROR")
        healthy = [look.answered for look in looks[:first_error]]
        terminated = [w.answered for w in self.windows if w.method == "terminate_pod" and w.pod == runpod_id]
        if not healthy or not terminated:
            return 0.0
        return (terminated[-1] - healthy[-1]).total_seconds()


class TimedCloud(AsyncCloud):
    def __init__(
        self, client: CloudApi, *, clock: Callable[[], dt.datetime], calls: CallLog, base_delay_s: float = 0.05
    ) -> None:
        super().__init__(client, base_delay_s=base_delay_s)
        self.clock, self.call_log = clock, calls

    async def create_pod(self, req: PodRequest) -> PodInfo:
        sent = self.clock()
        try:
            info = await super().create_pod(req)
            self.call_log.looks.append(StatusLook(info.id, self.clock(), info.status))
            return info
        finally:
            self.call_log.windows.append(CallWindow("create_pod", req.name, sent, self.clock()))

    async def get_pod(self, pod_id: str) -> PodInfo:
        info = await super().get_pod(pod_id)
        self.call_log.looks.append(StatusLook(pod_id, self.clock(), info.status))
        return info

    async def terminate_pod(self, pod_id: str, *, on_attempt: Callable[[], None] | None = None) -> None:
        # Only the last try counts: a try that failed had no effect (RunPod answered 5xx before acting).
        sent = [self.clock()]

        def attempt() -> None:
            sent.append(self.clock())
            if on_attempt is not None:
                on_attempt()

        try:
            await super().terminate_pod(pod_id, on_attempt=attempt)
        finally:
            self.call_log.windows.append(CallWindow("terminate_pod", pod_id, sent[-1], self.clock()))
