"""RunPod emulator: RunPod's REST API v2 (held to RunPod's OpenAPI contract, `rest.py`) and its GraphQL API
served locally over one account, with pods that run as local process groups.

Part of the product (the sandbox cloud and `lorabot demo` run on it) and of the test world
(`tests/world/fixtures_runpod.py`). See `emulator.py` for the entry point.
"""

from jobs.sandbox.emulator.catalog import COMMUNITY, SECURE, Catalog, CpuFlavor, DataCenter, GpuType
from jobs.sandbox.emulator.clock import SimClock
from jobs.sandbox.emulator.emulator import RunpodEmulator
from jobs.sandbox.emulator.records import PodReport, PodState, VolumeReport
from jobs.sandbox.emulator.server import RequestRecord
from jobs.sandbox.emulator.state import NO_FREE_GPUS_ON_HOST, NO_STOCK

__all__ = [
    "COMMUNITY",
    "NO_FREE_GPUS_ON_HOST",
    "NO_STOCK",
    "SECURE",
    "Catalog",
    "CpuFlavor",
    "DataCenter",
    "GpuType",
    "PodReport",
    "PodState",
    "RequestRecord",
    "RunpodEmulator",
    "SimClock",
    "VolumeReport",
]
