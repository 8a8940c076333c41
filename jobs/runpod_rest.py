"""RunPod's REST API v2 over aiohttp: the transport lorabot uses by default.

Thin on purpose: one coroutine per operation, bodies shaped as RunPod's OpenAPI document says (the emulator checks
every request and answer against it, `jobs/sandbox/emulator/runpod_v2_contract.json`), and each HTTP answer mapped
to the error kinds of `jobs.cloud`. Which pods to ask for, and what to do about a refusal, is the orchestrator's.
The API key goes only into the Authorization header; no log line or error text carries it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from jobs.cloud import (
    BillingRecord,
    CandidateForbidden,
    CandidateRefused,
    Cloud,
    CloudAuthError,
    CloudContractError,
    CloudError,
    CloudTransientError,
    CpuFlavorOffer,
    GpuOffer,
    InsufficientBalance,
    NoCapacityError,
    PodInfo,
    PodNotFound,
    PodRequest,
    RateLimited,
    VolumeInfo,
    dollars_to_micros,
)

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.runpod.io"
# What RunPod's 400 says when it has no machine for the request (the only sign: no machine-readable code exists).
NO_STOCK_MARKERS = ("no longer any instances available", "not enough free gpus", "no instances available")
_STOCK = {"LOW": "Low", "MEDIUM": "Medium", "HIGH": "High"}
_STATUSES: frozenset[str] = frozenset(("PROVISIONING", "STARTING", "RUNNING", "EXITED", "ERROR", "TERMINATED"))
_DETAIL_MAX = 300


class RestClient:
    """Transport only. Create it anywhere; its HTTP session opens on the first call, inside the running loop."""

    def __init__(self, api_key: str, api_url: str | None = None, *, timeout_s: float = 30.0) -> None:
        self._api_key = api_key
        self._api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"RestClient(api_url={self._api_url!r}, api_key=***)"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- HTTP -------------------------------------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"},
            )
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        creating: bool = False,
    ) -> Any:
        url = f"{self._api_url}{path}"
        try:
            async with self._http().request(method, url, json=body, params=params) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError:
            raise CloudTransientError(f"RunPod did not answer {operation} in time") from None
        except aiohttp.ClientError as exc:
            raise CloudTransientError(f"RunPod could not be reached for {operation}: {type(exc).__name__}") from None
        if 200 <= status < 300:
            if not raw:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                raise CloudTransientError(f"RunPod answered {operation} with something that is not JSON") from None
        raise _error_for(status, raw, retry_after, operation=operation, creating=creating)

    # --- pods -------------------------------------------------------------------------------------------------
    async def create_pod(self, req: PodRequest) -> PodInfo:
        raw = await self._request("POST", "/v2/pods", operation="createPod", body=create_pod_body(req), creating=True)
        return pod_from_api(_object(raw, "createPod"))

    async def get_pod(self, pod_id: str) -> PodInfo:
        try:
            raw = await self._request("GET", f"/v2/pods/{_segment(pod_id)}", operation="getPod")
        except _NotFound:
            raise PodNotFound(f"pod {pod_id} not found") from None
        return pod_from_api(_object(raw, "getPod"))

    async def list_pods(self) -> list[PodInfo]:
        raw = await self._request("GET", "/v2/pods", operation="listPods")
        return [pod_from_api(p) for p in _list(raw, "pods", "listPods")]

    async def terminate_pod(self, pod_id: str) -> None:
        try:
            await self._request("DELETE", f"/v2/pods/{_segment(pod_id)}", operation="deletePod")
        except _NotFound:
            raise PodNotFound(f"pod {pod_id} not found") from None

    # --- catalog ----------------------------------------------------------------------------------------------
    async def list_gpu_offers(self, data_center_id: str | None, clouds: Sequence[Cloud]) -> list[GpuOffer]:
        offers: list[GpuOffer] = []
        for cloud in clouds:
            raw = await self._request(
                "GET",
                "/v2/catalog/gpus",
                operation="listGpuTypes",
                params={"include": "AVAILABILITY", "product": "POD", "cloud": cloud},
            )
            for gpu in _list(raw, "gpus", "listGpuTypes"):
                offers.append(_offer(gpu, cloud, data_center_id))
        return offers

    async def list_cpu_flavors(self) -> list[CpuFlavorOffer]:
        raw = await self._request("GET", "/v2/catalog/cpus", operation="listCpuTypes")
        return [
            CpuFlavorOffer(
                id=str(cpu["id"]),
                min_vcpu=int(cpu["vcpu"]["min"]),
                max_vcpu=int(cpu["vcpu"]["max"]),
                ram_gb_per_vcpu=float(cpu["ramGbPerVcpu"]),
                price_micros_per_vcpu_hr=dollars_to_micros(cpu["price"]["securePerVcpu"]),
            )
            for cpu in _list(raw, "cpus", "listCpuTypes")
        ]

    async def list_data_centers(self) -> list[str]:
        raw = await self._request("GET", "/v2/catalog/datacenters", operation="listDataCenters")
        return [str(dc["id"]) for dc in _list(raw, "dataCenters", "listDataCenters")]

    # --- Network Volumes --------------------------------------------------------------------------------------
    async def list_volumes(self) -> list[VolumeInfo]:
        raw = await self._request("GET", "/v2/network-volumes", operation="listNetworkVolumes")
        return [_volume(v) for v in _list(raw, "networkVolumes", "listNetworkVolumes")]

    async def create_volume(self, name: str, size_gb: int, data_center_id: str) -> VolumeInfo:
        body = {"name": name, "size": int(size_gb), "dataCenter": data_center_id}
        raw = await self._request("POST", "/v2/network-volumes", operation="createNetworkVolume", body=body)
        return _volume(_object(raw, "createNetworkVolume"))

    async def resize_volume(self, volume_id: str, size_gb: int) -> VolumeInfo:
        """updateNetworkVolume: RunPod only grows a volume (a smaller size is a 400)."""
        raw = await self._request(
            "PATCH",
            f"/v2/network-volumes/{_segment(volume_id)}",
            operation="updateNetworkVolume",
            body={"size": int(size_gb)},
        )
        return _volume(_object(raw, "updateNetworkVolume"))

    # --- billing ----------------------------------------------------------------------------------------------
    async def pod_billing(self, pod_id: str) -> list[BillingRecord]:
        raw = await self._request(
            "GET", "/v2/billing/pods", operation="listPodBilling", params={"podId": pod_id, "bucketSize": "hour"}
        )
        return [_billing(r) for r in _list(raw, "records", "listPodBilling")]


class _NotFound(CloudError):
    """404: the caller names what was not found."""


def create_pod_body(req: PodRequest) -> dict[str, Any]:
    """The createPod body for a request: only fields RunPod's contract defines, nothing defaulted silently."""
    body: dict[str, Any] = {
        "name": req.name,
        "image": req.image,
        "env": dict(req.env),
        "disk": req.container_disk_gb,
        "cloud": req.cloud,
        "dataCenterIds": [req.data_center_id],
    }
    if req.args is not None:  # the contract's `args` is a string: no args means the image's own command
        body["args"] = req.args
    if req.network_volume_id:
        body["mounts"] = {"network": [{"volumeId": req.network_volume_id, "path": req.volume_mount_path}]}
    if req.gpu_type_id is None:
        body["cpu"] = {"id": req.cpu_flavor_id, "vcpuCount": req.cpu_vcpu_count}
    else:
        body["gpu"] = {"id": req.gpu_type_id, "count": 1}
    return body


