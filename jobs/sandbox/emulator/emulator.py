"""`RunpodEmulator`: the emulated RunPod that tests, the sandbox cloud and `lorabot demo` start and steer.

emulator = RunpodEmulator(time_scale=60)
emulator.start()                       # < 2 s; 127.0.0.1, random port
os.environ.update(emulator.sdk_env())  # RUNPOD_API_BASE_URL for the runpod SDK
runpod.api_key = emulator.api_key
...
emulator.stop()                        # kills every pod process, removes every folder it made
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from jobs.sandbox.emulator.catalog import Catalog
from jobs.sandbox.emulator.clock import SimClock
from jobs.sandbox.emulator.pod_billing import DEFAULT_BUCKET_SIZE, pod_billing_for
from jobs.sandbox.emulator.records import PodReport, PodState, VolumeReport
from jobs.sandbox.emulator.server import EmulatorServer, RequestRecord
from jobs.sandbox.emulator.state import Account


class RunpodEmulator:
    def __init__(
        self,
        time_scale: float = 60.0,
        *,
        api_key: str | None = None,
        kill_grace_s: float = 10.0,
        startup_delay_s: dict[str, float] | None = None,
        catalog: Catalog | None = None,
        root: Path | None = None,
        timeout_hold_s: float = 35.0,
    ) -> None:
        """`time_scale` sim seconds pass per real second; `kill_grace_s` and start-up delays are sim seconds
        (defaults: 10 s grace like RunPod, GPU pods 120 s and CPU pods 30 s to start). A "timeout" fault
        holds its request `timeout_hold_s` real seconds (the SDK's own timeout is 30 s)."""
        self.clock = SimClock(time_scale)
        self.api_key = api_key or f"rpa_EMULATED{secrets.token_hex(16).upper()}"
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="runpod-emulator-")) if root is None else root
        self.account = Account(self.clock, self.root, catalog, kill_grace_s, startup_delay_s)
        self.server = EmulatorServer(self.account, self.api_key, hang_seconds=timeout_hold_s)
        self._started = False

    # ----- lifecycle -----
    def start(self) -> RunpodEmulator:
        self.server.start()
        self._started = True
        return self

    def stop(self) -> None:
        """Stop serving, SIGKILL every pod process group and remove the emulator's folders."""
        self.server.stop()
        self.account.kill_everything()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        self._started = False

    def __enter__(self) -> RunpodEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def rest_url(self) -> str:
        """Where a REST v2 client points (it appends `/v2/...`)."""
        return self.base_url

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/graphql"

    def sdk_env(self) -> dict[str, str]:
        """Environment for a client of the emulator. The SDK reads only RUNPOD_API_BASE_URL (set
        `runpod.api_key` yourself); RUNPOD_API_KEY is for our own wrapper's settings."""
        return {"RUNPOD_API_BASE_URL": self.base_url, "RUNPOD_API_KEY": self.api_key}

    # ----- knobs -----
    def set_stock(self, gpu_id: str, cloud: str, count: int, data_center_id: str | None = None) -> None:
        """Free units of `gpu_id` in `cloud` ("SECURE"/"COMMUNITY"), in one data center or in each of them."""
        with self.account.lock:
            self.account.catalog.set_gpu_stock(gpu_id, cloud, count, data_center_id)

    def stock(self, gpu_id: str, cloud: str, data_center_id: str | None = None) -> int:
        with self.account.lock:
            return self.account.catalog.free_gpus(gpu_id, cloud, data_center_id)

    def set_cpu_stock(self, count: int, data_center_id: str | None = None) -> None:
        with self.account.lock:
            self.account.catalog.set_cpu_stock(count, data_center_id)

    def set_startup_delay(self, kind: str, seconds: float) -> None:
        self.account.set_startup_delay(kind, seconds)

    def fail_next(self, count: int = 1, status: int | str = 500, *, operation: str | None = None) -> None:
        """The next `count` API calls fail: 500/502/503, "timeout" (held, then 504) or "disconnect". With
        `operation` (a REST operationId such as "deletePod") only calls of that operation fail."""
        self.server.fail_next(count, status, operation)

    def never_start_next_pod(self, count: int = 1) -> None:
        """The next created pod(s) stay with runtime null forever (and bill), like a stuck image pull."""
        self.account.never_start_next_pod(count)

    def set_restart_policy(
        self, *, backoff_s: float | None = None, crash_window_s: float | None = None, crash_restarts: int | None = None
    ) -> None:
        """How the platform restarts a container whose process ended (sim seconds; defaults 10 s back-off, doubled
        per quick exit in a row; a run shorter than 60 s is quick; the 6th quick exit in a row puts the pod in
        ERROR, after 5 restarts)."""
        self.account.set_restart_policy(
            backoff_s=backoff_s, crash_window_s=crash_window_s, crash_restarts=crash_restarts
        )

    def set_balance(self, dollars: float) -> None:
        """The account's credit (default $100): a REST create whose pod costs more per hour is a 402."""
        self.account.set_balance(dollars)

    def rate_limit_next(self, count: int = 1, retry_after_s: int = 1) -> None:
        """The next `count` REST calls get 429 with `Retry-After: retry_after_s` (GraphQL calls are not counted)."""
        self.server.rate_limit_next(count, retry_after_s)

    def unplaceable(self, gpu_id: str, cloud: str) -> None:
        """REST creates of `gpu_id` in `cloud` get RunPod's 400 "no longer any instances" although the catalog
        still shows stock: RunPod warns that the catalog orders candidates and reserves nothing."""
        self.account.unplaceable(gpu_id, cloud)

    def forbid(self, gpu_id: str, cloud: str) -> None:
        """REST creates of `gpu_id` (or a CPU flavor id) in `cloud` get 403, as for a pool the account can't use."""
        self.account.forbid(gpu_id, cloud)

    def lose_host(self, pod_id: str) -> None:
        """The pod's host vanishes: SIGKILL now, billing stops, the pod shows ERROR until terminated."""
        self.account.lose_host(pod_id)

    def set_gpu_process_env(self, env: dict[str, str]) -> None:
        """Environment added to every GPU pod process started from now on (a test world's network guard)."""
        with self.account.lock:
            self.account.gpu_process_env = dict(env)

    def interrupt(self, pod_id: str) -> None:
        """Spot interruption: SIGTERM, SIGKILL after the grace; the pod ends EXITED, billing stopped."""
        self.account.interrupt(pod_id)

    def advance(self, seconds: float) -> None:
        """Jump the simulated clock forward, then let pods react (start, bill, get killed) at once."""
        self.clock.advance(seconds)
        self.account.tick()

    # ----- volumes -----
    def create_volume(self, name: str = "lorabot", size_gb: int = 30, data_center_id: str = "EU-RO-1") -> VolumeReport:
        volume = self.account.create_volume(name, size_gb, data_center_id)
        with self.account.lock:
            return self.account.volume_report(volume)

    def volumes(self) -> list[VolumeReport]:
        """Every volume ever created, deleted ones too."""
        with self.account.lock:
            return [self.account.volume_report(v) for v in self.account.volumes.values()]

    def volume_path(self, volume_id: str) -> Path:
        with self.account.lock:
            return self.account.volumes[volume_id].path

    # ----- records -----
    def all_pods(self) -> list[PodReport]:
        """Every pod ever created, in creation order, terminated ones included."""
        with self.account.lock:
            self.account.tick()
            return [self.account.report(pod) for pod in self.account.pods.values()]

    def running_pods(self) -> list[PodReport]:
        """Pods that cost money or still have a live process: what must be empty after a job ends."""
        return [
            pod
            for pod in self.all_pods()
            if pod.state in (PodState.STARTING, PodState.RUNNING, PodState.EXITED, PodState.ERROR) or pod.process_alive
        ]

    def pod(self, pod_id: str) -> PodReport:
        with self.account.lock:
            self.account.tick()
            return self.account.report(self.account.pods[pod_id])

    def pod_log(self, pod_id: str) -> str:
        """What the pod's start command wrote to stdout and stderr (kept after terminate)."""
        with self.account.lock:
            path = self.account.pods[pod_id].log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def pod_disk(self, pod_id: str) -> Path:
        """The pod's container disk (its working directory); gone after terminate."""
        with self.account.lock:
            return self.account.pods[pod_id].disk

    def total_cost_micros(self) -> int:
        return sum(pod.cost_micros for pod in self.all_pods()) + sum(v.cost_micros for v in self.volumes())

    def billing_records(
        self, pod_id: str | None = None, bucket_size: str = DEFAULT_BUCKET_SIZE
    ) -> list[dict[str, Any]]:
        """The records `GET /v2/billing/pods?podId=…&bucketSize=…` answers now (the same code as the endpoint)."""
        records: list[dict[str, Any]] = pod_billing_for(self.account, pod_id, bucket_size)["records"]
        return records

    @property
    def requests(self) -> list[RequestRecord]:
        return list(self.server.requests)

    @property
    def failures(self) -> list[str]:
        """Requests the emulator couldn't model (unknown fields, syntax it can't read) and internal errors."""
        return list(self.server.failures)

    def clear_failures(self) -> list[str]:
        """Take the failures recorded so far (for a test that provoked them on purpose)."""
        taken = list(self.server.failures)
        del self.server.failures[: len(taken)]
        return taken

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
        """Poll `predicate` (real seconds) until true; raises TimeoutError naming `what`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)
