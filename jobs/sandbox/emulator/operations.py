"""Executes one GraphQL request against the emulated account and shapes the answer like RunPod's.

Order, as on a real GraphQL server: parse → validate the whole document → run each root field. Parse and
validation problems are HTTP 400 with no `data`; a root field that fails (no stock, unknown pod) is HTTP 200
with an `errors` entry whose `path` names that field and `data.<field> = null`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.sandbox.emulator import billing
from jobs.sandbox.emulator.catalog import COMMUNITY, SECURE, GpuType
from jobs.sandbox.emulator.graphql import Field, GraphQLInputError, GraphQLSyntaxError, Operation, parse
from jobs.sandbox.emulator.records import ApiError, Pod, PodState, Volume
from jobs.sandbox.emulator.schema import (
    OUTPUT_TYPES,
    ArgumentCoercer,
    check_variable_types,
    coerce_field_arguments,
    validate_selections,
)
from jobs.sandbox.emulator.state import MEMORY_GB_PER_GPU, VCPU_PER_GPU, Account

# Stock levels RunPod shows as `stockStatus` (emulator thresholds).
_STOCK_HIGH = 8
_STOCK_MEDIUM = 3


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    operation: str  # "mutation podTerminate" etc., for the request record
    errors: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # what the emulator doesn't model: test failures


def execute(account: Account, query: Any, variables: Any) -> Outcome:
    if not isinstance(query, str) or not query.strip():
        return _request_error("GraphQL operations must contain a non-empty `query`.", "?")
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        return _request_error("`variables` must be a JSON object.", "?")
    try:
        operation = parse(query)
    except GraphQLSyntaxError as exc:
        outcome = _request_error(
            str(exc), "?", code="GRAPHQL_PARSE_FAILED", locations=[{"line": exc.line, "column": exc.column}]
        )
        outcome.unsupported.append(str(exc))
        return outcome
    root_type = "Mutation" if operation.kind == "mutation" else "Query"
    label = f"{operation.kind} {' '.join(f.name for f in operation.selections)}"
    try:
        check_variable_types(operation.variable_types)
        validate_selections(root_type, operation.selections)
    except GraphQLInputError as exc:
        outcome = _request_error(str(exc), label, code="GRAPHQL_VALIDATION_FAILED")
        if str(exc).startswith("Cannot query field"):
            outcome.unsupported.append(str(exc))
        return outcome
    coercer = ArgumentCoercer(variables, operation.variable_types)
    try:
        # All arguments are checked before any field runs, so a bad input never leaves half a change behind.
        arguments = [coerce_field_arguments(root_type, f, coercer) for f in operation.selections]
    except GraphQLInputError as exc:
        return _request_error(str(exc), label, code="BAD_USER_INPUT")
    return _run(account, operation, root_type, arguments, coercer, label)


def _request_error(
    message: str, label: str, *, code: str = "BAD_REQUEST", locations: list[dict[str, int]] | None = None
) -> Outcome:
    error: dict[str, Any] = {"message": message, "extensions": {"code": code}}
    if locations:
        error["locations"] = locations
    return Outcome(400, {"errors": [error]}, label, errors=[message])


def _run(
    account: Account,
    operation: Operation,
    root_type: str,
    arguments: list[dict[str, Any]],
    coercer: ArgumentCoercer,
    label: str,
) -> Outcome:
    data: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    resolvers = _QUERY if root_type == "Query" else _MUTATION
    for selected, args in zip(operation.selections, arguments, strict=True):
        key = selected.response_key
        if selected.name == "__typename":
            data[key] = root_type
            continue
        try:
            value = resolvers[selected.name](account, args)
            data[key] = _project(value, selected.selections, OUTPUT_TYPES[root_type][selected.name].type, coercer)
        except ApiError as exc:
            data[key] = None
            errors.append(
                {
                    "message": exc.message,
                    "locations": [{"line": selected.line, "column": selected.column}],
                    "path": [key],
                    "extensions": {"code": exc.code},
                }
            )
    body: dict[str, Any] = {"data": data}
    if errors:
        body = {"errors": errors, "data": data}
    return Outcome(200, body, label, errors=[e["message"] for e in errors])


def _project(value: Any, selections: list[Field] | None, type_ref: str, coercer: ArgumentCoercer) -> Any:
    """Keep only the selected fields, in the order asked; a callable value is a field that takes arguments."""
    if value is None or selections is None:
        return value
    if isinstance(value, list):
        return [_project(item, selections, type_ref.strip("[]!"), coercer) for item in value]
    type_name = type_ref.strip("[]!")
    result: dict[str, Any] = {}
    for selected in selections:
        if selected.name == "__typename":
            result[selected.response_key] = type_name
            continue
        raw = value[selected.name]
        if callable(raw):
            raw = raw(coerce_field_arguments(type_name, selected, coercer))
        field_type = OUTPUT_TYPES[type_name][selected.name].type
        result[selected.response_key] = _project(raw, selected.selections, field_type, coercer)
    return result


# ----- views: RunPod's JSON for the account's objects -----


def _money(micros: int | None) -> float | None:
    return None if micros is None else billing.micros_to_float(micros)


def pod_view(account: Account, pod: Pod) -> dict[str, Any]:
    now = account.clock.now()
    running = pod.state == PodState.RUNNING  # runtime stays null while STARTING, like an image pull
    uptime = int(now - pod.run_started_at) if running and pod.run_started_at is not None else 0
    volume = account.volumes.get(pod.network_volume_id) if pod.network_volume_id else None
    desired = {
        PodState.STARTING: "RUNNING",
        PodState.RUNNING: "RUNNING",
        PodState.EXITED: "EXITED",
        PodState.ERROR: "EXITED",  # GraphQL has no ERROR: a crash-looped pod shows EXITED with no runtime
        PodState.STOPPED: "EXITED",
        PodState.TERMINATED: "TERMINATED",
    }[pod.state]
    data_center = account.catalog.data_centers[pod.data_center_id]
    return {
        "id": pod.id,
        "name": pod.name,
        "imageName": pod.image_name,
        "env": [f"{key}={value}" for key, value in pod.env.items()],
        "machineId": pod.machine_id,
        "machine": {
            "podHostId": pod.pod_host_id,
            "gpuDisplayName": pod.gpu_display_name,
            "gpuTypeId": pod.gpu_type_id,
            "dataCenterId": pod.data_center_id,
            "location": data_center.location,
        },
        "desiredStatus": desired,
        "lastStatusChange": account.last_status_text(pod),
        "costPerHr": _money(pod.cost_per_hr_micros),
        "adjustedCostPerHr": _money(pod.cost_per_hr_micros),
        "containerDiskInGb": pod.container_disk_gb,
        "dockerArgs": pod.docker_args,
        "dockerId": None,
        "gpuCount": pod.gpu_count,
        "memoryInGb": pod.memory_gb,
        "vcpuCount": pod.vcpu_count,
        "volumeInGb": pod.volume_in_gb,
        "volumeMountPath": pod.volume_mount_path,
        "networkVolume": volume_view(account, volume) if volume is not None else None,
        "podType": "INTERRUPTABLE" if pod.spot else "RESERVED",
        "interruptible": pod.spot,
        "port": None,
        "ports": pod.ports,
        "uptimeSeconds": uptime,
        "clusterIp": None,
        "runtime": _runtime_view(pod, uptime) if running else None,
    }


def _runtime_view(pod: Pod, uptime: int) -> dict[str, Any]:
    ports = []
    for item in (pod.ports or "").split(","):
        number, _, kind = item.strip().partition("/")
        if number.isdigit():
            port = int(number)
            ports.append(
                {"ip": "127.0.0.1", "isIpPublic": False, "privatePort": port, "publicPort": port, "type": kind or "tcp"}
            )
    return {
        "uptimeInSeconds": uptime,
        "ports": ports,
        "gpus": [
            {"id": f"GPU-{pod.id}-{i}", "gpuUtilPercent": 0, "memoryUtilPercent": 0} for i in range(pod.gpu_count)
        ],
        "container": {"cpuPercent": 0, "memoryPercent": 0},
    }


def volume_view(account: Account, volume: Volume) -> dict[str, Any]:
    dc = account.catalog.data_centers[volume.data_center_id]
    return {
        "id": volume.id,
        "name": volume.name,
        "size": volume.size_gb,
        "dataCenterId": volume.data_center_id,
        "dataCenter": {"id": dc.id, "name": dc.name, "location": dc.location},
    }


def _gpu_type_view(account: Account, gpu: GpuType) -> dict[str, Any]:
    def lowest_price(args: dict[str, Any]) -> dict[str, Any]:
        spec = args.get("input") or {}
        count = spec.get("gpuCount") or 1
        # RunPod's LowestPriceInput: `secureCloud: true` = secure only, `false` = community only, absent = both.
        secure = spec.get("secureCloud")
        cloud_type = spec.get("cloudType") or ("ALL" if secure is None else SECURE if secure else COMMUNITY)
        clouds = [COMMUNITY, SECURE] if cloud_type == "ALL" else [cloud_type]
        dc = spec.get("dataCenterId")
        in_stock = [
            c for c in clouds if gpu.price_micros(c) is not None and account.catalog.free_gpus(gpu.id, c, dc) >= count
        ]
        on_demand = [gpu.price_micros(c) for c in in_stock]
        spot = [gpu.price_micros(c, spot=True) for c in in_stock]
        free = sum(account.catalog.free_gpus(gpu.id, c, dc) for c in in_stock)
        status = (
            None if not in_stock else ("High" if free >= _STOCK_HIGH else "Medium" if free >= _STOCK_MEDIUM else "Low")
        )
        return {
            "gpuName": gpu.display_name,
            "gpuTypeId": gpu.id,
            "minimumBidPrice": _money(min((p for p in spot if p is not None), default=None)),
            "uninterruptablePrice": _money(min((p for p in on_demand if p is not None), default=None)),
            "minMemory": MEMORY_GB_PER_GPU * count,
            "minVcpu": VCPU_PER_GPU * count,
            "stockStatus": status,
            "countryCode": None,
        }

    return {
        "id": gpu.id,
        "displayName": gpu.display_name,
        "manufacturer": gpu.manufacturer,
        "memoryInGb": gpu.memory_gb,
        "cudaCores": gpu.cuda_cores,
        "maxGpuCount": gpu.max_gpu_count,
        "secureCloud": gpu.secure_micros is not None,
        "communityCloud": gpu.community_micros is not None,
        "securePrice": _money(gpu.secure_micros),
        "communityPrice": _money(gpu.community_micros),
        "secureSpotPrice": _money(gpu.secure_spot_micros),
        "communitySpotPrice": _money(gpu.community_spot_micros),
        "oneWeekPrice": _money(gpu.secure_micros),
        "oneMonthPrice": _money(gpu.secure_micros),
        "threeMonthPrice": _money(gpu.secure_micros),
        "lowestPrice": lowest_price,
    }


# ----- resolvers: root fields → account calls -----

Resolver = Callable[[Account, dict[str, Any]], Any]


def _myself(account: Account, args: dict[str, Any]) -> dict[str, Any]:
    with account.lock:
        pods = account.listed_pods()
        spend = sum(
            p.cost_per_hr_micros
            for p in pods
            if p.state in (PodState.STARTING, PodState.RUNNING, PodState.EXITED, PodState.ERROR)
        )
        return {
            "id": "user_emulated",
            "email": "lorabot@emulator.invalid",
            "authId": "auth0|emulated",
            "pubKey": "",
            "clientBalance": 100.0,
            "currentSpendPerHr": _money(spend),
            "pods": [pod_view(account, pod) for pod in pods],
            "networkVolumes": [volume_view(account, v) for v in account.live_volumes()],
        }


def _pod(account: Account, args: dict[str, Any]) -> dict[str, Any] | None:
    with account.lock:
        pod = account.get_pod(args["input"]["podId"])
        return None if pod is None else pod_view(account, pod)


def _gpu_types(account: Account, args: dict[str, Any]) -> list[dict[str, Any]]:
    spec = args.get("input") or {}
    wanted: set[str] | None = None
    if spec.get("id") is not None:
        wanted = {spec["id"]}
    if spec.get("ids") is not None:
        wanted = (wanted or set()) | set(spec["ids"])
    with account.lock:
        return [
            _gpu_type_view(account, gpu)
            for gpu in account.catalog.gpu_types.values()
            if wanted is None or gpu.id in wanted
        ]


def _data_centers(account: Account, args: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": dc.id, "name": dc.name, "location": dc.location} for dc in account.catalog.data_centers.values()]


def _deploy_on_demand(account: Account, args: dict[str, Any]) -> dict[str, Any]:
    if args.get("input") is None:
        raise ApiError("input is required.")
    with account.lock:
        return pod_view(account, account.deploy_gpu_pod(args["input"], spot=False))


def _rent_interruptable(account: Account, args: dict[str, Any]) -> dict[str, Any]:
    with account.lock:
        return pod_view(account, account.deploy_gpu_pod(args["input"], spot=True))


def _deploy_cpu(account: Account, args: dict[str, Any]) -> dict[str, Any]:
    with account.lock:
        return pod_view(account, account.deploy_cpu_pod(args["input"]))


def _stop(account: Account, args: dict[str, Any]) -> dict[str, Any]:
    with account.lock:
        return pod_view(account, account.stop_pod(args["input"]["podId"]))


def _resume(account: Account, args: dict[str, Any]) -> dict[str, Any]:
    with account.lock:
        return pod_view(account, account.resume_pod(args["input"]["podId"], args["input"].get("gpuCount")))


def _bid_resume(account: Account, args: dict[str, Any]) -> dict[str, Any]:
    spec = args["input"]
    with account.lock:
        return pod_view(account, account.resume_pod(spec["podId"], spec.get("gpuCount"), spec["bidPerGpu"]))


def _terminate(account: Account, args: dict[str, Any]) -> None:
    account.terminate_pod(args["input"]["podId"])


def _create_volume(account: Account, args: dict[str, Any]) -> dict[str, Any]:
    spec = args.get("input")
    if spec is None:
        raise ApiError("input is required.")
    with account.lock:
        return volume_view(account, account.create_volume(spec["name"], spec["size"], spec["dataCenterId"]))


def _delete_volume(account: Account, args: dict[str, Any]) -> None:
    spec = args.get("input")
    if spec is None:
        raise ApiError("input is required.")
    account.delete_volume(spec["id"])


_QUERY: dict[str, Resolver] = {
    "myself": _myself,
    "pod": _pod,
    "gpuTypes": _gpu_types,
    "dataCenters": _data_centers,
}
_MUTATION: dict[str, Resolver] = {
    "podFindAndDeployOnDemand": _deploy_on_demand,
    "podRentInterruptable": _rent_interruptable,
    "deployCpuPod": _deploy_cpu,
    "podStop": _stop,
    "podResume": _resume,
    "podBidResume": _bid_resume,
    "podTerminate": _terminate,
    "createNetworkVolume": _create_volume,
    "deleteNetworkVolume": _delete_volume,
}
