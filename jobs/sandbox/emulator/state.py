"""The emulated RunPod account: pods, Network Volumes, stock and billing, on a simulated clock.

Everything here is synchronous and guarded by one lock, because two threads touch it: the aiohttp server's
(API requests and the ticker that starts and reaps pods) and the test's (knobs and records). Errors a client
could get from RunPod are `ApiError`s carrying RunPod's own message.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from jobs.sandbox.emulator import billing
from jobs.sandbox.emulator.catalog import (
    COMMUNITY,
    CPU_VCPU_COUNTS,
    DEFAULT_CPU_INSTANCE,
    SECURE,
    Catalog,
    CatalogError,
)
from jobs.sandbox.emulator.clock import SimClock
from jobs.sandbox.emulator.pods import PodProcess, substitute_mount, write_nvidia_smi
from jobs.sandbox.emulator.records import (
    ApiError,
    BillingInterval,
    Pod,
    PodReport,
    PodState,
    Volume,
    VolumeReport,
)

NO_STOCK = (
    "There are no longer any instances available with the requested specifications. Please refresh and try again."
)
NO_FREE_GPUS_ON_HOST = "There are not enough free GPUs on the host machine to start this pod."
DEFAULT_MOUNT_PATH = "/workspace"
NETWORK_VOLUME_SECURE_ONLY = "Network volumes are only available for Secure Cloud pods."
INSUFFICIENT_BALANCE = "Insufficient balance"
DEFAULT_CONTAINER_DISK_GB = 10
# RunPod caps a CPU pod's container disk per vCPU ("Container Disk must be less than or equal to 20" at 2 vCPU).
CPU_DISK_GB_PER_VCPU = 10
# The CUDA version every emulated GPU host reports (one version keeps placement simple).
HOST_CUDA_VERSION = "12.8"
# ApiError codes the REST front turns into HTTP statuses (GraphQL shows them as `extensions.code`).
BAD_REQUEST = "BAD_USER_INPUT"
INSUFFICIENT_CAPACITY = "INSUFFICIENT_CAPACITY"
PAYMENT_REQUIRED = "INSUFFICIENT_BALANCE"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
CONFLICT = "CONFLICT"
# Emulator figures for what a GPU brings along (RunPod gives each GPU a share of the host's vCPUs and RAM).
VCPU_PER_GPU = 8
MEMORY_GB_PER_GPU = 32
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _new_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


class Account:
    """The emulated account. Public methods take the lock; `_`-methods expect it held."""

    def __init__(
        self,
        clock: SimClock,
        root: Path,
        catalog: Catalog | None = None,
        kill_grace_s: float = 10.0,
        startup_delay_s: dict[str, float] | None = None,
    ) -> None:
        self.clock = clock
        self.root = root
        self.catalog = catalog or Catalog()
        self.kill_grace_s = kill_grace_s
        self.startup_delay_s = {"gpu": 120.0, "cpu": 30.0, **(startup_delay_s or {})}
        # RunPod restarts a container whose process ended (sim seconds): the first back-off, doubled for each
        # run in a row that ended within `crash_window_s` of its start; after `crash_restarts` such restarts the
        # next quick exit puts the pod in ERROR.
        self.restart_backoff_s = 10.0
        self.crash_window_s = 60.0
        self.crash_restarts = 5
        # Extra environment for GPU pods' processes, set by a test world (its network guard): RunPod has no such
        # thing, so it stays empty outside tests.
        self.gpu_process_env: dict[str, str] = {}
        self.lock = threading.RLock()
        self.pods: dict[str, Pod] = {}
        self.volumes: dict[str, Volume] = {}
        self._never_start_next = 0
        # REST v2 knobs: the account's credit, pools it may not rent from, pods whose host went away.
        self.balance_micros = billing.dollars_to_micros("100")
        self.forbidden: set[tuple[str, str]] = set()  # (GPU id or CPU flavor id, cloud)
        self.unplaceable_pools: set[tuple[str, str]] = set()  # shown in stock, refused at create
        self.lost_hosts: set[str] = set()
        (root / "pods").mkdir(parents=True, exist_ok=True)
        (root / "volumes").mkdir(parents=True, exist_ok=True)

    # ----- knobs -----
    def never_start_next_pod(self, count: int = 1) -> None:
        with self.lock:
            self._never_start_next += count

    def set_restart_policy(
        self, *, backoff_s: float | None = None, crash_window_s: float | None = None, crash_restarts: int | None = None
    ) -> None:
        with self.lock:
            if backoff_s is not None:
                self.restart_backoff_s = backoff_s
            if crash_window_s is not None:
                self.crash_window_s = crash_window_s
            if crash_restarts is not None:
                self.crash_restarts = crash_restarts

    def set_balance(self, dollars: float) -> None:
        with self.lock:
            self.balance_micros = billing.dollars_to_micros(str(dollars))

    def unplaceable(self, resource_id: str, cloud: str) -> None:
        with self.lock:
            self.unplaceable_pools.add((resource_id, cloud))

    def forbid(self, resource_id: str, cloud: str) -> None:
        """Creates for this GPU type (or CPU flavor) in `cloud` are refused as if the account lacked access."""
        with self.lock:
            self.forbidden.add((resource_id, cloud))

    def lose_host(self, pod_id: str) -> None:
        """The pod's host vanishes: its container is SIGKILLed at once, billing stops, the pod shows ERROR."""
        with self.lock:
            self._tick()
            pod = self._live_pod(pod_id, "lose the host of")
            # The GPUs went away with the host: nothing goes back to stock. SIGKILL comes first: a vanished
            # host gives its container no SIGTERM and no grace.
            pod.holds_stock = False
            if pod.process is not None:
                pod.process.kill()
            self._halt(pod, PodState.ERROR, "host lost")
            self.lost_hosts.add(pod.id)
            self._settle(pod)

    def set_startup_delay(self, kind: str, seconds: float) -> None:
        if kind not in ("gpu", "cpu"):
            raise ValueError(f"kind must be 'gpu' or 'cpu', got {kind!r}")
        with self.lock:
            self.startup_delay_s[kind] = seconds

    # ----- volumes -----
    def create_volume(self, name: str, size_gb: int, data_center_id: str) -> Volume:
        with self.lock:
            if not name:
                raise ApiError("Network volume name must not be empty.")
            if not 1 <= size_gb <= 4096:
                raise ApiError(f"Network volume size must be between 1 and 4096 GB, got {size_gb}.")
            try:
                self.catalog.data_center(data_center_id)
            except CatalogError as exc:
                raise ApiError(str(exc)) from None
            volume_id = _new_id(10)
            path = self.root / "volumes" / volume_id
            path.mkdir()
            volume = Volume(volume_id, name, size_gb, data_center_id, path, self.clock.now())
            self.volumes[volume_id] = volume
            return volume

    def resize_volume(self, volume_id: str, size_gb: int) -> Volume:
        """updateNetworkVolume's size: RunPod grows a volume in place (files kept) and refuses to shrink it."""
        with self.lock:
            volume = self.volumes.get(volume_id)
            if volume is None or volume.deleted_at is not None:
                raise ApiError(f"Network volume {volume_id} not found.", code=NOT_FOUND)
            if size_gb < volume.size_gb:
                raise ApiError(
                    f"Network volume size can only be increased: {volume_id} has {volume.size_gb} GB, got {size_gb}."
                )
            if size_gb > volume.size_gb:
                if volume.created_size_gb is None:
                    volume.created_size_gb = volume.size_gb
                volume.resizes.append((self.clock.now(), size_gb))
                volume.size_gb = size_gb
            return volume

    def delete_volume(self, volume_id: str) -> None:
        with self.lock:
            volume = self.volumes.get(volume_id)
            if volume is None or volume.deleted_at is not None:
                raise ApiError(f"Tried to delete nonexistent network volume {volume_id}")
            users = [
                p.id for p in self.pods.values() if p.network_volume_id == volume_id and p.state != PodState.TERMINATED
            ]
            if users:
                raise ApiError(
                    f"Network volume {volume_id} is attached to pods {', '.join(users)}; "
                    "terminate them before deleting it."
                )
            volume.deleted_at = self.clock.now()
            shutil.rmtree(volume.path, ignore_errors=True)

    def live_volumes(self) -> list[Volume]:
        with self.lock:
            return [v for v in self.volumes.values() if v.deleted_at is None]

    # ----- pods: create -----
    def deploy_gpu_pod(self, spec: dict[str, Any], *, spot: bool) -> Pod:
        with self.lock:
            self._tick()
            try:
                gpu = self.catalog.gpu(spec["gpuTypeId"])
            except CatalogError as exc:
                raise ApiError(str(exc)) from None
            gpu_count = spec.get("gpuCount") or 1
            if not 1 <= gpu_count <= gpu.max_gpu_count:
                raise ApiError(f"gpuCount must be between 1 and {gpu.max_gpu_count} for {gpu.id}.")
            clouds = self._clouds(spec.get("cloudType"))
            if spec.get("networkVolumeId") is not None:
                clouds = [cloud for cloud in clouds if cloud == SECURE]
                if not clouds:
                    raise ApiError(NETWORK_VOLUME_SECURE_ONLY)
            data_centers = self._data_centers(spec)
            bid_micros = None
            if spot:
                bid = spec["bidPerGpu"]
                if bid <= 0:
                    raise ApiError("bidPerGpu must be greater than 0.")
                bid_micros = billing.dollars_to_micros(str(bid))
            offers = []
            for cloud in clouds:
                price = gpu.price_micros(cloud, spot=spot)
                if price is None:
                    continue
                for dc in data_centers:
                    if self.catalog.gpu_stock.get((gpu.id, cloud, dc), 0) >= gpu_count:
                        offers.append((price, cloud, dc))
            if not offers:
                raise ApiError(NO_STOCK, code="INSUFFICIENT_CAPACITY")
            offers.sort(key=lambda offer: offer[0])
            if spot:
                assert bid_micros is not None
                affordable = [offer for offer in offers if bid_micros >= offer[0]]
                if not affordable:
                    minimum = billing.micros_to_float(offers[0][0])
                    raise ApiError(
                        f"Your bid price is lower than the minimum bid of ${minimum:.3f}/hr per GPU for {gpu.id}."
                    )
                price, cloud, dc = affordable[0]
                cost = bid_micros * gpu_count  # a spot pod pays its bid
            else:
                price, cloud, dc = offers[0]
                cost = price * gpu_count
            self.catalog.gpu_stock[(gpu.id, cloud, dc)] -= gpu_count
            return self._new_pod(
                spec,
                kind="gpu",
                cloud=cloud,
                data_center_id=dc,
                gpu_type_id=gpu.id,
                gpu_display_name=gpu.display_name,
                gpu_count=gpu_count,
                cpu_instance_id=None,
                vcpu=max(spec.get("minVcpuCount") or 0, VCPU_PER_GPU * gpu_count),
                memory_gb=max(spec.get("minMemoryInGb") or 0, MEMORY_GB_PER_GPU * gpu_count),
                cost=cost,
                spot=spot,
                bid_micros=bid_micros,
            )

    def deploy_cpu_pod(self, spec: dict[str, Any]) -> Pod:
        with self.lock:
            self._tick()
            try:
                instance = self.catalog.cpu_instance(spec.get("instanceId") or DEFAULT_CPU_INSTANCE)
            except CatalogError as exc:
                raise ApiError(str(exc)) from None
            # CPU pods run in Secure Cloud only; asking for COMMUNITY finds nothing, like an empty market.
            if SECURE not in self._clouds(spec.get("cloudType")):
                raise ApiError(NO_STOCK, code="INSUFFICIENT_CAPACITY")
            available = [dc for dc in self._data_centers(spec) if self.catalog.cpu_stock.get(dc, 0) > 0]
            if not available:
                raise ApiError(NO_STOCK, code="INSUFFICIENT_CAPACITY")
            dc = available[0]
            self.catalog.cpu_stock[dc] -= 1
            return self._new_pod(
                spec,
                kind="cpu",
                cloud=SECURE,
                data_center_id=dc,
                gpu_type_id=None,
                gpu_display_name=None,
                gpu_count=0,
                cpu_instance_id=instance.id,
                vcpu=instance.vcpu,
                memory_gb=instance.memory_gb,
                cost=instance.cost_per_hr_micros,
                spot=False,
                bid_micros=None,
            )

    # ----- pods: create and act through REST v2 -----
    def create_pod_v2(self, body: dict[str, Any]) -> Pod:
        """A pod from a contract-valid `POST /v2/pods` body; refusals are `ApiError`s whose code the REST front
        maps to 400/402/403. It places the one GPU type asked for, or none: no fallback, like RunPod."""
        with self.lock:
            self._tick()
            gpu_spec, cpu_spec = body.get("gpu"), body.get("cpu")
            if (gpu_spec is None) == (cpu_spec is None):
                raise ApiError("Exactly one of gpu or cpu must be set.")
            if body.get("templateId") is not None:
                raise ApiError(f"Template {body['templateId']} not found.")
            if body.get("globalNetworking"):
                raise ApiError("Global networking is not available in the requested data centers.")
            cloud = body.get("cloud") or SECURE
            wanted = list(body.get("dataCenterIds") or self.catalog.data_centers)
            for dc_id in wanted:
                try:
                    self.catalog.data_center(dc_id)
                except CatalogError as exc:
                    raise ApiError(str(exc)) from None
            mounts = body.get("mounts") or {}
            persistent = mounts.get("persistent")
            network = mounts.get("network") or []
            if persistent is not None and network:
                raise ApiError("A pod takes a persistent mount or a network mount, not both.")
            spec: dict[str, Any] = {
                "name": body["name"],
                "imageName": body.get("image") or "",
                "env": [{"key": key, "value": value} for key, value in (body.get("env") or {}).items()],
                "dockerArgs": body.get("args") or "",
                "containerDiskInGb": body.get("disk", DEFAULT_CONTAINER_DISK_GB),
                "ports": ",".join(body["ports"]) if body.get("ports") else None,
            }
            if network:
                volume = self.volumes.get(network[0]["volumeId"])
                if volume is None or volume.deleted_at is not None:
                    raise ApiError(f"Network volume {network[0]['volumeId']} not found.")
                if cloud != SECURE:
                    raise ApiError(NETWORK_VOLUME_SECURE_ONLY)
                if volume.data_center_id not in wanted:
                    raise ApiError(
                        f"Network volume {volume.id} is in data center {volume.data_center_id}, "
                        "which dataCenterIds does not include."
                    )
                wanted = [volume.data_center_id]
                spec["networkVolumeId"] = volume.id
                spec["volumeMountPath"] = network[0]["path"]
            if persistent is not None:
                spec["volumeInGb"] = persistent["size"]
                spec["volumeMountPath"] = persistent["path"]
            if gpu_spec is not None:
                return self._create_gpu_pod_v2(spec, gpu_spec, cloud, wanted)
            if persistent is not None:
                raise ApiError("CPU pods take container disk and network volumes only.")
            assert cpu_spec is not None
            return self._create_cpu_pod_v2(spec, cpu_spec, cloud, wanted)

    def _create_gpu_pod_v2(self, spec: dict[str, Any], gpu_spec: dict[str, Any], cloud: str, wanted: list[str]) -> Pod:
        try:
            gpu = self.catalog.gpu(gpu_spec["id"])
        except CatalogError as exc:
            raise ApiError(str(exc)) from None
        count = gpu_spec.get("count", 1)
        price = gpu.price_micros(cloud)
        if price is None:
            raise ApiError(f"{gpu.id} is not offered in {cloud} cloud.")
        if count > gpu.max_gpu_count:
            raise ApiError(f"gpu.count must be at most {gpu.max_gpu_count} for {gpu.id}.")
        cuda_ok = HOST_CUDA_VERSION in gpu_spec.get("allowedCudaVersions", [HOST_CUDA_VERSION])
        minimum = gpu_spec.get("minCudaVersion")
        if minimum is not None and _version(minimum) > _version(HOST_CUDA_VERSION):
            cuda_ok = False
        self._check_access_and_credit(gpu.id, cloud, price * count)
        places = [dc for dc in wanted if self.catalog.gpu_stock.get((gpu.id, cloud, dc), 0) >= count]
        if not places or not cuda_ok:
            raise ApiError(NO_STOCK, code=INSUFFICIENT_CAPACITY)
        dc = places[0]
        self.catalog.gpu_stock[(gpu.id, cloud, dc)] -= count
        return self._new_pod(
            spec,
            kind="gpu",
            cloud=cloud,
            data_center_id=dc,
            gpu_type_id=gpu.id,
            gpu_display_name=gpu.display_name,
            gpu_count=count,
            cpu_instance_id=None,
            vcpu=VCPU_PER_GPU * count,
            memory_gb=MEMORY_GB_PER_GPU * count,
            cost=price * count,
            spot=False,
            bid_micros=None,
        )

    def _create_cpu_pod_v2(self, spec: dict[str, Any], cpu_spec: dict[str, Any], cloud: str, wanted: list[str]) -> Pod:
        if cloud != SECURE:
            raise ApiError("CPU pods are only available in Secure Cloud.")
        flavor = self.catalog.cpu_flavors.get(cpu_spec["id"])
        if flavor is None:
            raise ApiError(f"Invalid CPU flavor: {cpu_spec['id']}")
        vcpu = cpu_spec["vcpuCount"]
        if vcpu not in CPU_VCPU_COUNTS:
            raise ApiError(
                f"vcpuCount must be a power of two from {min(CPU_VCPU_COUNTS)} to {max(CPU_VCPU_COUNTS)} "
                f"for {flavor.id}, got {vcpu}."
            )
        cap = CPU_DISK_GB_PER_VCPU * vcpu
        if spec["containerDiskInGb"] > cap:
            raise ApiError(f"Container Disk must be less than or equal to {cap}")
        instance = self.catalog.cpu_instance(f"{flavor.id}-{vcpu}-{vcpu * flavor.memory_gb_per_vcpu}")
        self._check_access_and_credit(flavor.id, SECURE, instance.cost_per_hr_micros)
        places = [dc for dc in wanted if self.catalog.cpu_stock.get(dc, 0) > 0]
        if not places:
            raise ApiError(NO_STOCK, code=INSUFFICIENT_CAPACITY)
        dc = places[0]
        self.catalog.cpu_stock[dc] -= 1
        return self._new_pod(
            spec,
            kind="cpu",
            cloud=SECURE,
            data_center_id=dc,
            gpu_type_id=None,
            gpu_display_name=None,
            gpu_count=0,
            cpu_instance_id=instance.id,
            vcpu=instance.vcpu,
            memory_gb=instance.memory_gb,
            cost=instance.cost_per_hr_micros,
            spot=False,
            bid_micros=None,
        )

    def _check_access_and_credit(self, resource_id: str, cloud: str, cost_per_hr_micros: int) -> None:
        if (resource_id, cloud) in self.forbidden:
            raise ApiError(f"Your account does not have access to {resource_id} in {cloud} cloud.", code=FORBIDDEN)
        if (resource_id, cloud) in self.unplaceable_pools:
            raise ApiError(NO_STOCK, code=INSUFFICIENT_CAPACITY)
        # A deploy needs at least one hour of the pod's price in credit.
        if cost_per_hr_micros > self.balance_micros:
            raise ApiError(INSUFFICIENT_BALANCE, code=PAYMENT_REQUIRED)

    def start_pod_v2(self, pod_id: str) -> Pod:
        """`start` on an EXITED or ERROR pod: back on its own host, which a lost host no longer is."""
        with self.lock:
            self._tick()
            pod = self._live_pod(pod_id, "start")
            if pod.id in self.lost_hosts:
                raise ApiError(NO_FREE_GPUS_ON_HOST, code=INSUFFICIENT_CAPACITY)
            if pod.state == PodState.ERROR:
                # A crash-looped pod still holds its host: stop it first so the resume takes a fresh start.
                self._halt(pod, PodState.STOPPED, "stopped to start again")
            return self.resume_pod(pod.id, None)

    def restart_pod(self, pod_id: str) -> Pod:
        """`restart` of a RUNNING pod: the container goes down (SIGTERM, the grace, SIGKILL) and comes back
        at once with a fresh container disk, through the platform's own restart path; billing runs on."""
        with self.lock:
            self._tick()
            pod = self._live_pod(pod_id, "restart")
            if pod.state != PodState.RUNNING:
                raise ApiError(f"Pod {pod.id} is {pod.state.value}; only a running pod restarts.", code=CONFLICT)
            now = self.clock.now()
            if pod.process is not None:
                pod.process.send_term(now)
            pod.run_started_at = None
            pod.wipe_disk_when_dead = True
            pod.restart_due = now
            pod.events.append((now, "restart requested"))
            self._settle(pod)
            return pod

    def _clouds(self, cloud_type: str | None) -> list[str]:
        if cloud_type in (None, "ALL"):
            return [COMMUNITY, SECURE]
        return [cloud_type]

    def _data_centers(self, spec: dict[str, Any]) -> list[str]:
        requested = spec.get("dataCenterId")
        if requested is not None:
            try:
                self.catalog.data_center(requested)
            except CatalogError as exc:
                raise ApiError(str(exc)) from None
        volume_id = spec.get("networkVolumeId")
        if volume_id is not None:
            volume = self.volumes.get(volume_id)
            if volume is None or volume.deleted_at is not None:
                raise ApiError(f"Network volume {volume_id} not found.")
            if requested is not None and requested != volume.data_center_id:
                raise ApiError(
                    f"Network volume {volume_id} is in data center {volume.data_center_id}; "
                    f"it can't be attached to a pod in {requested}."
                )
            return [volume.data_center_id]
        if requested is not None:
            return [requested]
        country = spec.get("countryCode")
        return [
            dc.id
            for dc in self.catalog.data_centers.values()
            if country is None or dc.id.split("-")[1] == country or dc.location == country
        ]

    def _new_pod(
        self,
        spec: dict[str, Any],
        *,
        kind: str,
        cloud: str,
        data_center_id: str,
        gpu_type_id: str | None,
        gpu_display_name: str | None,
        gpu_count: int,
        cpu_instance_id: str | None,
        vcpu: int,
        memory_gb: int,
        cost: int,
        spot: bool,
        bid_micros: int | None,
    ) -> Pod:
        now = self.clock.now()
        pod_id = _new_id(14)
        env: dict[str, str] = {}
        for item in spec.get("env") or []:
            env[item["key"]] = item["value"]
        never_start = self._never_start_next > 0
        if never_start:
            self._never_start_next -= 1
        pod_dir = self.root / "pods" / pod_id
        (pod_dir / "disk").mkdir(parents=True)
        (pod_dir / "pod.log").touch()
        pod = Pod(
            id=pod_id,
            name=spec.get("name") or "",
            kind=kind,
            image_name=spec.get("imageName") or "",
            env=env,
            docker_args=spec.get("dockerArgs") or "",
            volume_mount_path=spec.get("volumeMountPath") or DEFAULT_MOUNT_PATH,
            network_volume_id=spec.get("networkVolumeId"),
            data_center_id=data_center_id,
            cloud=cloud,
            gpu_type_id=gpu_type_id,
            gpu_display_name=gpu_display_name,
            gpu_count=gpu_count,
            cpu_instance_id=cpu_instance_id,
            vcpu_count=vcpu,
            memory_gb=memory_gb,
            container_disk_gb=spec.get("containerDiskInGb") or 10,
            volume_in_gb=spec.get("volumeInGb") or 0,
            ports=spec.get("ports"),
            cost_per_hr_micros=cost,
            spot=spot,
            bid_per_gpu_micros=bid_micros,
            machine_id=_new_id(12),
            pod_host_id=f"{pod_id}-{secrets.token_hex(4)}",
            created_at=now,
            dir=pod_dir,
            start_due=now + self.startup_delay_s[kind],
            never_start=never_start,
            last_status_change=now,
        )
        pod.billing.append(BillingInterval(now, None, cost))
        pod.events.append((now, "created"))
        self.pods[pod_id] = pod
        return pod

    # ----- pods: lifecycle -----
    def get_pod(self, pod_id: str) -> Pod | None:
        with self.lock:
            self._tick()
            pod = self.pods.get(pod_id)
            return None if pod is None or pod.state == PodState.TERMINATED else pod

    def listed_pods(self) -> list[Pod]:
        with self.lock:
            self._tick()
            return [pod for pod in self.pods.values() if pod.state != PodState.TERMINATED]

    def stop_pod(self, pod_id: str) -> Pod:
        with self.lock:
            self._tick()
            pod = self._live_pod(pod_id, "stop")
            if pod.state != PodState.STOPPED:
                self._halt(pod, PodState.STOPPED, "stopped")
            return pod

    def terminate_pod(self, pod_id: str) -> None:
        with self.lock:
            self._tick()
            pod = self._live_pod(pod_id, "terminate")
            self._halt(pod, PodState.TERMINATED, "terminated")

    def interrupt(self, pod_id: str) -> None:
        """Spot interruption: the platform takes the GPU back (SIGTERM, then SIGKILL after the grace)."""
        with self.lock:
            self._tick()
            pod = self._live_pod(pod_id, "interrupt")
            if not pod.spot:
                raise ValueError(f"pod {pod_id} is on-demand; only spot (interruptible) pods are interrupted")
            if pod.state == PodState.STOPPED:
                raise ValueError(f"pod {pod_id} is already stopped")
            pod.interrupted_at = self.clock.now()
            self._halt(pod, PodState.STOPPED, "interrupted")

    def resume_pod(self, pod_id: str, gpu_count: int | None, bid_per_gpu: float | None = None) -> Pod:
        with self.lock:
            self._tick()
            pod = self._live_pod(pod_id, "resume")
            if pod.state != PodState.STOPPED:
                return pod  # already running or starting: resuming again changes nothing
            if pod.spot and bid_per_gpu is None:
                raise ApiError("Cannot resume a spot pod as an on demand pod.")
            if not pod.spot and bid_per_gpu is not None:
                raise ApiError("Cannot resume an on demand pod as a spot pod.")
            count = gpu_count if gpu_count is not None else pod.gpu_count
            if pod.kind == "gpu" and count != pod.gpu_count:
                raise ApiError(f"gpuCount must be {pod.gpu_count} to resume this pod.")
            cost = pod.cost_per_hr_micros
            if pod.kind == "gpu":
                assert pod.gpu_type_id is not None
                gpu = self.catalog.gpu(pod.gpu_type_id)
                if bid_per_gpu is not None:
                    minimum = gpu.price_micros(pod.cloud, spot=True) or 0
                    bid_micros = billing.dollars_to_micros(str(bid_per_gpu))
                    if bid_micros < minimum:
                        raise ApiError(
                            f"Your bid price is lower than the minimum bid of "
                            f"${billing.micros_to_float(minimum):.3f}/hr per GPU for {gpu.id}."
                        )
                    pod.bid_per_gpu_micros = bid_micros
                    cost = bid_micros * pod.gpu_count
                key = (pod.gpu_type_id, pod.cloud, pod.data_center_id)
                if self.catalog.gpu_stock.get(key, 0) < pod.gpu_count:
                    raise ApiError(NO_FREE_GPUS_ON_HOST, code="INSUFFICIENT_CAPACITY")
                self.catalog.gpu_stock[key] -= pod.gpu_count
            else:
                if self.catalog.cpu_stock.get(pod.data_center_id, 0) < 1:
                    raise ApiError(NO_STOCK, code="INSUFFICIENT_CAPACITY")
                self.catalog.cpu_stock[pod.data_center_id] -= 1
            now = self.clock.now()
            pod.cost_per_hr_micros = cost
            pod.holds_stock = True
            pod.state = PodState.STARTING
            pod.start_due = now + self.startup_delay_s[pod.kind]
            pod.exit_code = None
            pod.stopped_at = None
            pod.last_status_change = now
            pod.billing.append(BillingInterval(now, None, cost))
            pod.events.append((now, "resumed"))
            return pod

    def _live_pod(self, pod_id: str, verb: str) -> Pod:
        pod = self.pods.get(pod_id)
        if pod is None or pod.state == PodState.TERMINATED:
            raise ApiError(f"pod not found to {verb}", code="NOT_FOUND")
        return pod

    def _halt(self, pod: Pod, state: PodState, event: str) -> None:
        now = self.clock.now()
        if pod.billing and pod.billing[-1].end is None:
            pod.billing[-1].end = now
        self._release_stock(pod)
        if pod.process is not None:
            pod.process.send_term(now)
        pod.wipe_disk_when_dead = True
        pod.state = state
        pod.start_due = None
        pod.restart_due = None
        pod.quick_exits = 0
        pod.run_started_at = None
        pod.last_status_change = now
        if state == PodState.TERMINATED:
            pod.terminated_at = now
        else:
            pod.stopped_at = now
        pod.events.append((now, event))
        self._settle(pod)

    def _release_stock(self, pod: Pod) -> None:
        if not pod.holds_stock:
            return
        pod.holds_stock = False
        if pod.kind == "gpu":
            assert pod.gpu_type_id is not None
            key = (pod.gpu_type_id, pod.cloud, pod.data_center_id)
            self.catalog.gpu_stock[key] = self.catalog.gpu_stock.get(key, 0) + pod.gpu_count
        else:
            self.catalog.cpu_stock[pod.data_center_id] = self.catalog.cpu_stock.get(pod.data_center_id, 0) + 1

    # ----- time passes -----
    def tick(self) -> None:
        with self.lock:
            self._tick()

    def _tick(self) -> None:
        now = self.clock.now()
        for pod in list(self.pods.values()):
            if (
                pod.state == PodState.STARTING
                and not pod.never_start
                and pod.start_due is not None
                and now >= pod.start_due
            ):
                self._launch(pod, now)
            elif (
                pod.state == PodState.RUNNING
                and pod.restart_due is not None
                and now >= pod.restart_due
                and pod.process is None
                and not pod.wipe_disk_when_dead
            ):
                pod.restart_due = None
                pod.restarts += 1
                self._launch(pod, now)
            self._settle(pod)

    def _settle(self, pod: Pod) -> None:
        """Reap, restart an ended container, escalate SIGTERM to SIGKILL after the grace, and wipe the disk once
        nothing runs."""
        process = pod.process
        now = self.clock.now()
        if process is not None:
            code = process.exit_code()
            if code is not None and pod.state == PodState.RUNNING and pod.restart_due is None:
                self._container_exited(pod, now, code, f"exited with code {code}")
            if pod.state != PodState.RUNNING or pod.restart_due is not None:
                if code is not None and process.term_sent_at is None:
                    process.kill()  # leftovers of a container whose main process ended
                elif process.term_sent_at is not None and now - process.term_sent_at >= self.kill_grace_s:
                    if process.group_alive() and not process.killed:
                        pod.events.append((now, "killed after grace period"))
                    process.kill()
                if not process.group_alive():
                    if pod.exit_code is None and pod.state != PodState.RUNNING:
                        pod.exit_code = process.exit_code()
                    pod.process = None
        if pod.process is None and pod.wipe_disk_when_dead:
            pod.wipe_disk_when_dead = False
            shutil.rmtree(pod.disk, ignore_errors=True)
            if pod.state == PodState.STOPPED or pod.restart_due is not None:
                pod.disk.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(pod.dir / "bin", ignore_errors=True)

    def _launch(self, pod: Pod, now: float) -> None:
        pod.state = PodState.RUNNING
        pod.run_started_at = now
        pod.started_at = pod.started_at if pod.started_at is not None else now
        pod.last_status_change = now
        pod.events.append((now, "started" if pod.restarts == 0 else f"restarted ({pod.restarts})"))
        mount = self._mount_folder(pod)
        env = {key: substitute_mount(value, pod.volume_mount_path, mount) for key, value in pod.env.items()}
        env.update(self._platform_env(pod))
        if pod.kind == "gpu":
            assert pod.gpu_type_id is not None and pod.gpu_display_name is not None
            gpu = self.catalog.gpu(pod.gpu_type_id)
            write_nvidia_smi(pod.dir / "bin", gpu.id, gpu.memory_gb, pod.gpu_count)
            env["PATH"] = f"{pod.dir / 'bin'}{os.pathsep}{env['PATH']}"
            env["LORABOT_FAKE_GPU"] = pod.gpu_display_name
            for key, value in self.gpu_process_env.items():
                env[key] = f"{value}{os.pathsep}{env[key]}" if key == "PYTHONPATH" and env.get(key) else value
        pod.disk.mkdir(parents=True, exist_ok=True)
        try:
            argv = [substitute_mount(arg, pod.volume_mount_path, mount) for arg in shlex.split(pod.docker_args)]
        except ValueError as exc:
            self._start_failed(pod, now, f"cannot split dockerArgs: {exc}", 1)
            return
        if not argv:
            self._start_failed(pod, now, "no start command (dockerArgs is empty)", 0)
            return
        try:
            pod.process = PodProcess.spawn(pod.id, argv, env, pod.disk, pod.log_path)
        except OSError as exc:
            self._start_failed(pod, now, f"exec {argv[0]!r} failed: {exc.strerror}", 127)

    def _start_failed(self, pod: Pod, now: float, reason: str, code: int) -> None:
        with pod.log_path.open("a") as log:
            log.write(f"[emulator] container start failed: {reason}\n")
        self._container_exited(pod, now, code, f"exited with code {code}: {reason}")

    def _container_exited(self, pod: Pod, now: float, code: int, event: str) -> None:
        """The start command ended on its own (any code): RunPod starts the container again, same image, args and
        env, fresh container disk, after a back-off; a crash loop ends in ERROR, which keeps billing."""
        ran_s = now - pod.run_started_at if pod.run_started_at is not None else 0.0
        pod.exit_code = code
        pod.run_started_at = None
        pod.wipe_disk_when_dead = True
        pod.events.append((now, event))
        pod.quick_exits = pod.quick_exits + 1 if ran_s < self.crash_window_s else 0
        if pod.quick_exits > self.crash_restarts:
            pod.state = PodState.ERROR
            pod.last_status_change = now
            pod.events.append((now, f"crash loop: {pod.quick_exits} quick exits in a row, pod in ERROR"))
            return
        backoff = self.restart_backoff_s * 2 ** max(0, pod.quick_exits - 1)
        pod.restart_due = now + backoff
        pod.events.append((now, f"restarting in {backoff:.0f} s"))

    def _mount_folder(self, pod: Pod) -> Path:
        if pod.network_volume_id is not None:
            return self.volumes[pod.network_volume_id].path
        # No Network Volume: the mount path is a folder of the pod's own (a pod volume, kept across stops).
        folder = pod.dir / "pod-volume"
        folder.mkdir(exist_ok=True)
        return folder

    def _platform_env(self, pod: Pod) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(pod.disk)),
            "RUNPOD_POD_ID": pod.id,
            "RUNPOD_POD_HOSTNAME": pod.pod_host_id,
            "RUNPOD_GPU_COUNT": str(pod.gpu_count),
            "RUNPOD_CPU_COUNT": str(pod.vcpu_count),
            "RUNPOD_DC_ID": pod.data_center_id,
            "LORABOT_TIME_SCALE": repr(self.clock.time_scale),
        }

    # ----- records -----
    def billed(self, pod: Pod) -> tuple[int, int]:
        """(billed seconds, cost in micro-dollars), each interval rounded up to a whole second."""
        now = self.clock.now()
        seconds = cost = 0
        for interval in pod.billing:
            interval_seconds = billing.billed_seconds([(interval.start, interval.end)], now)
            seconds += interval_seconds
            cost += billing.cost_micros(interval_seconds, interval.cost_per_hr_micros)
        return seconds, cost

    def report(self, pod: Pod) -> PodReport:
        seconds, cost = self.billed(pod)
        return PodReport(
            id=pod.id,
            name=pod.name,
            kind=pod.kind,
            state=pod.state.value,
            gpu_type_id=pod.gpu_type_id,
            gpu_count=pod.gpu_count,
            cpu_instance_id=pod.cpu_instance_id,
            cloud=pod.cloud,
            data_center_id=pod.data_center_id,
            spot=pod.spot,
            image_name=pod.image_name,
            env=dict(pod.env),
            docker_args=pod.docker_args,
            volume_id=pod.network_volume_id,
            volume_mount_path=pod.volume_mount_path,
            cost_per_hr_micros=pod.cost_per_hr_micros,
            created_at=pod.created_at,
            started_at=pod.started_at,
            stopped_at=pod.stopped_at,
            terminated_at=pod.terminated_at,
            interrupted_at=pod.interrupted_at,
            exit_code=pod.exit_code,
            restarts=pod.restarts,
            process_alive=pod.process is not None and pod.process.group_alive(),
            billed_seconds=seconds,
            cost_micros=cost,
            events=tuple(pod.events),
        )

    def volume_report(self, volume: Volume) -> VolumeReport:
        end = volume.deleted_at if volume.deleted_at is not None else self.clock.now()
        return VolumeReport(
            volume.id,
            volume.name,
            volume.size_gb,
            volume.data_center_id,
            volume.path,
            volume.created_at,
            volume.deleted_at,
            billing.resized_volume_cost_micros(
                volume.created_size_gb or volume.size_gb, volume.resizes, volume.created_at, end
            ),
        )

    def kill_everything(self) -> None:
        with self.lock:
            for pod in self.pods.values():
                if pod.process is not None:
                    pod.process.kill_and_wait()
                    pod.process = None

    def last_status_text(self, pod: Pod) -> str:
        when: datetime = self.clock.to_datetime(pod.last_status_change)
        verb = {
            PodState.STARTING: "Rented by User",
            PodState.RUNNING: "Rented by User",
            PodState.EXITED: "Exited by User",
            PodState.ERROR: "Exited by Runpod (container crash loop)",
            PodState.STOPPED: "Exited by User",
            PodState.TERMINATED: "Terminated by User",
        }[pod.state]
        if pod.interrupted_at is not None and pod.state == PodState.STOPPED:
            verb = "Exited by Runpod (spot interrupted)"
        return f"{verb}: {when.strftime('%a %b %d %Y %H:%M:%S')} GMT+0000 (Coordinated Universal Time)"
