"""What the emulated RunPod sells: GPU types with prices per cloud, CPU flavors, data centers and stock.

Prices are emulator figures in the range RunPod lists (seed 000 measured the RTX 4090 at $0.69/h secure and
$0.44/h community, and a 2 vCPU / 8 GB CPU pod at $0.08/h); tests may replace them. All money is micro-dollars.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jobs.sandbox.emulator.billing import dollars_to_micros

SECURE = "SECURE"
COMMUNITY = "COMMUNITY"
CLOUDS = (SECURE, COMMUNITY)


@dataclass(frozen=True)
class GpuType:
    id: str
    display_name: str
    memory_gb: int
    secure_micros: int | None  # None: not offered in that cloud
    community_micros: int | None
    secure_spot_micros: int | None
    community_spot_micros: int | None
    max_gpu_count: int = 8
    manufacturer: str = "Nvidia"
    cuda_cores: int = 0

    def price_micros(self, cloud: str, *, spot: bool = False) -> int | None:
        if cloud == SECURE:
            return self.secure_spot_micros if spot else self.secure_micros
        return self.community_spot_micros if spot else self.community_micros


def _gpu(
    gpu_id: str,
    name: str,
    mem: int,
    secure: str | None,
    community: str | None,
    secure_spot: str | None,
    community_spot: str | None,
    cuda_cores: int,
) -> GpuType:
    def micros(text: str | None) -> int | None:
        return None if text is None else dollars_to_micros(text)

    return GpuType(
        gpu_id,
        name,
        mem,
        micros(secure),
        micros(community),
        micros(secure_spot),
        micros(community_spot),
        cuda_cores=cuda_cores,
    )


DEFAULT_GPU_TYPES: tuple[GpuType, ...] = (
    _gpu("NVIDIA GeForce RTX 4090", "RTX 4090", 24, "0.69", "0.44", "0.35", "0.29", 16384),
    _gpu("NVIDIA GeForce RTX 3090", "RTX 3090", 24, "0.43", "0.22", "0.22", "0.11", 10496),
    _gpu("NVIDIA RTX A5000", "RTX A5000", 24, "0.27", "0.16", "0.14", "0.10", 8192),
    _gpu("NVIDIA L4", "L4", 24, "0.43", None, "0.22", None, 7424),
    _gpu("NVIDIA RTX A6000", "RTX A6000", 48, "0.49", "0.33", "0.25", "0.17", 10752),
    _gpu("NVIDIA A40", "A40", 48, "0.40", None, "0.20", None, 10752),
    _gpu("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, "1.64", "1.19", "0.82", "0.60", 6912),
    _gpu("NVIDIA H100 80GB HBM3", "H100 SXM", 80, "2.99", "2.69", "1.75", "1.50", 16896),
)


@dataclass(frozen=True)
class DataCenter:
    id: str
    name: str
    location: str


DEFAULT_DATA_CENTERS: tuple[DataCenter, ...] = (
    DataCenter("EU-RO-1", "EU-RO-1", "Romania"),
    DataCenter("US-KS-2", "US-KS-2", "United States"),
    DataCenter("EU-SE-1", "EU-SE-1", "Sweden"),
)


@dataclass(frozen=True)
class CpuFlavor:
    id: str  # e.g. "cpu3c"
    memory_gb_per_vcpu: int
    micros_per_vcpu_hour: int


DEFAULT_CPU_FLAVORS: tuple[CpuFlavor, ...] = (
    CpuFlavor("cpu3c", 2, dollars_to_micros("0.03")),
    CpuFlavor("cpu3g", 4, dollars_to_micros("0.04")),
    CpuFlavor("cpu3m", 8, dollars_to_micros("0.06")),
    CpuFlavor("cpu5c", 2, dollars_to_micros("0.04")),
    CpuFlavor("cpu5g", 4, dollars_to_micros("0.05")),
    CpuFlavor("cpu5m", 8, dollars_to_micros("0.07")),
)
CPU_VCPU_COUNTS = (2, 4, 8, 16, 32)
# What RunPod's own console deploys when no instance is named; the SDK's CPU example omits instance_id.
DEFAULT_CPU_INSTANCE = "cpu3c-2-4"
_INSTANCE_RE = re.compile(r"^(?P<flavor>cpu\d[a-z])-(?P<vcpu>\d+)-(?P<mem>\d+)$")


@dataclass(frozen=True)
class CpuInstance:
    id: str
    flavor: CpuFlavor
    vcpu: int
    memory_gb: int

    @property
    def cost_per_hr_micros(self) -> int:
        return self.flavor.micros_per_vcpu_hour * self.vcpu


class CatalogError(ValueError):
    """A request names something the catalog doesn't sell; the message is what the API answers."""


