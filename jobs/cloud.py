"""RunPod, wrapped: a thin synchronous client over the real `runpod` SDK and an async facade with retries.

API generation: GraphQL only (`$RUNPOD_API_BASE_URL/graphql`), like the SDK itself. The SDK covers GPU and CPU pods,
get/list/terminate; spot pods (`podRentInterruptable`) and Network Volumes are sent as GraphQL through the SDK's own
`run_graphql_query`, with every value JSON-escaped (GraphQL string syntax), never pasted raw.

Errors are mapped here, at the edge (dstack's rule): no stock -> NoCapacityError, 401 -> CloudAuthError, unknown pod
-> PodNotFound, 5xx/timeouts/garbled answers -> CloudTransientError. Creation is never retried blindly: a create that
timed out may still have made a pod, so the orchestrator looks the name up on its next tick instead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, TypeVar

import requests
import runpod
from runpod import error as runpod_error
from runpod.api.graphql import run_graphql_query

log = logging.getLogger(__name__)

Cloud = Literal["COMMUNITY", "SECURE"]
NO_STOCK_MARKER = "no longer any instances available"
MICROS = Decimal(1_000_000)
_T = TypeVar("_T")
# The SDK reads the key from a module global and the base URL from the environment on every call.
_sdk_lock = threading.Lock()


class CloudError(Exception):
    """A RunPod call failed for a reason that retrying will not fix."""


class CloudTransientError(CloudError):
    """5xx, timeout, connection reset or a garbled answer: worth another try later."""


class CloudAuthError(CloudError):
    """The API key was refused."""


class NoCapacityError(CloudError):
    """RunPod has no machine with the requested GPU/cloud right now."""


class PodNotFound(CloudError):
    """The pod does not exist (any more)."""


def dollars_to_micros(value: float | str | Decimal | None) -> int:
    if value is None:
        return 0
    return int((Decimal(str(value)) * MICROS).to_integral_value())


@dataclass(frozen=True)
class GpuOffer:
    gpu_type_id: str
    display_name: str
    memory_gb: int
    cloud: Cloud
    price_micros_per_hr: int
    spot_price_micros_per_hr: int | None
    stock: str | None  # RunPod's lowestPrice.stockStatus: "High" | "Medium" | "Low" | None (none)

    @property
    def available(self) -> bool:
        return self.stock is not None and self.price_micros_per_hr > 0


@dataclass(frozen=True)
class PodInfo:
    id: str
    name: str
    desired_status: str
    cost_per_hr_micros: int
    uptime_seconds: int
    has_runtime: bool
    gpu_display_name: str | None
    env: dict[str, str] = field(default_factory=dict, repr=False)
    # From `lastStatusChange` ("Exited by Runpod (spot interrupted): Mon Nov 24 2025 01:02:03 GMT+0000 (...)").
    status_changed_at: dt.datetime | None = None
    spot_interrupted: bool = False

    @property
    def is_running(self) -> bool:
        return self.desired_status == "RUNNING" and self.has_runtime


@dataclass(frozen=True)
class VolumeInfo:
    id: str
    name: str
    size_gb: int
    data_center_id: str


@dataclass(frozen=True)
class PodRequest:
    name: str
    image: str
    docker_args: str
    env: dict[str, str] = field(repr=False)
    network_volume_id: str
    data_center_id: str
    volume_mount_path: str = "/workspace"
    container_disk_gb: int = 20
    gpu_type_id: str | None = None  # None -> CPU pod
    cloud: Cloud = "SECURE"
    cpu_instance_id: str = "cpu3c-2-4"
    spot_bid_per_gpu: Decimal | None = None

    def __post_init__(self) -> None:
        # The SDK pastes these into GraphQL string literals without escaping: refuse what would break the query.
        for where, value in [("docker_args", self.docker_args), ("name", self.name), *self.env.items()]:
            if any(ch in value for ch in '"\\\n\r'):
                raise ValueError(f"{where} must not contain quotes, backslashes or newlines")


class RunpodClient:
    """Transport only: one method per RunPod operation, synchronous, errors mapped to CloudError kinds."""

    def __init__(self, api_key: str, api_base_url: str | None = None) -> None:
        self._api_key = api_key
        self._api_base_url = api_base_url

    def __repr__(self) -> str:
        return f"RunpodClient(api_base_url={self._api_base_url!r}, api_key=***)"

    def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        with _sdk_lock:
            runpod.api_key = self._api_key
            if self._api_base_url:
                os.environ["RUNPOD_API_BASE_URL"] = self._api_base_url
            try:
                return fn(*args, **kwargs)
            except runpod_error.AuthenticationError:
                raise CloudAuthError("RunPod refused the API key (HTTP 401)") from None
            except runpod_error.QueryError as exc:
                raise _map_query_error(str(exc)) from None
            except (requests.Timeout, requests.ConnectionError) as exc:
                raise CloudTransientError(f"RunPod did not answer: {type(exc).__name__}") from None
            except (ValueError, KeyError, TypeError) as exc:
                # requests' JSONDecodeError (a 5xx HTML page) is a ValueError; so is the SDK's unknown-GPU check.
                if isinstance(exc, requests.JSONDecodeError):
                    raise CloudTransientError("RunPod answered with something that is not JSON (5xx?)") from None
                if "GPU" in str(exc) or "gpu" in str(exc):
                    raise CloudError(str(exc)) from None
                raise CloudTransientError(f"unexpected answer from RunPod: {type(exc).__name__}") from None

    def _graphql(self, query: str) -> dict[str, Any]:
        data = self._call(run_graphql_query, query, api_key=self._api_key)
        if not isinstance(data, dict) or "data" not in data:
            raise CloudTransientError("RunPod answered without data")
        return data["data"]

    # --- pods -------------------------------------------------------------------------------------------------
    def create_pod(self, req: PodRequest) -> PodInfo:
        if req.spot_bid_per_gpu is not None:
            return self._create_spot_pod(req)
        common = dict(
            name=req.name,
            image_name=req.image,
            data_center_id=req.data_center_id,
            network_volume_id=req.network_volume_id,
            volume_mount_path=req.volume_mount_path,
            container_disk_in_gb=req.container_disk_gb,
            docker_args=req.docker_args,
            env=dict(req.env),
            support_public_ip=False,
            start_ssh=False,
        )
        if req.gpu_type_id is None:
            raw = self._call(runpod.create_pod, **common, instance_id=req.cpu_instance_id, cloud_type="SECURE")
        else:
            raw = self._call(
                runpod.create_pod, **common, gpu_type_id=req.gpu_type_id, cloud_type=req.cloud, gpu_count=1
            )
        if not raw or not raw.get("id"):
            raise CloudTransientError("RunPod created no pod id")
        return _pod_from_create(raw, req)

    def _create_spot_pod(self, req: PodRequest) -> PodInfo:
        assert req.gpu_type_id is not None and req.spot_bid_per_gpu is not None
        env = ", ".join(f"{{ key: {_q(k)}, value: {_q(v)} }}" for k, v in req.env.items())
        query = f"""
        mutation {{
          podRentInterruptable(input: {{
            name: {_q(req.name)}, imageName: {_q(req.image)}, gpuTypeId: {_q(req.gpu_type_id)},
            cloudType: {req.cloud}, gpuCount: 1, bidPerGpu: {req.spot_bid_per_gpu},
            dataCenterId: {_q(req.data_center_id)}, networkVolumeId: {_q(req.network_volume_id)},
            volumeMountPath: {_q(req.volume_mount_path)}, containerDiskInGb: {req.container_disk_gb},
            dockerArgs: {_q(req.docker_args)}, supportPublicIp: false, startSsh: false, env: [{env}]
          }}) {{ id imageName env machineId costPerHr machine {{ podHostId }} }}
        }}"""
        raw = self._graphql(query).get("podRentInterruptable")
        if not raw or not raw.get("id"):
            raise CloudTransientError("RunPod created no spot pod id")
        return _pod_from_create(raw, req)

    def get_pod(self, pod_id: str) -> PodInfo:
        raw = self._call(runpod.get_pod, pod_id)
        pod = raw.get("pod") if isinstance(raw, dict) and "pod" in raw else raw
        if not pod:
            raise PodNotFound(f"pod {pod_id} not found")
        return _pod_from_api(pod)

    def list_pods(self) -> list[PodInfo]:
        return [_pod_from_api(p) for p in self._call(runpod.get_pods) or []]

    def terminate_pod(self, pod_id: str) -> None:
        """Idempotent: a pod that is already gone counts as terminated."""
        try:
            self._call(runpod.terminate_pod, pod_id)
        except PodNotFound:
            log.debug("pod %s was already gone", pod_id)

    # --- GPUs -------------------------------------------------------------------------------------------------
    def list_gpu_offers(self, data_center_id: str | None = None) -> list[GpuOffer]:
        dc = f", dataCenterId: {_q(data_center_id)}" if data_center_id else ""
        query = f"""
        query GpuTypes {{
          gpuTypes {{
            id displayName memoryInGb secureCloud communityCloud securePrice communityPrice
            secureSpotPrice communitySpotPrice
            secure: lowestPrice(input: {{gpuCount: 1, secureCloud: true{dc}}}) {{
              stockStatus uninterruptablePrice minimumBidPrice }}
            community: lowestPrice(input: {{gpuCount: 1, secureCloud: false{dc}}}) {{
              stockStatus uninterruptablePrice minimumBidPrice }}
          }}
        }}"""
        offers = []
        for gpu in self._graphql(query).get("gpuTypes") or []:
            for cloud, key, enabled in (
                ("SECURE", "secure", "secureCloud"),
                ("COMMUNITY", "community", "communityCloud"),
            ):
                lowest = gpu.get(key) or {}
                price = gpu.get("securePrice" if cloud == "SECURE" else "communityPrice")
                spot = gpu.get("secureSpotPrice" if cloud == "SECURE" else "communitySpotPrice")
                offers.append(
                    GpuOffer(
                        gpu_type_id=gpu["id"],
                        display_name=gpu.get("displayName") or gpu["id"],
                        memory_gb=int(gpu.get("memoryInGb") or 0),
                        cloud=cloud,  # type: ignore[arg-type]
                        price_micros_per_hr=dollars_to_micros(price),
                        spot_price_micros_per_hr=dollars_to_micros(spot) if spot else None,
                        stock=lowest.get("stockStatus") if gpu.get(enabled) else None,
                    )
                )
        return offers

    # --- Network Volumes --------------------------------------------------------------------------------------
    def list_volumes(self) -> list[VolumeInfo]:
        data = self._graphql("query { myself { networkVolumes { id name size dataCenterId } } }")
        return [
            VolumeInfo(v["id"], v.get("name") or "", int(v.get("size") or 0), v["dataCenterId"])
            for v in ((data.get("myself") or {}).get("networkVolumes") or [])
        ]

    def create_volume(self, name: str, size_gb: int, data_center_id: str) -> VolumeInfo:
        query = f"""
        mutation {{
          createNetworkVolume(input: {{name: {_q(name)}, size: {int(size_gb)}, dataCenterId: {_q(data_center_id)}}}) {{
            id name size dataCenterId
          }}
        }}"""
        v = self._graphql(query).get("createNetworkVolume")
        if not v or not v.get("id"):
            raise CloudTransientError("RunPod created no volume id")
        return VolumeInfo(
            v["id"], v.get("name") or name, int(v.get("size") or size_gb), v.get("dataCenterId") or data_center_id
        )


def _q(value: str) -> str:
    """A GraphQL string literal: JSON's escaping is valid GraphQL string syntax."""
    return json.dumps(value)


