"""RunPod as the orchestrator sees it: typed values, the errors a call can end in, and the retry policy.

Two transports speak to RunPod and both answer in these types: `jobs.runpod_rest` (REST API v2, the default: RunPod
retired REST v1 on 2026-11-15 and retires GraphQL in early 2027) and `jobs.runpod_graphql` (the `runpod` SDK's
GraphQL, an operator's fallback while RunPod still serves it). The transports only speak HTTP and map answers to
these errors, at the edge (dstack's rule); which GPU, cloud and data center to ask for is the orchestrator's policy.

How each of RunPod's answers to a create is handled follows the table in RunPod's own createPod description:
422 the body breaks the contract (our bug, never retried), 400 this candidate cannot be placed (try the next one),
402 no balance (stop creating anything), 403 no access to that pool (skip it), 429 wait `Retry-After`, 5xx retry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol, TypeVar

log = logging.getLogger(__name__)

Cloud = Literal["COMMUNITY", "SECURE"]
# RunPod's pod statuses (REST v2 `PodStatus`).
PodStatusName = Literal["PROVISIONING", "STARTING", "RUNNING", "EXITED", "ERROR", "TERMINATED"]
MICROS = Decimal(1_000_000)
# A 429 whose Retry-After is missing or absurd still waits, but never longer than this.
MAX_RETRY_AFTER_S = 60.0
_T = TypeVar("_T")


class CloudError(Exception):
    """A RunPod call failed for a reason that retrying the same call will not fix."""


class CloudTransientError(CloudError):
    """5xx, timeout, connection reset or a garbled answer: worth another try later."""


class CloudAuthError(CloudError):
    """The API key was refused (401) or lacks a permission the call needs."""


class CloudContractError(CloudError):
    """RunPod answered 422: our request broke its published contract. A bug on our side, never retried."""

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errors = tuple(errors)


class CandidateRefused(CloudError):
    """400 on a create: valid request, but this GPU/data center could not be placed (or a cross-field rule).
    The next candidate may work."""


class NoCapacityError(CandidateRefused):
    """The refusal said what it usually says: no machine with the requested GPU/cloud right now."""


class CandidateForbidden(CloudError):
    """403 on a create: the account cannot use that pool. Skip the candidate, keep going."""


class InsufficientBalance(CloudError):
    """402: the account's balance cannot pay for the pod. No candidate will succeed until it is topped up."""


class RateLimited(CloudTransientError):
    """429: RunPod asks us to wait `retry_after_s` before the next call."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PodNotFound(CloudError):
    """The pod does not exist (any more)."""


def dollars_to_micros(value: float | str | Decimal | None) -> int:
    if value is None:
        return 0
    return int((Decimal(str(value)) * MICROS).to_integral_value())


@dataclass(frozen=True)
class GpuOffer:
    """One GPU type in one cloud, with its live price and stock (in the data center asked about)."""

    gpu_type_id: str
    display_name: str
    memory_gb: int
    cloud: Cloud
    price_micros_per_hr: int
    stock: str | None  # "High" | "Medium" | "Low", None when there is none

    @property
    def available(self) -> bool:
        return self.stock is not None and self.price_micros_per_hr > 0


@dataclass(frozen=True)
class CpuFlavorOffer:
    """A CPU flavor (`cpu3c`, `cpu3g`, ...): its vCPU range, memory and price per vCPU."""

    id: str
    min_vcpu: int
    max_vcpu: int
    ram_gb_per_vcpu: float
    price_micros_per_vcpu_hr: int


@dataclass(frozen=True)
class PodInfo:
    id: str
    name: str
    status: PodStatusName
    cost_per_hr_micros: int
    uptime_seconds: int
    gpu_type_id: str | None
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def is_running(self) -> bool:
        return self.status == "RUNNING"

    @property
    def is_starting(self) -> bool:
        return self.status in ("PROVISIONING", "STARTING")


@dataclass(frozen=True)
class VolumeInfo:
    id: str
    name: str
    size_gb: int
    data_center_id: str


@dataclass(frozen=True)
class BillingRecord:
    """One of RunPod's own billing records for a pod (`/v2/billing/pods`), in micro-dollars."""

    pod_id: str
    start: dt.datetime
    end: dt.datetime
    gpu_micros: int
    cpu_micros: int
    disk_micros: int
    total_micros: int


@dataclass(frozen=True)
class PodRequest:
    """One pod to create. GPU pods name `gpu_type_id`; CPU pods a flavor and a vCPU count (a power of two)."""

    name: str
    image: str
    args: str
    env: dict[str, str] = field(repr=False)
    network_volume_id: str
    data_center_id: str
    volume_mount_path: str = "/workspace"
    container_disk_gb: int = 20
    gpu_type_id: str | None = None  # None -> CPU pod
    cloud: Cloud = "SECURE"
    cpu_flavor_id: str = "cpu3g"
    cpu_vcpu_count: int = 2

    def __post_init__(self) -> None:
        if self.network_volume_id and self.cloud != "SECURE":
            # RunPod mounts Network Volumes only on Secure Cloud pods: such a request can never run as planned.
            raise ValueError("a pod with a Network Volume must be in the Secure Cloud")
        if self.gpu_type_id is None and (self.cpu_vcpu_count < 2 or self.cpu_vcpu_count & (self.cpu_vcpu_count - 1)):
            raise ValueError(f"a CPU pod's vCPU count must be a power of two ≥ 2, got {self.cpu_vcpu_count}")


