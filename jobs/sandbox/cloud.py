"""The sandbox cloud: the RunPod emulator run as a product feature, so the whole flow costs $0.

`start_sandbox(settings, store)` starts the emulator (the very code the tests' RunPod world uses), and returns a
`SandboxRuntime` holding what the bot needs instead of real RunPod: an `AsyncCloud` over RunPod's REST API v2 (or
the GraphQL fallback, as `runpod.api` says) pointed at the emulator, the offline environment recipe (stand-in
sd-scripts), the pods' extra env, the price list, and a stand-in base model in the artifact store that sandbox
jobs download instead of the catalog's multi-GB file.

Pods are local processes; billing and every duration run on the emulator's simulated clock (`runtime.clock`), which
the orchestrator must use too. Prices are RunPod's (the same table `lorabot plan` uses) so the cost maths is the
real one, but nothing is ever charged: every message the sandbox shows says so (`SANDBOX_NOTE`).

The sandbox refuses to start when a RunPod key is configured, unless `LORABOT_CLOUD=sandbox` asks for it: an
operator with a key must never believe real pods are training when they are not.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from jobs.agent_bundle import build_agent
from jobs.cloud import AsyncCloud, connect
from jobs.config import Settings
from jobs.orchestrator import Orchestrator, OrchestratorConfig, Store
from jobs.prices import PriceProvider, StaticPriceProvider
from jobs.queue import JobPlan, ModelFileRef
from jobs.sandbox.emulator import RunpodEmulator
from jobs.sandbox.hub import StandinHub
from jobs.sandbox.recipe import sandbox_recipe

STANDIN_SDSCRIPTS = Path(__file__).resolve().parent / "sdscripts"
TIME_SCALE_ENV = "LORABOT_SANDBOX_TIME_SCALE"
DEFAULT_TIME_SCALE = 60.0
# Seed 000 measured 1.96 it/s for SDXL at 1024 px on an RTX 4090: the stand-in trains at about that, in sim time.
DEFAULT_STEPS_PER_SECOND = 2.0
STANDIN_MODEL_KEY = "sandbox/models/standin-base.safetensors"
SANDBOX_NOTE = "sandbox: simulated pods on this machine at RunPod's prices; $0 real money is spent"


class SandboxRefused(Exception):
    """The sandbox must not start with these settings; str() says why and what to set."""


@dataclasses.dataclass(frozen=True)
class StandinModel:
    """The base model sandbox jobs download: a tiny valid safetensors file in the artifact store."""

    key: str
    url: str
    sha256: str
    size: int


@dataclasses.dataclass
class SandboxRuntime:
    emulator: RunpodEmulator
    cloud: AsyncCloud
    env_recipe: dict[str, Any]
    pod_env: tuple[tuple[str, str], ...]
    prices: PriceProvider
    model: StandinModel
    # Serves the tokenizers the CPU stage fetches: the sandbox never reaches huggingface.co.
    hub: StandinHub
    note: str = SANDBOX_NOTE

    @property
    def clock(self) -> Callable[[], dt.datetime]:
        """The simulated UTC clock the emulator bills by; give it to the orchestrator and the ledger."""
        return self.emulator.clock.utcnow

    @property
    def time_scale(self) -> float:
        return self.emulator.clock.time_scale

    def orchestrator_config(self, settings: Settings, **overrides: Any) -> OrchestratorConfig:
        """The operator's settings with the sandbox's pod env; `overrides` are OrchestratorConfig fields."""
        config = dataclasses.replace(
            OrchestratorConfig.from_settings(settings), pod_env=self.pod_env, hub_endpoint=self.hub.url
        )
        return dataclasses.replace(config, **overrides)

    def build_orchestrator(
        self, *, sessions: sessionmaker[Session], store: Store, config: OrchestratorConfig
    ) -> Orchestrator:
        return Orchestrator(
            sessions=sessions,
            cloud=self.cloud,
            store=store,
            config=config,
            env_recipe=self.env_recipe,
            agent_bundle=build_agent(),
            clock=self.clock,
        )

    def rewrite_plan_model(self, job_plan: JobPlan) -> JobPlan:
        """The same plan downloading the stand-in model (under the catalog's file name, so args stay as planned).

        Apply it to a job's `plan_json` right after `jobs.queue.submit`, before the first tick writes the manifest.
        """
        model = ModelFileRef(
            url=self.model.url,
            filename=job_plan.model.filename,
            size=self.model.size,
            sha256=self.model.sha256,
            token_env=None,
        )
        return dataclasses.replace(job_plan, model=model)

    def close(self) -> None:
        """Kill every sandbox pod and remove the emulator's folders; safe to call twice."""
        self.emulator.stop()
        self.hub.stop()


def check_sandbox_allowed(settings: Settings) -> None:
    """Raise SandboxRefused unless the settings choose the sandbox: no RunPod key, or `LORABOT_CLOUD=sandbox`."""
    if settings.effective_cloud == "sandbox":
        return
    if settings.runpod.api_key is not None and settings.cloud is None:
        raise SandboxRefused(
            "a RunPod API key is configured, so lorabot will not silently run the sandbox instead of real pods; "
            "set LORABOT_CLOUD=sandbox to use the sandbox anyway"
        )
    raise SandboxRefused("LORABOT_CLOUD=runpod asks for real pods; set LORABOT_CLOUD=sandbox to use the sandbox")


def sandbox_time_scale(environ: Mapping[str, str] | None = None) -> float:
    """`LORABOT_SANDBOX_TIME_SCALE` (simulated seconds per real second), default 60."""
    env = os.environ if environ is None else environ
    raw = env.get(TIME_SCALE_ENV, "").strip()
    if not raw:
        return DEFAULT_TIME_SCALE
    try:
        scale = float(raw)
    except ValueError:
        raise SandboxRefused(f"{TIME_SCALE_ENV} must be a number like 60, got {raw[:20]!r}") from None
    if not 1 <= scale <= 10_000:
        raise SandboxRefused(f"{TIME_SCALE_ENV} must be between 1 and 10000, got {scale:g}")
    return scale


def standin_model_bytes() -> bytes:
    """A valid, tensor-less safetensors file (8-byte header length, JSON header), the same bytes every time."""
    header = json.dumps(
        {"__metadata__": {"lorabot": "sandbox stand-in base model; the stand-in trainer only checks it exists"}},
        separators=(",", ":"),
    ).encode()
    header += b" " * (-len(header) % 8)  # the format pads the header to 8 bytes with spaces
    return struct.pack("<Q", len(header)) + header


def start_sandbox(
    settings: Settings,
    store: Store,
    *,
    time_scale: float | None = None,
    steps_per_second: float = DEFAULT_STEPS_PER_SECOND,
    link_lifetime_s: int | None = None,
) -> SandboxRuntime:
    """Start the emulator and put the stand-in model in `store`; the caller must `close()` the runtime.

    `store` must be reachable by local processes (the local store served by the bot's HTTP server, or a bucket).
    `time_scale` defaults to `LORABOT_SANDBOX_TIME_SCALE` or 60.
    """
    check_sandbox_allowed(settings)
    if steps_per_second <= 0:
        raise SandboxRefused(f"steps_per_second must be positive, got {steps_per_second:g}")
    scale = sandbox_time_scale() if time_scale is None else time_scale
    lifetime = link_lifetime_s or settings.s3.link_lifetime_s
    data = standin_model_bytes()
    if store.sha256_of(STANDIN_MODEL_KEY) != hashlib.sha256(data).hexdigest():
        store.put_bytes(STANDIN_MODEL_KEY, data)
    model = StandinModel(
        key=STANDIN_MODEL_KEY,
        url=store.presign_get(STANDIN_MODEL_KEY, lifetime),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    hub = StandinHub().start()
    try:
        emulator = RunpodEmulator(time_scale=scale).start()
    except BaseException:
        hub.stop()
        raise
    try:
        return SandboxRuntime(
            emulator=emulator,
            cloud=connect(settings.runpod.api, emulator.api_key, emulator.base_url, base_delay_s=0.05),
            env_recipe=sandbox_recipe(STANDIN_SDSCRIPTS),
            pod_env=(("LORABOT_STANDIN_STEPS_PER_SECOND", repr(float(steps_per_second))),),
            prices=StaticPriceProvider(),
            model=model,
            hub=hub,
        )
    except BaseException:
        emulator.stop()
        hub.stop()
        raise
