"""The emulated account's records: pods, volumes, billing intervals, and the frozen reports tests read."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.sandbox.emulator.pods import PodProcess


class ApiError(Exception):
    """An answer RunPod gives as a GraphQL error; `message` is the exact text clients see."""

    def __init__(self, message: str, code: str = "BAD_USER_INPUT") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class PodState(enum.StrEnum):
    STARTING = "STARTING"  # created or resumed, container not up yet: runtime is null
    RUNNING = "RUNNING"  # start command runs
    EXITED = "EXITED"  # RunPod's name for a stopped pod; the lifecycle never leaves a pod here (exits restart)
    ERROR = "ERROR"  # crash loop (or host lost): no container runs, and it bills until terminated
    STOPPED = "STOPPED"  # stopped or interrupted: no billing, container disk wiped, volume kept
    TERMINATED = "TERMINATED"  # gone from the account


@dataclass
class BillingInterval:
    """One stretch the pod was billed, at the price it had then (a resumed spot pod may bid anew)."""

    start: float
    end: float | None
    cost_per_hr_micros: int


@dataclass
class Volume:
    id: str
    name: str
    size_gb: int
    data_center_id: str
    path: Path
    created_at: float
    deleted_at: float | None = None
    # (sim time, new size in GB) of every resize (updateNetworkVolume), oldest first: billing follows them.
    resizes: list[tuple[float, int]] = field(default_factory=list)
    created_size_gb: int | None = None  # the size before the first resize


@dataclass
class Pod:
    id: str
    name: str
    kind: str  # "gpu" or "cpu"
    image_name: str
    env: dict[str, str]
    docker_args: str
    volume_mount_path: str
    network_volume_id: str | None
    data_center_id: str
    cloud: str
    gpu_type_id: str | None
    gpu_display_name: str | None
    gpu_count: int
    cpu_instance_id: str | None
    vcpu_count: int
    memory_gb: int
    container_disk_gb: int
    volume_in_gb: int
    ports: str | None
    cost_per_hr_micros: int
    spot: bool
    bid_per_gpu_micros: int | None
    machine_id: str
    pod_host_id: str
    created_at: float
    dir: Path
    state: PodState = PodState.STARTING
    start_due: float | None = None
    never_start: bool = False
    run_started_at: float | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    terminated_at: float | None = None
    interrupted_at: float | None = None
    exit_code: int | None = None
    last_status_change: float = 0.0
    # The platform restarts a container whose process ended: when the next start is due, how many there were,
    # and how many runs in a row ended soon after they started (a crash loop, which ends in ERROR).
    restart_due: float | None = None
    restarts: int = 0
    quick_exits: int = 0
    billing: list[BillingInterval] = field(default_factory=list)
    holds_stock: bool = True
    process: PodProcess | None = None
    wipe_disk_when_dead: bool = False
    events: list[tuple[float, str]] = field(default_factory=list)

    @property
    def disk(self) -> Path:
        return self.dir / "disk"

    @property
    def log_path(self) -> Path:
        return self.dir / "pod.log"


@dataclass(frozen=True)
class PodReport:
    """What a test may read about a pod, frozen at the moment it was asked (sim times in seconds)."""

    id: str
    name: str
    kind: str
    state: str
    gpu_type_id: str | None
    gpu_count: int
    cpu_instance_id: str | None
    cloud: str
    data_center_id: str
    spot: bool
    image_name: str
    env: dict[str, str]
    docker_args: str
    volume_id: str | None
    volume_mount_path: str
    cost_per_hr_micros: int
    created_at: float
    started_at: float | None
    stopped_at: float | None
    terminated_at: float | None
    interrupted_at: float | None
    exit_code: int | None
    restarts: int
    process_alive: bool
    billed_seconds: int
    cost_micros: int
    events: tuple[tuple[float, str], ...]


@dataclass(frozen=True)
class VolumeReport:
    id: str
    name: str
    size_gb: int
    data_center_id: str
    path: Path
    created_at: float
    deleted_at: float | None
    cost_micros: int
