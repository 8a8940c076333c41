"""The sandbox cloud: chosen only without a RunPod key (or by name), RunPod's prices on a simulated clock, a stand-in
base model that sandbox jobs download, and nothing left running after close()."""

from __future__ import annotations

import hashlib
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from safetensors import safe_open

from jobs.cloud import PodRequest
from jobs.config import Settings, load_settings
from jobs.prices import StaticPriceProvider
from jobs.queue import JobPlan, ModelFileRef
from jobs.sandbox.cloud import (
    DEFAULT_TIME_SCALE,
    STANDIN_MODEL_KEY,
    SandboxRefused,
    SandboxRuntime,
    sandbox_time_scale,
    start_sandbox,
)
from storage.artifacts_local import LocalArtifactStore
from storage.http import add_artifact_routes

RUNPOD_KEY = "rpa_0123456789ABCDEFSECRETSECRET"


def settings(**env: str) -> Settings:
    """Settings from exactly these variables (nothing from the machine's environment)."""
    return load_settings(env=env)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture
def store(tmp_path: Path, listener: socket.socket) -> LocalArtifactStore:
    port = listener.getsockname()[1]
    return LocalArtifactStore(
        tmp_path / "artifacts", base_url=f"http://127.0.0.1:{port}", secret=secrets.token_bytes(32)
    )


@pytest.fixture
async def served_store(store: LocalArtifactStore, listener: socket.socket) -> AsyncIterator[LocalArtifactStore]:
    """The store behind the bot's artifact routes, as pods reach it."""
    app = web.Application()
    add_artifact_routes(app, store)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, listener).start()
    yield store
    await runner.cleanup()


@pytest.fixture
def runtime(store: LocalArtifactStore) -> Iterator[SandboxRuntime]:
    started = start_sandbox(settings(), store, time_scale=120)
    yield started
    started.close()


# -- when the sandbox may run ---------------------------------------------------------------------------------------


def test_without_a_runpod_key_the_sandbox_is_the_default_cloud(store: LocalArtifactStore):
    config = settings()
    assert config.effective_cloud == "sandbox"

    runtime = start_sandbox(config, store, time_scale=120)
    try:
        assert runtime.time_scale == 120
        assert "sandbox" in runtime.note and "$0 real money" in runtime.note
    finally:
        runtime.close()


def test_a_configured_runpod_key_refuses_the_sandbox_and_starts_nothing(store: LocalArtifactStore):
    with pytest.raises(SandboxRefused) as refused:
        start_sandbox(settings(RUNPOD_API_KEY=RUNPOD_KEY), store)

    message = str(refused.value)
    assert "a RunPod API key is configured" in message
    assert "LORABOT_CLOUD=sandbox" in message
    assert RUNPOD_KEY not in message
    assert store.list() == []  # not even the stand-in model was written


def test_a_runpod_key_with_lorabot_cloud_sandbox_runs_the_sandbox(store: LocalArtifactStore):
    runtime = start_sandbox(settings(RUNPOD_API_KEY=RUNPOD_KEY, LORABOT_CLOUD="sandbox"), store, time_scale=120)
    try:
        # The sandbox's cloud talks to the emulator with the emulator's own key, never the operator's.
        assert runtime.emulator.api_key != RUNPOD_KEY
        assert RUNPOD_KEY not in repr(runtime.cloud.client)
    finally:
        runtime.close()


def test_lorabot_cloud_runpod_refuses_the_sandbox_even_without_a_key(store: LocalArtifactStore):
    with pytest.raises(SandboxRefused, match="LORABOT_CLOUD=runpod asks for real pods"):
        start_sandbox(settings(LORABOT_CLOUD="runpod"), store)


def test_the_time_scale_comes_from_the_environment_with_a_clear_refusal():
    assert sandbox_time_scale({}) == DEFAULT_TIME_SCALE == 60
    assert sandbox_time_scale({"LORABOT_SANDBOX_TIME_SCALE": "120"}) == 120
    with pytest.raises(SandboxRefused, match="LORABOT_SANDBOX_TIME_SCALE must be a number like 60, got 'fast'"):
        sandbox_time_scale({"LORABOT_SANDBOX_TIME_SCALE": "fast"})
    with pytest.raises(SandboxRefused, match=r"between 1 and 10000, got 0\.5"):
        sandbox_time_scale({"LORABOT_SANDBOX_TIME_SCALE": "0.5"})