def _map_query_error(message: str) -> CloudError:
    lowered = message.lower()
    if NO_STOCK_MARKER in lowered or "not enough free gpus" in lowered:
        return NoCapacityError(message)
    if "not found" in lowered or "does not exist" in lowered:
        return PodNotFound(message)
    if any(marker in lowered for marker in ("internal", "timeout", "try again", "something went wrong")):
        return CloudTransientError(message)
    return CloudError(message)


def _pod_from_create(raw: dict[str, Any], req: PodRequest) -> PodInfo:
    return PodInfo(
        id=raw["id"],
        name=req.name,
        desired_status="RUNNING",
        cost_per_hr_micros=dollars_to_micros(raw.get("costPerHr")),
        uptime_seconds=0,
        has_runtime=False,
        gpu_display_name=req.gpu_type_id,
    )


_STATUS_TIME = re.compile(r"(\w{3} \w{3} \d{1,2} \d{4} \d{2}:\d{2}:\d{2}) GMT([+-]\d{4})")


def parse_status_change(text: str | None) -> dt.datetime | None:
    """The time in RunPod's `lastStatusChange` text, as aware UTC; None when it carries none we can read."""
    match = _STATUS_TIME.search(text or "")
    if match is None:
        return None
    try:
        when = dt.datetime.strptime(f"{match.group(1)} {match.group(2)}", "%a %b %d %Y %H:%M:%S %z")
    except ValueError:
        return None
    return when.astimezone(dt.UTC)


