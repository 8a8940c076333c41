"""RunPod's REST API v2 over the emulated account: the operations lorabot uses, held to RunPod's contract.

Every request passes the shared machinery first (injected faults, rate limits, `Authorization: Bearer`), then
the contract: a body or query string that breaks it is a 422 with an `errors` list, like RunPod. A
contract-valid request the account refuses is RunPod's 400/402/403/404/409. Every answer is checked against
the contract before it leaves; a violation is the emulator's bug and lands in `server.failures`, which the
test world turns into a failed test.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from jobs.sandbox.emulator import billing
from jobs.sandbox.emulator.catalog import CLOUDS, COMMUNITY, CPU_VCPU_COUNTS, SECURE, CpuFlavor, GpuType
from jobs.sandbox.emulator.contract import runpod_contract
from jobs.sandbox.emulator.pod_billing import BillingQueryError, list_pod_billing, resolve_window
from jobs.sandbox.emulator.records import ApiError, Pod, PodState, Volume
from jobs.sandbox.emulator.state import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    HOST_CUDA_VERSION,
    INSUFFICIENT_CAPACITY,
    NOT_FOUND,
    PAYMENT_REQUIRED,
    Account,
)

if TYPE_CHECKING:
    from jobs.sandbox.emulator.server import EmulatorServer

log = logging.getLogger(__name__)

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
# Every failure the REST front records starts with REST_FAILURE, so the test world can fail on them.
REST_FAILURE = "REST v2"
CONTRACT_VIOLATION = f"{REST_FAILURE} response violates RunPod's contract"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
STATUS_OF_CODE = {
    BAD_REQUEST: 400,
    INSUFFICIENT_CAPACITY: 400,  # RunPod: no capacity has no code of its own, only the detail text
    PAYMENT_REQUIRED: 402,
    FORBIDDEN: 403,
    NOT_FOUND: 404,
    CONFLICT: 409,
}
# Emulator thresholds for RunPod's availability levels, in free units.
_HIGH = 8
_MEDIUM = 3
_LEVELS = ("NONE", "LOW", "MEDIUM", "HIGH")
ACTIONS = {
    "PROVISIONING": ["stop", "terminate"],
    "STARTING": ["stop", "terminate"],
    "RUNNING": ["stop", "restart", "terminate"],
    "EXITED": ["start", "terminate"],
    "ERROR": ["start", "terminate"],
    "TERMINATED": [],
}
_REGIONS = {"EU": "EUROPE", "US": "NORTH_AMERICA", "CA": "NORTH_AMERICA", "AP": "ASIA", "OC": "OCEANIA"}
_CPU_KINDS = {"c": "Compute-Optimized", "g": "General Purpose", "m": "Memory-Optimized"}


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str | None:
        if self.body is None:
            return None
        return PROBLEM_JSON if self.status >= 400 else JSON


def problem(status: int, detail: str, errors: list[str] | None = None, headers: dict[str, str] | None = None) -> Reply:
    body: dict[str, Any] = {"title": TITLES.get(status, "Error"), "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return Reply(status, body, headers or {})


@dataclass(frozen=True)
class Call:
    path: dict[str, str]
    query: dict[str, Any]
    body: Any


Operation = Callable[[Account, Call], Reply]


class RestFront:
    """The `/v2/...` routes of one `EmulatorServer`."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.contract = runpod_contract()

    def routes(self) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        made = []
        for operation_id, operation in OPERATIONS.items():
            spec = self.contract.operation(operation_id)
            made.append((spec["method"], spec["path"], self._endpoint(operation_id, operation)))
        return made

    def _endpoint(
        self, operation_id: str, operation: Operation
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(operation_id, operation, request)

        return handle

    async def _handle(self, operation_id: str, operation: Operation, request: web.Request) -> web.StreamResponse:
        server = self.server
        fault = server.take_fault(operation_id)
        if fault is not None:
            return await server.inject(request, fault, rest=True, operation=operation_id)
        raw = await request.read()
        reply, errors = self._reply(operation_id, operation, request, raw)
        for violation in self.contract.check_response(operation_id, reply.status, reply.body, reply.content_type):
            server.failures.append(f"{CONTRACT_VIOLATION}: {operation_id} {reply.status}: {violation}")
        server.record(operation_id, reply.status, errors)
        if reply.body is None:
            return web.Response(status=reply.status, headers=reply.headers)
        return web.Response(
            status=reply.status,
            headers=reply.headers,
            text=json.dumps(reply.body),
            content_type=reply.content_type,
        )

    def _reply(
        self, operation_id: str, operation: Operation, request: web.Request, raw: bytes
    ) -> tuple[Reply, list[str]]:
        server = self.server
        retry_after = server.take_rate_limit()
        if retry_after is not None:
            reply = problem(429, "Rate limit exceeded.", headers={"Retry-After": str(retry_after)})
            return reply, [reply.body["detail"]]
        if not server.bearer_authorized(request):
            reply = problem(401, "Missing or invalid API key.")
            return reply, ["unauthorized"]
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                return problem(400, "The request body is not valid JSON."), ["body is not JSON"]
        errors = self.contract.check_request_body(operation_id, body)
        query, query_errors, unknown = self.contract.parse_query(operation_id, request.query)
        for name in unknown:
            # RunPod ignores it; a client sending it expects an effect it won't get.
            server.failures.append(
                f"{REST_FAILURE} unsupported request: {operation_id} has no query parameter {name!r}"
            )
        errors += query_errors
        if errors:
            return problem(422, "The request does not match the API contract.", errors=errors), errors
        call = Call(dict(request.match_info), query, body)
        try:
            with server.account.lock:
                reply = operation(server.account, call)
        except ApiError as exc:
            reply = problem(STATUS_OF_CODE.get(exc.code, 400), exc.message)
        except BillingQueryError as exc:
            reply = problem(400, str(exc))
        except Exception:
            log.exception("emulator failed to execute %s", operation_id)
            server.failures.append(f"{REST_FAILURE} emulator raised while executing {operation_id} (see log)")
            reply = problem(500, "Something went wrong. Please try again later or contact support.")
        return reply, [reply.body["detail"]] if reply.status >= 400 else []


# ----- views -----


def _iso(account: Account, sim_seconds: float) -> str:
    return account.clock.to_datetime(sim_seconds).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pod_status(account: Account, pod: Pod) -> str:
    now = account.clock.now()
    if pod.state == PodState.STARTING:
        # Emulator figure: the first half of the start-up delay is the image pull (PROVISIONING), the rest the
        # container start; a pod that never starts stays in its pull.
        if pod.never_start or pod.start_due is None:
            return "PROVISIONING"
        return "PROVISIONING" if now < (pod.last_status_change + pod.start_due) / 2 else "STARTING"
    if pod.state == PodState.RUNNING:
        # Between a container's exit and the platform's restart of it, nothing runs yet.
        return "RUNNING" if pod.run_started_at is not None else "STARTING"
    if pod.state in (PodState.EXITED, PodState.STOPPED):
        return "EXITED"
    return pod.state.value  # ERROR, TERMINATED


def _runtime(account: Account, pod: Pod) -> dict[str, Any]:
    assert pod.run_started_at is not None
    ports = []
    for item in (pod.ports or "").split(","):
        number, _, kind = item.strip().partition("/")
        if number.isdigit():
            ports.append({"private": int(number), "public": int(number), "type": kind or "tcp", "ip": "127.0.0.1"})
    return {
        "uptime": int(account.clock.now() - pod.run_started_at),
        "gpus": [{"util": 0, "memoryUtil": 0} for _ in range(pod.gpu_count)],
        "cpu": {"util": 0},
        "memory": {"util": 0},
        "ports": ports,
    }


def pod_view(account: Account, pod: Pod) -> dict[str, Any]:
    status = pod_status(account, pod)
    billing_open = bool(pod.billing) and pod.billing[-1].end is None
    mounts: dict[str, Any] = {}
    if pod.network_volume_id is not None:
        mounts["network"] = [{"volumeId": pod.network_volume_id, "path": pod.volume_mount_path}]
    elif pod.volume_in_gb:
        mounts["persistent"] = {"size": pod.volume_in_gb, "path": pod.volume_mount_path}
    view: dict[str, Any] = {
        "id": pod.id,
        "name": pod.name,
        "status": status,
        "actions": ACTIONS[status],
        "image": pod.image_name,
        "args": pod.docker_args,
        "disk": pod.container_disk_gb,
        "mounts": mounts,
        "ports": [item.strip() for item in (pod.ports or "").split(",") if item.strip()],
        "env": dict(pod.env),
        "registry": None,
        "cloud": pod.cloud,
        "dataCenterId": pod.data_center_id,
        "cudaVersion": HOST_CUDA_VERSION if pod.kind == "gpu" else None,
        "ssh": {"proxy": None, "direct": None},
        "template": None,
        "cost": billing.micros_to_float(pod.cost_per_hr_micros) if billing_open else 0.0,
        "locked": False,
        "globalNetworking": {"enabled": False},
        "runtime": _runtime(account, pod) if status == "RUNNING" else None,
        "createdAt": _iso(account, pod.created_at),
        "startedAt": _iso(account, pod.started_at) if pod.started_at is not None else None,
    }
    if pod.kind == "gpu":
        view["gpu"] = {"id": pod.gpu_type_id, "count": pod.gpu_count}
    else:
        assert pod.cpu_instance_id is not None
        view["cpu"] = {"id": pod.cpu_instance_id.split("-")[0], "vcpuCount": pod.vcpu_count, "memory": pod.memory_gb}
    return view


def volume_view(volume: Volume) -> dict[str, Any]:
    return {
        "id": volume.id,
        "name": volume.name,
        "size": volume.size_gb,
        "dataCenter": volume.data_center_id,
        "type": "STANDARD",
    }


def _level(free: int, needed: int = 1) -> str:
    if free < needed or free <= 0:
        return "NONE"
    return "HIGH" if free >= _HIGH else "MEDIUM" if free >= _MEDIUM else "LOW"


def _best(levels: list[str]) -> str:
    return max(levels, key=_LEVELS.index, default="NONE")


def _country(dc_id: str) -> str:
    parts = dc_id.split("-")
    return parts[1] if len(parts) > 1 else ""


def _region(dc_id: str) -> str:
    return _REGIONS.get(dc_id.split("-")[0], "UNKNOWN")


def _availability_args(query: dict[str, Any], extra: tuple[str, ...]) -> bool:
    """Whether availability was asked for; the filters that only make sense with it are 400 without it."""
    include = "AVAILABILITY" in query.get("include", [])
    if include and not query.get("product"):
        raise ApiError("include=AVAILABILITY requires product.")
    for name in ("product", *extra):
        if name in query and not include:
            raise ApiError(f"{name} is valid only with include=AVAILABILITY.")
    return include and "POD" in query["product"]


def _gpu_view(account: Account, gpu: GpuType, query: dict[str, Any], with_availability: bool) -> dict[str, Any]:
    catalog = account.catalog
    view: dict[str, Any] = {
        "id": gpu.id,
        "name": gpu.display_name,
        "pool": None,
        "manufacturer": gpu.manufacturer.upper() if gpu.manufacturer.upper() in ("NVIDIA", "AMD") else "UNKNOWN",
        "memory": gpu.memory_gb,
        "secure": gpu.secure_micros is not None,
        "community": gpu.community_micros is not None,
        # A cloud that doesn't offer the GPU shows price 0 and `secure`/`community` false.
        "price": {
            "secure": billing.micros_to_float(gpu.secure_micros or 0),
            "community": billing.micros_to_float(gpu.community_micros or 0),
        },
        "maxCount": {
            "secure": gpu.max_gpu_count if gpu.secure_micros is not None else 0,
            "community": gpu.max_gpu_count if gpu.community_micros is not None else 0,
        },
    }
    if not with_availability:
        return view
    cloud = query.get("cloud", SECURE)
    count = query.get("count", 1)
    cuda_ok = HOST_CUDA_VERSION in query.get("cudaVersions", [HOST_CUDA_VERSION])
    if "minCudaVersion" in query:
        cuda_ok = cuda_ok and _cuda_tuple(query["minCudaVersion"]) <= _cuda_tuple(HOST_CUDA_VERSION)
    countries = query.get("countryCodes")
    per_dc = []
    for dc in catalog.data_centers.values():
        if (gpu.id, cloud, dc.id) not in catalog.gpu_stock or (countries and _country(dc.id) not in countries):
            continue
        level = _level(catalog.gpu_stock[(gpu.id, cloud, dc.id)], count) if cuda_ok else "NONE"
        per_dc.append({"id": dc.id, "name": dc.name, "availability": level})
    view["availability"] = _best([entry["availability"] for entry in per_dc])
    # Only the data centers that can place this configuration now; none at all when no data center can.
    placeable = [entry for entry in per_dc if entry["availability"] != "NONE"]
    if placeable:
        view["dataCenters"] = placeable
    return view


def _cuda_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _cpu_view(account: Account, flavor: CpuFlavor, with_availability: bool) -> dict[str, Any]:
    price = billing.micros_to_float(flavor.micros_per_vcpu_hour)
    view: dict[str, Any] = {
        "id": flavor.id,
        "name": f"{_CPU_KINDS.get(flavor.id[-1], 'CPU')} ({flavor.id})",
        "group": flavor.id[:-1],
        "vcpu": {"min": min(CPU_VCPU_COUNTS), "max": max(CPU_VCPU_COUNTS)},
        "ramGbPerVcpu": float(flavor.memory_gb_per_vcpu),
        # The emulator sells no serverless; the field is required, so it repeats the pod price.
        "price": {"securePerVcpu": price, "serverlessPerVcpu": price},
    }
    if with_availability:
        per_dc = [
            {"id": dc.id, "name": dc.name, "availability": _level(account.catalog.cpu_stock.get(dc.id, 0))}
            for dc in account.catalog.data_centers.values()
        ]
        view["availability"] = _best([entry["availability"] for entry in per_dc])
        placeable = [entry for entry in per_dc if entry["availability"] != "NONE"]
        if placeable:
            view["dataCenters"] = placeable
    return view


# ----- operations -----


def _create_pod(account: Account, call: Call) -> Reply:
    return Reply(201, pod_view(account, account.create_pod_v2(call.body)))


def _live_pod(account: Account, pod_id: str) -> Pod:
    pod = account.get_pod(pod_id)
    if pod is None:
        raise ApiError(f"Pod {pod_id} not found.", code=NOT_FOUND)
    return pod


def _get_pod(account: Account, call: Call) -> Reply:
    return Reply(200, pod_view(account, _live_pod(account, call.path["id"])))


def _list_pods(account: Account, call: Call) -> Reply:
    return Reply(200, {"pods": [pod_view(account, pod) for pod in account.listed_pods()]})


def _delete_pod(account: Account, call: Call) -> Reply:
    _live_pod(account, call.path["id"])
    account.terminate_pod(call.path["id"])
    return Reply(204)


def _pod_action(account: Account, call: Call) -> Reply:
    pod = _live_pod(account, call.path["id"])
    action = call.body["action"]
    status = pod_status(account, pod)
    if action not in ACTIONS[status]:
        raise ApiError(f"Cannot {action} a pod that is {status}.", code=CONFLICT)
    if action == "terminate":
        account.terminate_pod(pod.id)
        return Reply(204)
    if action == "stop":
        pod = account.stop_pod(pod.id)
    elif action == "start":
        pod = account.start_pod_v2(pod.id)
    else:
        pod = account.restart_pod(pod.id)
    return Reply(200, pod_view(account, pod))


def _create_volume(account: Account, call: Call) -> Reply:
    body = call.body
    if body.get("type", "STANDARD") != "STANDARD":
        raise ApiError(f"Data center {body['dataCenter']} offers no {body['type']} network volumes.")
    return Reply(201, volume_view(account.create_volume(body["name"], body["size"], body["dataCenter"])))


def _list_volumes(account: Account, call: Call) -> Reply:
    return Reply(200, {"networkVolumes": [volume_view(volume) for volume in account.live_volumes()]})


def _get_volume(account: Account, call: Call) -> Reply:
    volume = account.volumes.get(call.path["id"])
    if volume is None or volume.deleted_at is not None:
        raise ApiError(f"Network volume {call.path['id']} not found.", code=NOT_FOUND)
    return Reply(200, volume_view(volume))


def _update_volume(account: Account, call: Call) -> Reply:
    volume_id = call.path["id"]
    if "size" in call.body:
        account.resize_volume(volume_id, call.body["size"])
    volume = account.volumes.get(volume_id)
    if volume is None or volume.deleted_at is not None:
        raise ApiError(f"Network volume {volume_id} not found.", code=NOT_FOUND)
    if "name" in call.body:
        volume.name = call.body["name"]
    return Reply(200, volume_view(volume))


def _list_gpus(account: Account, call: Call) -> Reply:
    query = call.query
    extra = ("count", "cloud", "countryCodes", "cudaVersions", "minCudaVersion")
    with_availability = _availability_args(query, extra)
    if "cudaVersions" in query and "minCudaVersion" in query:
        raise ApiError("cudaVersions and minCudaVersion cannot be combined.")
    if query.get("cloud", SECURE) not in CLOUDS:
        raise ApiError(f"cloud must be one of {', '.join(CLOUDS)}.")
    gpus = [_gpu_view(account, gpu, query, with_availability) for gpu in account.catalog.gpu_types.values()]
    countries = query.get("countryCodes")
    if countries:
        # Narrowed to GPU types deployable in those countries.
        gpus = [gpu for gpu in gpus if gpu.get("dataCenters")]
    return Reply(200, {"gpus": gpus})


def _list_cpus(account: Account, call: Call) -> Reply:
    with_availability = _availability_args(call.query, ("vcpuCount",))
    vcpu = call.query.get("vcpuCount")
    if vcpu is not None and vcpu & (vcpu - 1):
        raise ApiError(f"vcpuCount must be a power of two, got {vcpu}.")
    flavors = account.catalog.cpu_flavors.values()
    return Reply(200, {"cpus": [_cpu_view(account, flavor, with_availability) for flavor in flavors]})


def _list_data_centers(account: Account, call: Call) -> Reply:
    query = call.query
    include = query.get("include", [])
    catalog = account.catalog
    found = []
    for dc in catalog.data_centers.values():
        view: dict[str, Any] = {
            "id": dc.id,
            "name": dc.name,
            "region": _region(dc.id),
            "networkVolumeTypes": ["STANDARD"],
            "compliance": [],
            "globalNetwork": False,
        }
        if "regions" in query and view["region"] not in query["regions"]:
            continue
        if "networkVolumeTypes" in query and not set(query["networkVolumeTypes"]) & {"STANDARD"}:
            continue
        if query.get("compliance"):
            continue  # no emulated data center holds a certification
        if query.get("globalNetwork"):
            continue
        if "GPU_AVAILABILITY" in include:
            offered = []
            for gpu in catalog.gpu_types.values():
                stock = [
                    catalog.gpu_stock[(gpu.id, c, dc.id)]
                    for c in (SECURE, COMMUNITY)
                    if (gpu.id, c, dc.id) in catalog.gpu_stock
                ]
                if stock:
                    offered.append({"id": gpu.id, "name": gpu.display_name, "availability": _level(max(stock))})
            if offered:
                view["gpuAvailability"] = offered
        if "CPU_AVAILABILITY" in include:
            level = _level(catalog.cpu_stock.get(dc.id, 0))
            view["cpuAvailability"] = [
                {"id": flavor.id, "name": flavor.id, "availability": level} for flavor in catalog.cpu_flavors.values()
            ]
        found.append(view)
    return Reply(200, {"dataCenters": found})


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BillingQueryError(f"{text!r} is not an RFC 3339 date-time.") from None
    if moment.tzinfo is None:
        raise BillingQueryError(f"{text!r} has no UTC offset.")
    return moment


def _list_pod_billing(account: Account, call: Call) -> Reply:
    query = call.query
    window = resolve_window(
        account.clock.utcnow(),
        bucket_size=query.get("bucketSize"),
        start=_parse_time(query.get("startTime")),
        end=_parse_time(query.get("endTime")),
        last_n=query.get("lastN"),
        pod_id=query.get("podId"),
    )
    return Reply(200, list_pod_billing(account, window))


OPERATIONS: dict[str, Operation] = {
    "createPod": _create_pod,
    "getPod": _get_pod,
    "listPods": _list_pods,
    "deletePod": _delete_pod,
    "podAction": _pod_action,
    "createNetworkVolume": _create_volume,
    "listNetworkVolumes": _list_volumes,
    "getNetworkVolume": _get_volume,
    "updateNetworkVolume": _update_volume,
    "listGpuTypes": _list_gpus,
    "listCpuTypes": _list_cpus,
    "listDataCenters": _list_data_centers,
    "listPodBilling": _list_pod_billing,
}