class Catalog:
    """Prices and stock. Not thread-safe by itself: the emulator holds its lock around every call."""

    def __init__(
        self,
        gpu_types: tuple[GpuType, ...] = DEFAULT_GPU_TYPES,
        data_centers: tuple[DataCenter, ...] = DEFAULT_DATA_CENTERS,
        cpu_flavors: tuple[CpuFlavor, ...] = DEFAULT_CPU_FLAVORS,
        default_gpu_stock: int = 4,
        default_cpu_stock: int = 8,
    ) -> None:
        self.gpu_types = {gpu.id: gpu for gpu in gpu_types}
        self.data_centers = {dc.id: dc for dc in data_centers}
        self.cpu_flavors = {flavor.id: flavor for flavor in cpu_flavors}
        # Free units per (gpu id, cloud, data center); a pod holding a GPU has already taken its unit.
        self.gpu_stock: dict[tuple[str, str, str], int] = {}
        for gpu in gpu_types:
            for cloud in CLOUDS:
                if gpu.price_micros(cloud) is not None:
                    for dc in data_centers:
                        self.gpu_stock[(gpu.id, cloud, dc.id)] = default_gpu_stock
        self.cpu_stock: dict[str, int] = {dc.id: default_cpu_stock for dc in data_centers}

    def gpu(self, gpu_id: str) -> GpuType:
        try:
            return self.gpu_types[gpu_id]
        except KeyError:
            raise CatalogError(f"Invalid GPU type: {gpu_id}") from None

    def data_center(self, dc_id: str) -> DataCenter:
        try:
            return self.data_centers[dc_id]
        except KeyError:
            raise CatalogError(f"Invalid data center id: {dc_id}") from None

    def cpu_instance(self, instance_id: str) -> CpuInstance:
        match = _INSTANCE_RE.match(instance_id)
        flavor = self.cpu_flavors.get(match["flavor"]) if match else None
        if match is None or flavor is None:
            raise CatalogError(f"Invalid instance id: {instance_id}")
        vcpu, memory = int(match["vcpu"]), int(match["mem"])
        if vcpu not in CPU_VCPU_COUNTS or memory != vcpu * flavor.memory_gb_per_vcpu:
            raise CatalogError(
                f"Invalid instance id: {instance_id} ({flavor.id} comes with {CPU_VCPU_COUNTS} vCPUs "
                f"and {flavor.memory_gb_per_vcpu} GB per vCPU)"
            )
        return CpuInstance(instance_id, flavor, vcpu, memory)

    def set_gpu_stock(self, gpu_id: str, cloud: str, count: int, data_center_id: str | None = None) -> None:
        gpu = self.gpu(gpu_id)
        if cloud not in CLOUDS:
            raise CatalogError(f"cloud must be one of {CLOUDS}, got {cloud!r}")
        if gpu.price_micros(cloud) is None:
            raise CatalogError(f"{gpu_id} is not offered in {cloud} cloud")
        if count < 0:
            raise CatalogError(f"stock can't be negative, got {count}")
        targets = [self.data_center(data_center_id).id] if data_center_id else list(self.data_centers)
        for dc in targets:
            self.gpu_stock[(gpu_id, cloud, dc)] = count

    def set_cpu_stock(self, count: int, data_center_id: str | None = None) -> None:
        if count < 0:
            raise CatalogError(f"stock can't be negative, got {count}")
        targets = [self.data_center(data_center_id).id] if data_center_id else list(self.data_centers)
        for dc in targets:
            self.cpu_stock[dc] = count

    def free_gpus(self, gpu_id: str, cloud: str, data_center_id: str | None = None) -> int:
        return sum(
            count
            for (gid, c, dc), count in self.gpu_stock.items()
            if gid == gpu_id and c == cloud and (data_center_id is None or dc == data_center_id)
        )
