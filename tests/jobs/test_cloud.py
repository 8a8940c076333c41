"""lorabot's RunPod transports against the emulator: REST v2 (the default) with RunPod's createPod status table
mapped to error kinds, the retry rules, and the GraphQL fallback over the same account."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobs.cloud import (
    AsyncCloud,
    CandidateForbidden,
    CloudAuthError,
    CloudContractError,
    CloudTransientError,
    InsufficientBalance,
    NoCapacityError,
    PodNotFound,
    PodRequest,
    connect,
)
from jobs.runpod_rest import RestClient, create_pod_body
from jobs.sandbox.emulator import RunpodEmulator
from jobs.sandbox.emulator.contract import runpod_contract

RTX_4090 = "NVIDIA GeForce RTX 4090"
RTX_3090 = "NVIDIA GeForce RTX 3090"


@pytest.fixture
def emulator(make_runpod_emulator) -> RunpodEmulator:
    return make_runpod_emulator(time_scale=600.0)


@pytest.fixture
async def cloud(emulator: RunpodEmulator):
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    cloud = AsyncCloud(RestClient(emulator.api_key, emulator.base_url), base_delay_s=0.01, sleep=sleep)
    cloud.sleeps = sleeps  # type: ignore[attr-defined]
    yield cloud
    await cloud.close()


def gpu_request(volume_id: str, *, gpu: str = RTX_4090, **extra) -> PodRequest:
    return PodRequest(
        name=extra.pop("name", "lorabot-j1-gpu-1"),
        image="runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
        args=extra.pop("args", "sleep 600"),
        env={"LORABOT_STAGE": "train"},
        network_volume_id=volume_id,
        data_center_id="EU-RO-1",
        gpu_type_id=gpu,
        **extra,
    )


def cpu_request(volume_id: str, **extra) -> PodRequest:
    return PodRequest(
        name=extra.pop("name", "lorabot-j1-cpu-1"),
        image="runpod/base:1.0.2-ubuntu2204",
        args="sleep 600",
        env={"LORABOT_STAGE": "prepare"},
        network_volume_id=volume_id,
        data_center_id="EU-RO-1",
        **extra,
    )


async def volume_id(cloud: AsyncCloud) -> str:
    return (await cloud.create_volume("lorabot-eu-ro-1", 30, "EU-RO-1")).id


# -- what a create sends ----------------------------------------------------------------------------------------------


def test_a_gpu_pod_body_names_the_gpu_the_volume_and_its_data_center():
    body = create_pod_body(gpu_request("vol123"))
    assert body == {
        "name": "lorabot-j1-gpu-1",
        "image": "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
        "args": "sleep 600",
        "env": {"LORABOT_STAGE": "train"},
        "disk": 20,
        "cloud": "SECURE",
        "dataCenterIds": ["EU-RO-1"],
        "mounts": {"network": [{"volumeId": "vol123", "path": "/workspace"}]},
        "gpu": {"id": RTX_4090, "count": 1},
    }


def test_a_cpu_pod_body_names_a_flavor_and_a_vcpu_count_and_no_template():
    body = create_pod_body(cpu_request("vol123", cpu_flavor_id="cpu3c", cpu_vcpu_count=4))
    assert body["cpu"] == {"id": "cpu3c", "vcpuCount": 4}
    assert "gpu" not in body and "templateId" not in body


@pytest.mark.parametrize("vcpus", [0, 1, 3, 6])
def test_a_cpu_pod_needs_a_power_of_two_vcpus(vcpus: int):
    with pytest.raises(ValueError, match="power of two"):
        cpu_request("vol123", cpu_vcpu_count=vcpus)


@pytest.mark.parametrize("volume", [None, "vol123"], ids=["no volume", "volume"])
@pytest.mark.parametrize("args", [None, "python3 -c 'print(1)'"], ids=["no args", "args"])
@pytest.mark.parametrize("env", [{}, {"LORABOT_STAGE": "train", "HF_TOKEN": "x"}], ids=["no env", "env"])
@pytest.mark.parametrize(
    "pod",
    [
        {"gpu_type_id": RTX_4090},
        {"gpu_type_id": "NVIDIA RTX A5000", "container_disk_gb": 200},
        {"cpu_flavor_id": "cpu3g", "cpu_vcpu_count": 2, "container_disk_gb": 5},
        {"cpu_flavor_id": "cpu3c", "cpu_vcpu_count": 8},
        {"cpu_flavor_id": "cpu5c", "cpu_vcpu_count": 32},
    ],
    ids=["gpu 4090", "gpu a5000 big disk", "cpu3g 2", "cpu3c 8", "cpu5c 32"],
)
def test_every_create_body_the_adapter_can_make_is_valid_under_runpods_contract(
    volume: str | None, args: str | None, env: dict[str, str], pod: dict[str, object]
):
    request = PodRequest(
        name="lorabot-j1-gpu-2",
        image="runpod/base:1.0.2-ubuntu2204",
        args=args,
        env=env,
        network_volume_id=volume,
        data_center_id="US-KS-2",
        **pod,  # type: ignore[arg-type]
    )
    assert runpod_contract().check_request_body("createPod", create_pod_body(request)) == []


def test_no_request_can_put_the_volume_on_a_community_pod():
    with pytest.raises(ValueError, match="Secure Cloud"):
        gpu_request("vol123", cloud="COMMUNITY")


# -- answers -----------------------------------------------------------------------------------------------------------


async def test_volumes_are_created_and_found_again(cloud: AsyncCloud):
    created = await cloud.create_volume("lorabot-eu-ro-1", 30, "EU-RO-1")
    assert (created.name, created.size_gb, created.data_center_id) == ("lorabot-eu-ro-1", 30, "EU-RO-1")
    assert created in await cloud.list_volumes()


async def test_a_volume_grows_in_place_never_shrinks_and_is_billed_at_its_new_size_from_then_on(
    cloud: AsyncCloud, emulator: RunpodEmulator
):
    created = await cloud.create_volume("lorabot-eu-ro-1", 30, "EU-RO-1")
    grown = await cloud.resize_volume(created.id, 50)
    assert (grown.id, grown.size_gb, grown.data_center_id) == (created.id, 50, "EU-RO-1")
    assert grown in await cloud.list_volumes()
    assert await cloud.resize_volume(created.id, 50) == grown  # asked twice: the same volume
    with pytest.raises(CloudContractError):  # RunPod refuses a size under 10 GB (the request body's schema)
        await cloud.resize_volume(created.id, 5)
    with pytest.raises(Exception, match="only be increased"):
        await cloud.resize_volume(created.id, 40)
    with pytest.raises(Exception, match="not found"):
        await cloud.resize_volume("nope", 60)
    report = next(v for v in emulator.volumes() if v.id == created.id)
    assert report.size_gb == 50
    # within the first started hour: billed at the largest size of that hour
    assert report.cost_micros == 50 * 70_000 // 720 + (1 if 50 * 70_000 % 720 >= 360 else 0)


async def test_gpu_offers_carry_secure_prices_and_the_data_centers_stock(cloud: AsyncCloud, emulator: RunpodEmulator):
    emulator.set_stock(RTX_3090, "SECURE", 0, "EU-RO-1")
    offers = {o.gpu_type_id: o for o in await cloud.list_gpu_offers("EU-RO-1", clouds=("SECURE",))}
    assert offers[RTX_4090].price_micros_per_hr == 690_000 and offers[RTX_4090].available
    assert offers[RTX_4090].memory_gb == 24 and offers[RTX_4090].cloud == "SECURE"
    assert not offers[RTX_3090].available


async def test_cpu_flavors_come_from_the_catalog(cloud: AsyncCloud):
    flavors = {f.id: f for f in await cloud.list_cpu_flavors()}
    assert flavors["cpu3g"].ram_gb_per_vcpu == 4
    assert flavors["cpu3g"].price_micros_per_vcpu_hr * 2 == 80_000  # seed 000's 2 vCPU / 8 GB at $0.08/h


async def test_a_gpu_pod_is_created_provisioning_and_comes_up_running(cloud: AsyncCloud, emulator: RunpodEmulator):
    pod = await cloud.create_pod(gpu_request(await volume_id(cloud)))
    assert pod.status in ("PROVISIONING", "STARTING") and pod.cost_per_hr_micros == 690_000
    assert pod.gpu_type_id == RTX_4090 and pod.env == {"LORABOT_STAGE": "train"}
    emulator.advance(600)
    seen = await cloud.get_pod(pod.id)
    assert seen.is_running and seen.name == "lorabot-j1-gpu-1"
    assert [p.id for p in await cloud.list_pods("lorabot-")] == [pod.id]
    await cloud.terminate_pod(pod.id)
    with pytest.raises(PodNotFound):
        await cloud.get_pod(pod.id)
    await cloud.terminate_pod(pod.id)  # terminating twice is harmless


async def test_a_cpu_pod_costs_its_vcpus_at_the_flavors_price(cloud: AsyncCloud):
    pod = await cloud.create_pod(cpu_request(await volume_id(cloud)))
    assert pod.cost_per_hr_micros == 80_000 and pod.gpu_type_id is None


async def test_no_stock_is_a_refused_candidate(cloud: AsyncCloud, emulator: RunpodEmulator):
    emulator.set_stock(RTX_4090, "SECURE", 0)
    with pytest.raises(NoCapacityError, match="no longer any instances"):
        await cloud.create_pod(gpu_request(await volume_id(cloud)))
    assert emulator.all_pods() == []


async def test_a_pool_the_account_cannot_use_is_forbidden(cloud: AsyncCloud, emulator: RunpodEmulator):
    emulator.forbid(RTX_4090, "SECURE")
    with pytest.raises(CandidateForbidden):
        await cloud.create_pod(gpu_request(await volume_id(cloud)))


async def test_no_balance_is_insufficient_balance(cloud: AsyncCloud, emulator: RunpodEmulator):
    emulator.set_balance(0.10)  # less than one hour of a 4090
    with pytest.raises(InsufficientBalance):
        await cloud.create_pod(gpu_request(await volume_id(cloud)))
    assert emulator.all_pods() == []


async def test_a_body_that_breaks_the_contract_is_our_bug_and_never_retried(
    cloud: AsyncCloud, emulator: RunpodEmulator
):
    volume = await volume_id(cloud)
    before = len(emulator.requests)
    with pytest.raises(CloudContractError) as caught:
        await cloud.create_pod(gpu_request(volume, container_disk_gb=0))  # the contract's disk minimum is 1
    assert caught.value.errors and any("disk" in e for e in caught.value.errors)
    assert len(emulator.requests) == before + 1
    assert emulator.all_pods() == []


async def test_rate_limits_are_waited_out_by_retry_after(cloud: AsyncCloud, emulator: RunpodEmulator):
    volume = await volume_id(cloud)
    emulator.rate_limit_next(2, retry_after_s=3)
    pod = await cloud.create_pod(gpu_request(volume))
    assert pod.id and cloud.sleeps == [3, 3]  # type: ignore[attr-defined]
    assert len(emulator.all_pods()) == 1


async def test_reads_are_retried_after_a_5xx_but_a_create_is_not(cloud: AsyncCloud, emulator: RunpodEmulator):
    volume = await volume_id(cloud)
    emulator.fail_next(1, 503)
    assert await cloud.list_pods() == []
    emulator.fail_next(1, 500)
    with pytest.raises(CloudTransientError):
        await cloud.create_pod(gpu_request(volume))
    emulator.fail_next(1, 502)  # Cloudflare's HTML page, not JSON
    assert await cloud.list_volumes()


async def test_a_refused_key_is_named_without_showing_it(emulator: RunpodEmulator):
    cloud = connect("rest", "rpa_WRONGKEY0123456789", emulator.base_url)
    try:
        with pytest.raises(CloudAuthError) as caught:
            await cloud.list_pods()
    finally:
        await cloud.close()
    assert "401" in str(caught.value) and "WRONGKEY" not in str(caught.value)
    assert "WRONGKEY" not in repr(cloud.client)


async def test_runpods_own_bill_for_a_pod_matches_the_emulators_meter(cloud: AsyncCloud, emulator: RunpodEmulator):
    pod = await cloud.create_pod(cpu_request(await volume_id(cloud)))
    emulator.advance(1800)
    await cloud.terminate_pod(pod.id)
    records = await cloud.pod_billing(pod.id)
    report = emulator.pod(pod.id)
    assert records and {r.pod_id for r in records} == {pod.id}
    compute = sum(r.cpu_micros for r in records)
    assert sum(r.gpu_micros for r in records) == 0
    assert abs(compute - report.cost_micros) <= 1
    disk = sum(r.disk_micros for r in records)
    assert disk > 0  # 20 GB of container disk at $0.10/GB/month, for half an hour
    assert sum(r.total_micros for r in records) == pytest.approx(compute + disk, abs=2)


# -- the GraphQL fallback ----------------------------------------------------------------------------------------------


async def test_the_graphql_fallback_sees_the_same_account(emulator: RunpodEmulator):
    rest, graphql = (
        connect("rest", emulator.api_key, emulator.base_url),
        connect("graphql", emulator.api_key, emulator.base_url),
    )
    try:
        volume = await rest.create_volume("lorabot-eu-ro-1", 30, "EU-RO-1")
        assert volume in await graphql.list_volumes()
        pod = await graphql.create_pod(gpu_request(volume.id))  # the SDK's create answer carries no price
        seen = await rest.get_pod(pod.id)
        assert (seen.name, seen.cost_per_hr_micros) == ("lorabot-j1-gpu-1", 690_000)
        assert (await graphql.get_pod(pod.id)).cost_per_hr_micros == 690_000
        emulator.advance(600)
        assert (await graphql.get_pod(pod.id)).is_running
        await rest.terminate_pod(pod.id)
        with pytest.raises(PodNotFound):
            await graphql.get_pod(pod.id)
    finally:
        await rest.close()
        await graphql.close()


def test_the_runpod_sdk_is_imported_only_for_the_graphql_fallback():
    code = (
        "import sys, jobs.cloud, jobs.runpod_rest, jobs.orchestrator, bot.app, bot.cli;"
        "assert 'runpod' not in sys.modules, 'the runpod SDK was imported';"
        "jobs.cloud.connect('graphql', 'k', 'http://127.0.0.1:9');"
        "assert 'runpod' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