# -- what it provides --------------------------------------------------------------------------------------------------


async def test_the_sandbox_sells_at_runpods_prices(runtime: SandboxRuntime):
    offers = await runtime.cloud.list_gpu_offers("EU-RO-1", clouds=("SECURE",))
    table = StaticPriceProvider().get_table()
    rtx4090 = {o.cloud: o.price_micros_per_hr for o in offers if o.gpu_type_id == "NVIDIA GeForce RTX 4090"}

    assert rtx4090 == {"SECURE": table.gpu("4090").price("secure")} and rtx4090["SECURE"] == 690_000
    assert runtime.prices.get_table() == table


async def test_the_standin_model_downloads_through_its_signed_link_as_valid_safetensors(
    served_store: LocalArtifactStore, tmp_path: Path
):
    runtime = start_sandbox(settings(), served_store, time_scale=120)
    try:
        async with aiohttp.ClientSession() as http, http.get(runtime.model.url) as response:
            assert response.status == 200
            body = await response.read()
    finally:
        runtime.close()

    assert hashlib.sha256(body).hexdigest() == runtime.model.sha256 == served_store.sha256_of(STANDIN_MODEL_KEY)
    assert len(body) == runtime.model.size
    path = tmp_path / "model.safetensors"
    path.write_bytes(body)
    with safe_open(str(path), "np") as model:
        assert list(model.keys()) == []
        assert "stand-in" in model.metadata()["lorabot"]


def test_sandbox_jobs_download_the_standin_under_the_catalogs_file_name(runtime: SandboxRuntime):
    planned = JobPlan(
        script="sdxl_train_network.py",
        args=["--pretrained_model_name_or_path={model_path}"],
        files={},
        epochs=3,
        sample_prompts=2,
        output_name="lbdemo",
        base_model="illustrious-xl-v0.1",
        model=ModelFileRef(
            url="https://huggingface.co/OnomaAIResearch/Illustrious-xl-early-release-v0/resolve/main/x.safetensors",
            filename="Illustrious-XL-v0.1.safetensors",
            size=6_938_078_334,
            sha256="ab" * 32,
            token_env="HF_TOKEN",
        ),
        gpu_id="NVIDIA GeForce RTX 4090",
        estimate_micros={"community": 100_000},
        total_steps=72,
        training_seconds=40,
    )

    rewritten = runtime.rewrite_plan_model(planned)

    assert rewritten.model == ModelFileRef(
        url=runtime.model.url,
        filename="Illustrious-XL-v0.1.safetensors",
        size=runtime.model.size,
        sha256=runtime.model.sha256,
        token_env=None,
    )
    assert JobPlan.from_json(rewritten.to_json()) == rewritten
    assert (rewritten.args, rewritten.total_steps) == (planned.args, planned.total_steps)


def test_the_orchestrator_config_keeps_the_operators_settings_and_adds_the_trainer_speed(runtime: SandboxRuntime):
    config = runtime.orchestrator_config(settings(RUNPOD_DATA_CENTERS='["EU-SE-1"]'), status_interval_s=1.0)

    assert config.data_center_id == "EU-SE-1"
    assert config.status_interval_s == 1.0
    assert dict(config.pod_env) == {"LORABOT_STANDIN_STEPS_PER_SECOND": "2.0"}


async def test_close_kills_every_sandbox_pod_and_can_be_called_twice(runtime: SandboxRuntime):
    volume = await runtime.cloud.create_volume("lorabot-eu-ro-1", 10, "EU-RO-1")
    request = PodRequest(
        name="lorabot-j1-cpu",
        image="runpod/base:1.0.2-ubuntu2204",
        args="sleep 600",
        env={},
        network_volume_id=volume.id,
        data_center_id="EU-RO-1",
    )
    pod = await runtime.cloud.create_pod(request)
    runtime.emulator.wait_until(lambda: runtime.emulator.pod(pod.id).process_alive, what="the pod's process")

    runtime.close()
    runtime.close()

    assert not runtime.emulator.pod(pod.id).process_alive