def _pod_from_api(raw: dict[str, Any]) -> PodInfo:
    env_raw = raw.get("env") or []
    env: dict[str, str] = {}
    # RunPod answers env as a list of "KEY=value" strings.
    for item in env_raw if isinstance(env_raw, list) else []:
        if isinstance(item, str) and "=" in item:
            key, _, value = item.partition("=")
            env[key] = value
    machine = raw.get("machine") or {}
    return PodInfo(
        id=raw["id"],
        name=raw.get("name") or "",
        desired_status=raw.get("desiredStatus") or "UNKNOWN",
        cost_per_hr_micros=dollars_to_micros(raw.get("costPerHr")),
        uptime_seconds=int(raw.get("uptimeSeconds") or 0),
        has_runtime=raw.get("runtime") is not None,
        gpu_display_name=machine.get("gpuDisplayName"),
        env=env,
        status_changed_at=parse_status_change(raw.get("lastStatusChange")),
        spot_interrupted="spot interrupted" in str(raw.get("lastStatusChange") or "").lower(),
    )


class AsyncCloud:
    """The async interface the orchestrator uses: SDK calls off the event loop, reads retried with back-off."""

    def __init__(self, client: RunpodClient, *, attempts: int = 3, base_delay_s: float = 0.2) -> None:
        self.client = client
        self._attempts = attempts
        self._base_delay_s = base_delay_s

    async def _retrying(self, fn: Callable[..., _T], *args: Any, on_attempt: Callable[[], None] | None = None) -> _T:
        for attempt in range(1, self._attempts + 1):
            if on_attempt is not None:
                on_attempt()
            try:
                return await asyncio.to_thread(fn, *args)
            except CloudTransientError as exc:
                if attempt == self._attempts:
                    raise
                delay = self._base_delay_s * 2 ** (attempt - 1) * (1 + random.random() / 2)
                log.warning("RunPod call %s failed (%s), retrying in %.1fs", fn.__name__, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def create_pod(self, req: PodRequest) -> PodInfo:
        return await asyncio.to_thread(self.client.create_pod, req)

    async def get_pod(self, pod_id: str) -> PodInfo:
        return await self._retrying(self.client.get_pod, pod_id)

    async def list_pods(self, name_prefix: str = "lorabot-") -> list[PodInfo]:
        pods = await self._retrying(self.client.list_pods)
        return [p for p in pods if p.name.startswith(name_prefix)]

    async def terminate_pod(self, pod_id: str, *, on_attempt: Callable[[], None] | None = None) -> None:
        """Terminate (retried: terminating twice is harmless). ``on_attempt`` runs before each try, so a caller
        can time the try that took effect rather than the whole retry loop."""
        await self._retrying(self.client.terminate_pod, pod_id, on_attempt=on_attempt)

    async def list_gpu_offers(self, data_center_id: str | None = None) -> list[GpuOffer]:
        return await self._retrying(self.client.list_gpu_offers, data_center_id)

    async def list_volumes(self) -> list[VolumeInfo]:
        return await self._retrying(self.client.list_volumes)

    async def create_volume(self, name: str, size_gb: int, data_center_id: str) -> VolumeInfo:
        return await asyncio.to_thread(self.client.create_volume, name, size_gb, data_center_id)