class CloudApi(Protocol):
    """What a transport offers: one coroutine per RunPod operation, errors already mapped to CloudError kinds."""

    async def create_pod(self, req: PodRequest) -> PodInfo: ...

    async def get_pod(self, pod_id: str) -> PodInfo: ...

    async def list_pods(self) -> list[PodInfo]: ...

    async def terminate_pod(self, pod_id: str) -> None: ...

    async def list_gpu_offers(self, data_center_id: str | None, clouds: Sequence[Cloud]) -> list[GpuOffer]: ...

    async def list_cpu_flavors(self) -> list[CpuFlavorOffer]: ...

    async def list_volumes(self) -> list[VolumeInfo]: ...

    async def create_volume(self, name: str, size_gb: int, data_center_id: str) -> VolumeInfo: ...

    async def resize_volume(self, volume_id: str, size_gb: int) -> VolumeInfo: ...

    async def pod_billing(self, pod_id: str) -> list[BillingRecord]: ...

    async def close(self) -> None: ...


class AsyncCloud:
    """The interface the orchestrator uses: a transport's calls with RunPod's retry rules.

    Reads and terminates are retried on 5xx and timeouts with back-off, and after a 429 once `Retry-After` has
    passed. A create is retried only after a 429 (RunPod did not act on it); after a 5xx or a timeout it may have
    made the pod, so the orchestrator looks the name up on its next tick instead of asking twice.
    """

    def __init__(
        self,
        client: CloudApi,
        *,
        attempts: int = 3,
        base_delay_s: float = 0.2,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self._attempts = attempts
        self._base_delay_s = base_delay_s
        self._sleep = sleep

    async def _retrying(
        self,
        name: str,
        call: Callable[[], Awaitable[_T]],
        *,
        on_attempt: Callable[[], None] | None = None,
        transient_ok: bool = True,
    ) -> _T:
        attempt = 0
        while True:
            attempt += 1
            if on_attempt is not None:
                on_attempt()
            try:
                return await call()
            except RateLimited as exc:
                if attempt >= self._attempts + 2:
                    raise
                delay = min(max(exc.retry_after_s, 0.0), MAX_RETRY_AFTER_S)
                log.warning("RunPod rate-limited %s: waiting %.1fs (Retry-After)", name, delay)
                await self._sleep(delay)
            except CloudTransientError as exc:
                if not transient_ok or attempt >= self._attempts:
                    raise
                delay = self._base_delay_s * 2 ** (attempt - 1) * (1 + random.random() / 2)
                log.warning("RunPod call %s failed (%s), retrying in %.1fs", name, exc, delay)
                await self._sleep(delay)

    async def create_pod(self, req: PodRequest) -> PodInfo:
        return await self._retrying("create_pod", lambda: self.client.create_pod(req), transient_ok=False)

    async def get_pod(self, pod_id: str) -> PodInfo:
        return await self._retrying("get_pod", lambda: self.client.get_pod(pod_id))

    async def list_pods(self, name_prefix: str = "lorabot-") -> list[PodInfo]:
        pods = await self._retrying("list_pods", self.client.list_pods)
        return [p for p in pods if p.name.startswith(name_prefix)]

    async def terminate_pod(self, pod_id: str, *, on_attempt: Callable[[], None] | None = None) -> None:
        """Terminate (retried: terminating twice is harmless; a pod already gone counts as terminated).
        ``on_attempt`` runs before each try, so a caller can time the try that took effect."""

        async def call() -> None:
            try:
                await self.client.terminate_pod(pod_id)
            except PodNotFound:
                log.debug("pod %s was already gone", pod_id)

        await self._retrying("terminate_pod", call, on_attempt=on_attempt)

    async def list_gpu_offers(
        self, data_center_id: str | None = None, clouds: Sequence[Cloud] = ("SECURE",)
    ) -> list[GpuOffer]:
        return await self._retrying("list_gpu_offers", lambda: self.client.list_gpu_offers(data_center_id, clouds))

    async def list_cpu_flavors(self) -> list[CpuFlavorOffer]:
        return await self._retrying("list_cpu_flavors", self.client.list_cpu_flavors)

    async def list_volumes(self) -> list[VolumeInfo]:
        return await self._retrying("list_volumes", self.client.list_volumes)

    async def create_volume(self, name: str, size_gb: int, data_center_id: str) -> VolumeInfo:
        return await self._retrying(
            "create_volume", lambda: self.client.create_volume(name, size_gb, data_center_id), transient_ok=False
        )

    async def resize_volume(self, volume_id: str, size_gb: int) -> VolumeInfo:
        # Retried: asking twice for the same size leaves the volume as asking once does.
        return await self._retrying("resize_volume", lambda: self.client.resize_volume(volume_id, size_gb))

    async def pod_billing(self, pod_id: str) -> list[BillingRecord]:
        return await self._retrying("pod_billing", lambda: self.client.pod_billing(pod_id))

    async def close(self) -> None:
        await self.client.close()


RunpodApi = Literal["rest", "graphql"]


def connect(api: RunpodApi, api_key: str, api_url: str | None = None, **retry: float) -> AsyncCloud:
    """An AsyncCloud over the chosen transport. The GraphQL one (and the `runpod` SDK with it) is imported only
    when asked for."""
    client: CloudApi
    if api == "graphql":
        try:
            from jobs.runpod_graphql import GraphqlClient
        except ImportError as exc:
            raise CloudError("runpod.api = \"graphql\" needs RunPod's SDK: pip install 'lorabot[graphql]'") from exc

        client = GraphqlClient(api_key, api_url)
    elif api == "rest":
        from jobs.runpod_rest import RestClient

        client = RestClient(api_key, api_url)
    else:
        raise ValueError(f"unknown RunPod API {api!r}: use 'rest' or 'graphql'")
    return AsyncCloud(client, **retry)  # type: ignore[arg-type]
