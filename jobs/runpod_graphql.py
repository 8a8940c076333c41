"""RunPod over GraphQL through the `runpod` SDK: the operator's fallback (`runpod.api = "graphql"`).

RunPod retires GraphQL in early 2027; REST v2 (`jobs.runpod_rest`) is the default. This module is imported only
when an operator selects it, so the SDK (about 50 MiB of an idle bot) is never loaded otherwise.

The SDK covers GPU and CPU pods, get/list/terminate; Network Volumes and the GPU catalog are sent as GraphQL through
the SDK's own `run_graphql_query`, with every value JSON-escaped (GraphQL string syntax), never pasted raw. GraphQL
has no billing records per pod, so `pod_billing` answers with none. Errors are mapped to the kinds in `jobs.cloud`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import requests
import runpod
from runpod import error as runpod_error
from runpod.api.graphql import run_graphql_query

from jobs.cloud import (
    BillingRecord,
    Cloud,
    CloudAuthError,
    CloudError,
    CloudTransientError,
    CpuFlavorOffer,
    GpuOffer,
    NoCapacityError,
    PodInfo,
    PodNotFound,
    PodRequest,
    PodStatusName,
    VolumeInfo,
    dollars_to_micros,
)

log = logging.getLogger(__name__)

NO_STOCK_MARKER = "no longer any instances available"
_T = TypeVar("_T")
# The SDK reads the key from a module global and the base URL from the environment on every call.
_sdk_lock = threading.Lock()


class GraphqlClient:
    """Transport only: one coroutine per RunPod operation, each SDK call run in a thread."""

    def __init__(self, api_key: str, api_base_url: str | None = None) -> None:
        self._api_key = api_key
        self._api_base_url = api_base_url

    def __repr__(self) -> str:
        return f"GraphqlClient(api_base_url={self._api_base_url!r}, api_key=***)"

    async def close(self) -> None:
        return None

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

    async def _in_thread(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        return await asyncio.to_thread(self._call, fn, *args, **kwargs)

    async def _graphql(self, query: str) -> dict[str, Any]:
        data = await self._in_thread(run_graphql_query, query, api_key=self._api_key)
        if not isinstance(data, dict) or "data" not in data:
            raise CloudTransientError("RunPod answered without data")
        return data["data"]

    # --- pods -------------------------------------------------------------------------------------------------
    async def create_pod(self, req: PodRequest) -> PodInfo:
        common = dict(
            name=req.name,
            image_name=req.image,
            data_center_id=req.data_center_id,
            network_volume_id=req.network_volume_id,
            volume_mount_path=req.volume_mount_path,
            container_disk_in_gb=req.container_disk_gb,
            docker_args=req.args,
            env=dict(req.env),
            support_public_ip=False,
            start_ssh=False,
        )
        if req.gpu_type_id is None:
            raw = await self._in_thread(
                runpod.create_pod, **common, instance_id=cpu_instance_id(req), cloud_type="SECURE"
            )
        else:
            raw = await self._in_thread(
                runpod.create_pod, **common, gpu_type_id=req.gpu_type_id, cloud_type=req.cloud, gpu_count=1
            )
        if not raw or not raw.get("id"):
            raise CloudTransientError("RunPod created no pod id")
        return PodInfo(
            id=raw["id"],
            name=req.name,
            status="PROVISIONING",
            cost_per_hr_micros=dollars_to_micros(raw.get("costPerHr")),
            uptime_seconds=0,
            gpu_type_id=req.gpu_type_id,
        )

    async def get_pod(self, pod_id: str) -> PodInfo:
        raw = await self._in_thread(runpod.get_pod, pod_id)
        pod = raw.get("pod") if isinstance(raw, dict) and "pod" in raw else raw
        if not pod:
            raise PodNotFound(f"pod {pod_id} not found")
        return _pod_from_api(pod)

    async def list_pods(self) -> list[PodInfo]:
        return [_pod_from_api(p) for p in await self._in_thread(runpod.get_pods) or []]

    async def terminate_pod(self, pod_id: str) -> None:
        await self._in_thread(runpod.terminate_pod, pod_id)

    # --- catalog ----------------------------------------------------------------------------------------------
    async def list_gpu_offers(self, data_center_id: str | None, clouds: Sequence[Cloud]) -> list[GpuOffer]:
        dc = f", dataCenterId: {_q(data_center_id)}" if data_center_id else ""
        query = f"""
        query GpuTypes {{
          gpuTypes {{
            id displayName memoryInGb secureCloud communityCloud securePrice communityPrice
            secure: lowestPrice(input: {{gpuCount: 1, secureCloud: true{dc}}}) {{ stockStatus }}
            community: lowestPrice(input: {{gpuCount: 1, secureCloud: false{dc}}}) {{ stockStatus }}
          }}
        }}"""
        offers = []
        for gpu in (await self._graphql(query)).get("gpuTypes") or []:
            for cloud, key, enabled in (
                ("SECURE", "secure", "secureCloud"),
                ("COMMUNITY", "community", "communityCloud"),
            ):
                if cloud not in clouds:
                    continue
                lowest = gpu.get(key) or {}
                price = gpu.get("securePrice" if cloud == "SECURE" else "communityPrice")
                offers.append(
                    GpuOffer(
                        gpu_type_id=gpu["id"],
                        display_name=gpu.get("displayName") or gpu["id"],
                        memory_gb=int(gpu.get("memoryInGb") or 0),
                        cloud=cloud,  # type: ignore[arg-type]
                        price_micros_per_hr=dollars_to_micros(price),
                        stock=lowest.get("stockStatus") if gpu.get(enabled) else None,
                    )
                )
        return offers

    async def list_cpu_flavors(self) -> list[CpuFlavorOffer]:
        # GraphQL has no flavor catalog; the REST transport reads it.
        return []

    # --- Network Volumes --------------------------------------------------------------------------------------
    async def list_volumes(self) -> list[VolumeInfo]:
        data = await self._graphql("query { myself { networkVolumes { id name size dataCenterId } } }")
        return [
            VolumeInfo(v["id"], v.get("name") or "", int(v.get("size") or 0), v["dataCenterId"])
            for v in ((data.get("myself") or {}).get("networkVolumes") or [])
        ]

    async def create_volume(self, name: str, size_gb: int, data_center_id: str) -> VolumeInfo:
        query = f"""
        mutation {{
          createNetworkVolume(input: {{name: {_q(name)}, size: {int(size_gb)}, dataCenterId: {_q(data_center_id)}}}) {{
            id name size dataCenterId
          }}
        }}"""
        v = (await self._graphql(query)).get("createNetworkVolume")
        if not v or not v.get("id"):
            raise CloudTransientError("RunPod created no volume id")
        return VolumeInfo(
            v["id"], v.get("name") or name, int(v.get("size") or size_gb), v.get("dataCenterId") or data_center_id
        )

    async def resize_volume(self, volume_id: str, size_gb: int) -> VolumeInfo:
        query = f"""
        mutation {{
          updateNetworkVolume(input: {{id: {_q(volume_id)}, size: {int(size_gb)}}}) {{ id name size dataCenterId }}
        }}"""
        v = (await self._graphql(query)).get("updateNetworkVolume")
        if not v or not v.get("id"):
            raise CloudTransientError(f"RunPod answered the resize of volume {volume_id} without the volume")
        return VolumeInfo(v["id"], v.get("name") or "", int(v.get("size") or size_gb), v.get("dataCenterId") or "")

    async def pod_billing(self, pod_id: str) -> list[BillingRecord]:
        return []


def cpu_instance_id(req: PodRequest) -> str:
    """GraphQL's CPU instance id (`cpu3g-2-8`: flavor, vCPUs, GB of memory) for a flavor and vCPU count."""
    per_vcpu = {"c": 2, "g": 4, "m": 8}.get(req.cpu_flavor_id[-1:], 4)
    return f"{req.cpu_flavor_id}-{req.cpu_vcpu_count}-{req.cpu_vcpu_count * per_vcpu}"


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


def _status(raw: dict[str, Any]) -> PodStatusName:
    desired = raw.get("desiredStatus") or ""
    if desired == "RUNNING":
        return "RUNNING" if raw.get("runtime") is not None else "STARTING"
    if desired in ("EXITED", "TERMINATED", "ERROR"):
        return desired  # type: ignore[return-value]
    return "PROVISIONING"


def _pod_from_api(raw: dict[str, Any]) -> PodInfo:
    env_raw = raw.get("env") or []
    env: dict[str, str] = {}
    # GraphQL answers env as a list of "KEY=value" strings.
    for item in env_raw if isinstance(env_raw, list) else []:
        if isinstance(item, str) and "=" in item:
            key, _, value = item.partition("=")
            env[key] = value
    machine = raw.get("machine") or {}
    return PodInfo(
        id=raw["id"],
        name=raw.get("name") or "",
        status=_status(raw),
        cost_per_hr_micros=dollars_to_micros(raw.get("costPerHr")),
        uptime_seconds=int(raw.get("uptimeSeconds") or 0),
        gpu_type_id=machine.get("gpuTypeId"),
        env=env,
    )
