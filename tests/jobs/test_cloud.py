"""The RunPod wrapper against the emulator, through the real SDK: shapes, errors mapped at the edge, retries."""

from __future__ import annotations

from decimal import Decimal

import pytest

from jobs.cloud import (
    AsyncCloud,
    CloudAuthError,
    CloudTransientError,
    NoCapacityError,
    PodNotFound,
    PodRequest,
    RunpodClient,
)
from jobs.sandbox.emulator import RunpodEmulator

RTX_4090 = "NVIDIA GeForce RTX 4090"


@pytest.fixture
def emulator(make_runpod_emulator) -> RunpodEmulator:
    return make_runpod_emulator(time_scale=600.0)


@pytest.fixture
def cloud(emulator: RunpodEmulator) -> AsyncCloud:
    return AsyncCloud(RunpodClient(emulator.api_key, emulator.base_url), base_delay_s=0.01)


def request(volume_id: str, *, gpu: str | None = RTX_4090, cloud: str = "COMMUNITY", **extra) -> PodRequest:
    return PodRequest(
        name=extra.pop("name", "lorabot-j1-gpu"),
        image="runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
        docker_args=extra.pop("docker_args", "sleep 600"),
        env={"LORABOT_STAGE": "train"},
        network_volume_id=volume_id,
        data_center_id="EU-RO-1",
        gpu_type_id=gpu,
        cloud=cloud,  # type: ignore[arg-type]
        **extra,
    )


async def test_volumes_are_created_and_found_again(cloud: AsyncCloud):
    created = await cloud.create_volume("lorabot-eu-ro-1", 30, "EU-RO-1")
    assert (created.name, created.size_gb, created.data_center_id) == ("lorabot-eu-ro-1", 30, "EU-RO-1")
    assert created in await cloud.list_volumes()


async def test_gpu_offers_carry_prices_and_stock_per_cloud(cloud: AsyncCloud, emulator: RunpodEmulator):
    emulator.set_stock(RTX_4090, "COMMUNITY", 0)
    offers = {(o.gpu_type_id, o.cloud): o for o in await cloud.list_gpu_offers("EU-RO-1")}
    community, secure = offers[(RTX_4090, "COMMUNITY")], offers[(RTX_4090, "SECURE")]
    assert community.price_micros_per_hr == 440_000 and secure.price_micros_per_hr == 690_000
    assert not community.available and secure.available
    assert secure.memory_gb == 24


async def test_a_gpu_pod_is_created_seen_and_terminated_idempotently(cloud: AsyncCloud, emulator: RunpodEmulator):
    volume = await cloud.create_volume("v", 30, "EU-RO-1")
    pod = await cloud.create_pod(request(volume.id))
    seen = await cloud.get_pod(pod.id)
    assert seen.name == "lorabot-j1-gpu" and seen.cost_per_hr_micros == 440_000
    assert [p.id for p in await cloud.list_pods("lorabot-")] == [pod.id]
    await cloud.terminate_pod(pod.id)
    await cloud.terminate_pod(pod.id)  # already gone: no error
    with pytest.raises(PodNotFound):
        await cloud.get_pod(pod.id)
    assert await cloud.list_pods("lorabot-") == []


async def test_a_cpu_pod_uses_deploy_cpu_pod(cloud: AsyncCloud, emulator: RunpodEmulator):
    volume = await cloud.create_volume("v", 30, "EU-RO-1")
    pod = await cloud.create_pod(request(volume.id, gpu=None, cloud="SECURE", name="lorabot-j1-cpu"))
    report = emulator.pod(pod.id)
    assert report.kind == "cpu" and report.cpu_instance_id == "cpu3c-2-4"
    assert "mutation deployCpuPod" in [r.operation for r in emulator.requests]


async def test_no_stock_is_its_own_exception(cloud: AsyncCloud, emulator: RunpodEmulator):
    volume = await cloud.create_volume("v", 30, "EU-RO-1")
    emulator.set_stock(RTX_4090, "COMMUNITY", 0)
    with pytest.raises(NoCapacityError, match="no longer any instances available"):
        await cloud.create_pod(request(volume.id))


async def test_a_spot_pod_is_rented_with_a_bid(cloud: AsyncCloud, emulator: RunpodEmulator):
    volume = await cloud.create_volume("v", 30, "EU-RO-1")
    pod = await cloud.create_pod(request(volume.id, spot_bid_per_gpu=Decimal("0.35")))
    assert emulator.pod(pod.id).spot


async def test_a_refused_key_is_an_auth_error_without_the_key_in_it(emulator: RunpodEmulator):
    client = RunpodClient("rpa_wrongkey_0123456789", emulator.base_url)
    with pytest.raises(CloudAuthError) as caught:
        await AsyncCloud(client).list_pods()
    assert "rpa_wrongkey" not in str(caught.value) and "rpa_wrongkey" not in repr(client)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_reads_are_retried_through_server_errors(cloud: AsyncCloud, emulator: RunpodEmulator, status: int):
    emulator.fail_next(2, status=status)
    assert await cloud.list_pods() == []


async def test_a_terminate_is_retried_and_the_caller_sees_each_try(cloud: AsyncCloud, emulator: RunpodEmulator):
    """The try that took effect is the last one: the ledger times the pod's end by it, not by the first 5xx."""
    volume = await cloud.create_volume("v", 30, "EU-RO-1")
    pod = await cloud.create_pod(request(volume.id))
    tries: list[str] = []
    emulator.fail_next(2, status=503)
    await cloud.terminate_pod(pod.id, on_attempt=lambda: tries.append("try"))
    assert tries == ["try", "try", "try"]
    assert emulator.pod(pod.id).terminated_at is not None


async def test_a_create_is_never_retried_blindly(cloud: AsyncCloud, emulator: RunpodEmulator):
    """A create that failed may still have made a pod: the orchestrator looks its name up instead."""
    volume = await cloud.create_volume("v", 30, "EU-RO-1")
    emulator.fail_next(1, status=502)
    with pytest.raises(CloudTransientError):
        await cloud.create_pod(request(volume.id))
    assert emulator.all_pods() == []


def test_values_that_would_break_the_sdks_graphql_are_refused():
    with pytest.raises(ValueError, match="quotes"):
        request("v", docker_args='bash -c "echo hi"')
    with pytest.raises(ValueError, match="quotes"):
        PodRequest(
            name="x",
            image="i",
            docker_args="a",
            env={"K": "line\nbreak"},
            network_volume_id="v",
            data_center_id="EU-RO-1",
        )