def pod_from_api(raw: Mapping[str, Any]) -> PodInfo:
    try:
        status = str(raw["status"])
        if status not in _STATUSES:
            raise ValueError(status)
        runtime = raw.get("runtime") or {}
        env = raw.get("env") or {}
        gpu = raw.get("gpu") or {}
        return PodInfo(
            id=str(raw["id"]),
            name=str(raw.get("name") or ""),
            status=status,  # type: ignore[arg-type]
            cost_per_hr_micros=dollars_to_micros(raw.get("cost")),
            uptime_seconds=int(runtime.get("uptime") or 0) if isinstance(runtime, dict) else 0,
            gpu_type_id=str(gpu["id"]) if isinstance(gpu, dict) and gpu.get("id") else None,
            env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CloudTransientError(f"RunPod answered with a pod lorabot cannot read ({type(exc).__name__})") from None


def _offer(gpu: Mapping[str, Any], cloud: Cloud, data_center_id: str | None) -> GpuOffer:
    key = "secure" if cloud == "SECURE" else "community"
    try:
        offered = bool(gpu.get(key))
        level = gpu.get("availability") or "NONE"
        if data_center_id is not None:
            level = "NONE"
            for dc in gpu.get("dataCenters") or []:
                if dc.get("id") == data_center_id:
                    level = dc.get("availability") or "NONE"
        return GpuOffer(
            gpu_type_id=str(gpu["id"]),
            display_name=str(gpu.get("name") or gpu["id"]),
            memory_gb=int(gpu.get("memory") or 0),
            cloud=cloud,
            price_micros_per_hr=dollars_to_micros((gpu.get("price") or {}).get(key)) if offered else 0,
            stock=_STOCK.get(str(level)) if offered else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CloudTransientError(
            f"RunPod answered with a GPU type lorabot cannot read ({type(exc).__name__})"
        ) from None


def _volume(raw: Mapping[str, Any]) -> VolumeInfo:
    try:
        return VolumeInfo(str(raw["id"]), str(raw.get("name") or ""), int(raw["size"]), str(raw["dataCenter"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CloudTransientError(f"RunPod answered with a volume lorabot cannot read ({type(exc).__name__})") from None


def _billing(raw: Mapping[str, Any]) -> BillingRecord:
    try:
        return BillingRecord(
            pod_id=str(raw["podId"]),
            start=_timestamp(raw["startTime"]),
            end=_timestamp(raw["endTime"]),
            gpu_micros=dollars_to_micros(raw["gpuAmount"]),
            cpu_micros=dollars_to_micros(raw["cpuAmount"]),
            disk_micros=dollars_to_micros(raw["diskAmount"]),
            total_micros=dollars_to_micros(raw["totalAmount"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CloudTransientError(f"RunPod answered with a bill lorabot cannot read ({type(exc).__name__})") from None


def _timestamp(text: Any) -> dt.datetime:
    when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _object(raw: Any, operation: str) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise CloudTransientError(f"RunPod answered {operation} without an object")
    return raw


def _list(raw: Any, key: str, operation: str) -> list[Mapping[str, Any]]:
    items = _object(raw, operation).get(key)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise CloudTransientError(f"RunPod answered {operation} without a list of {key}")
    return items


def _segment(value: str) -> str:
    """An id as one path segment: RunPod's ids are alphanumeric; anything else is refused, never sent."""
    if not value or not all(ch.isalnum() or ch in "-_" for ch in value):
        raise CloudError(f"not a RunPod id: {value[:40]!r}")
    return value


def _error_for(status: int, raw: bytes, retry_after: str | None, *, operation: str, creating: bool) -> CloudError:
    detail, errors = _problem(raw)
    said = f"RunPod answered {operation} with {status}" + (f": {detail}" if detail else "")
    if status == 401:
        return CloudAuthError(f"RunPod refused the API key (HTTP 401) on {operation}")
    if status == 402:
        return InsufficientBalance(said)
    if status == 403:
        if creating:
            return CandidateForbidden(said)
        return CloudAuthError(f"the RunPod API key may not {operation} (HTTP 403)")
    if status == 404:
        return _NotFound(said)
    if status == 422:
        # Our bug: the body broke RunPod's contract. The list says where; it goes to the log, not to users.
        log.error("RunPod refused %s as invalid (422): %s", operation, "; ".join(errors) or detail)
        return CloudContractError(f"RunPod found lorabot's {operation} request invalid (HTTP 422)", errors)
    if status == 429:
        return RateLimited(said, _seconds(retry_after))
    if status >= 500:
        return CloudTransientError(f"RunPod failed {operation} with {status}")
    if status == 400 and creating:
        if any(marker in detail.lower() for marker in NO_STOCK_MARKERS):
            return NoCapacityError(said)
        return CandidateRefused(said)
    return CloudError(said)


def _problem(raw: bytes) -> tuple[str, list[str]]:
    """RunPod's ErrorResponse `{title, status, detail, errors?}`, shortened; anything else is no detail."""
    try:
        body = json.loads(raw)
    except ValueError:
        return "", []
    if not isinstance(body, dict):
        return "", []
    detail = body.get("detail") or body.get("title") or ""
    errors = body.get("errors") or []
    return str(detail)[:_DETAIL_MAX], [str(e)[:_DETAIL_MAX] for e in errors if isinstance(errors, list)][:20]


def _seconds(retry_after: str | None) -> float:
    try:
        return max(0.0, float(retry_after or "1"))
    except ValueError:
        return 1.0
