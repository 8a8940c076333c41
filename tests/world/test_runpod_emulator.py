"""The RunPod emulator, seen through the real, unmodified `runpod` SDK (and raw GraphQL where the SDK stops)."""

from __future__ import annotations

import pytest
import runpod
from runpod.error import AuthenticationError, QueryError

from jobs.sandbox.emulator import COMMUNITY, NO_STOCK, SECURE, RunpodEmulator
from tests.world.fixtures_runpod import EmulatorFactory, runpod_graphql

RTX_4090 = "NVIDIA GeForce RTX 4090"
GPU_STARTUP_S = 120  # the emulator's default GPU start-up delay, in sim seconds
CPU_STARTUP_S = 30

SPOT_MUTATION = """
mutation rentSpot($input: PodRentInterruptableInput!) {
  podRentInterruptable(input: $input) { id costPerHr podType desiredStatus machine { podHostId gpuDisplayName } }
}
"""


def _spot_input(**overrides: object) -> dict[str, object]:
    spot: dict[str, object] = {
        "name": "lorabot-j7-gpu",
        "imageName": "runpod/pytorch",
        "gpuTypeId": RTX_4090,
        "cloudType": "COMMUNITY",
        "gpuCount": 1,
        "bidPerGpu": 0.30,
        "dockerArgs": "sleep 1000",
        "volumeMountPath": "/workspace",
        "env": [{"key": "LORABOT_STAGE", "value": "train"}],
    }
    spot.update(overrides)
    return spot


async def test_get_gpus_lists_the_catalog_and_get_gpu_has_prices_per_cloud(runpod_emulator: RunpodEmulator) -> None:
    """get_gpus() answers id/displayName/memoryInGb; get_gpu() has secure, community and spot prices."""
    gpus = runpod.get_gpus()
    assert {"id": RTX_4090, "displayName": "RTX 4090", "memoryInGb": 24} in gpus

    gpu = runpod.get_gpu(RTX_4090)
    assert (gpu["securePrice"], gpu["communityPrice"]) == (0.69, 0.44)
    assert (gpu["secureSpotPrice"], gpu["communitySpotPrice"]) == (0.35, 0.29)
    assert gpu["secureCloud"] is True and gpu["communityCloud"] is True
    assert gpu["lowestPrice"] == {"minimumBidPrice": 0.29, "uninterruptablePrice": 0.44}


async def test_unknown_gpu_id_is_refused_by_the_sdks_own_pre_query(runpod_emulator: RunpodEmulator) -> None:
    """gpuTypes(input:{id}) answers [] for an unknown id, so create_pod raises ValueError before deploying."""
    with pytest.raises(ValueError, match="No GPU found"):
        runpod.create_pod("x", "img", "NVIDIA GeForce RTX 9999")
    assert runpod_emulator.all_pods() == []


async def test_gpu_pod_on_a_network_volume_lands_in_the_volumes_data_center(runpod_emulator: RunpodEmulator) -> None:
    """The SDK looks the volume's data center up (myself.networkVolumes) and the pod is placed there."""
    volume = runpod_emulator.create_volume("lorabot-cache", 30, "US-KS-2")
    created = runpod.create_pod(
        "lorabot-j1-gpu",
        "runpod/pytorch:2.4.0",
        RTX_4090,
        cloud_type="SECURE",
        network_volume_id=volume.id,
        volume_mount_path="/workspace",
        docker_args="sleep 1000",
        env={"LORABOT_STAGE": "train"},
    )
    assert set(created) == {"id", "imageName", "env", "machineId", "machine"}
    assert len(created["id"]) == 14 and created["id"].isalnum() and created["id"].islower()
    assert created["env"] == ["LORABOT_STAGE=train"]
    assert created["machine"]["podHostId"].startswith(created["id"] + "-")

    record = runpod_emulator.pod(created["id"])
    assert (record.data_center_id, record.cloud, record.volume_id) == ("US-KS-2", SECURE, volume.id)
    assert record.cost_per_hr_micros == 690_000
    assert [r.operation for r in runpod_emulator.requests] == [
        "query gpuTypes",
        "query myself",
        "mutation podFindAndDeployOnDemand",
    ]


async def test_get_pod_shows_runtime_null_until_the_start_up_delay_has_passed(
    runpod_emulator: RunpodEmulator,
) -> None:
    pod_id = runpod.create_pod("lorabot-j1-gpu", "img", RTX_4090, docker_args="sleep 1000")["id"]
    pod = runpod.get_pod(pod_id)
    assert (pod["desiredStatus"], pod["runtime"], pod["uptimeSeconds"]) == ("RUNNING", None, 0)
    assert pod["machine"] == {"gpuDisplayName": "RTX 4090"}

    runpod_emulator.advance(GPU_STARTUP_S)
    pod = runpod.get_pod(pod_id)
    assert pod["desiredStatus"] == "RUNNING"
    assert pod["runtime"] == {"ports": []}
    assert pod["costPerHr"] == 0.44  # cloud ALL takes the cheapest cloud with stock: community


async def test_cpu_pod_is_deployed_with_deploy_cpu_pod_and_priced_by_its_flavor(
    runpod_emulator: RunpodEmulator,
) -> None:
    """Without gpu_type_id the SDK sends deployCpuPod; cpu3g-2-8 is seed 000's 2 vCPU / 8 GB at $0.08/h."""
    created = runpod.create_pod(
        "lorabot-j1-cpu", "runpod/base:1.0.2-ubuntu2204", instance_id="cpu3g-2-8", docker_args="sleep 1000"
    )
    pod = runpod.get_pod(created["id"])
    assert (pod["gpuCount"], pod["vcpuCount"], pod["memoryInGb"], pod["costPerHr"]) == (0, 2, 8, 0.08)
    assert runpod_emulator.requests[-2].operation == "mutation deployCpuPod"

    runpod_emulator.advance(CPU_STARTUP_S)
    assert runpod.get_pod(created["id"])["runtime"] is not None


async def test_cpu_pod_with_an_instance_id_runpod_does_not_sell_is_refused(runpod_emulator: RunpodEmulator) -> None:
    with pytest.raises(QueryError, match="Invalid instance id: cpu3c-2-8"):
        runpod.create_pod("x", "img", instance_id="cpu3c-2-8")


async def test_stop_resume_terminate_walk_a_pod_through_its_life(runpod_emulator: RunpodEmulator) -> None:
    pod_id = runpod.create_pod("lorabot-j2-gpu", "img", RTX_4090, docker_args="sleep 1000")["id"]
    runpod_emulator.advance(GPU_STARTUP_S)
    assert [p["id"] for p in runpod.get_pods()] == [pod_id]

    assert runpod.stop_pod(pod_id) == {"id": pod_id, "desiredStatus": "EXITED"}
    stopped = runpod.get_pod(pod_id)
    assert (stopped["desiredStatus"], stopped["runtime"]) == ("EXITED", None)

    resumed = runpod.resume_pod(pod_id, 1)
    assert resumed["desiredStatus"] == "RUNNING"
    runpod_emulator.advance(GPU_STARTUP_S)
    assert runpod.get_pod(pod_id)["runtime"] is not None

    assert runpod.terminate_pod(pod_id) is None
    assert runpod.get_pods() == []
    assert runpod.get_pod(pod_id) is None
    assert runpod_emulator.pod(pod_id).state == "TERMINATED"


async def test_no_stock_gives_runpods_error_and_terminate_gives_the_unit_back(
    runpod_emulator: RunpodEmulator,
) -> None:
    runpod_emulator.set_stock(RTX_4090, COMMUNITY, 0)
    runpod_emulator.set_stock(RTX_4090, SECURE, 1, data_center_id="EU-RO-1")
    runpod_emulator.set_stock(RTX_4090, SECURE, 0, data_center_id="US-KS-2")
    runpod_emulator.set_stock(RTX_4090, SECURE, 0, data_center_id="EU-SE-1")
    first = runpod.create_pod("a", "img", RTX_4090, cloud_type="ALL")
    assert runpod_emulator.pod(first["id"]).cloud == SECURE

    with pytest.raises(QueryError) as caught:
        runpod.create_pod("b", "img", RTX_4090, cloud_type="ALL")
    assert str(caught.value) == NO_STOCK
    assert "no longer any instances available" in str(caught.value)

    runpod.terminate_pod(first["id"])
    assert runpod_emulator.stock(RTX_4090, SECURE) == 1
    runpod.create_pod("b", "img", RTX_4090)


async def test_wrong_key_is_http_401_and_the_sdk_raises_authentication_error(
    runpod_emulator: RunpodEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runpod, "api_key", "rpa_WRONG")
    with pytest.raises(AuthenticationError):
        runpod.get_pods()
    assert runpod_graphql(runpod_emulator, "{ myself { id } }", api_key="").status_code == 401
    assert runpod_emulator.requests[-1].http_status == 401


async def test_the_key_may_also_come_as_the_api_key_query_parameter(runpod_emulator: RunpodEmulator) -> None:
    """RunPod's docs and older clients send `?api_key=`; the SDK 1.12 sends a Bearer header."""
    import requests

    answer = requests.post(
        f"{runpod_emulator.graphql_url}?api_key={runpod_emulator.api_key}",
        json={"query": "{ myself { pods { id } } }"},
        timeout=5,
    )
    assert answer.json() == {"data": {"myself": {"pods": []}}}


async def test_spot_pod_via_graphql_variables_costs_its_bid(runpod_emulator: RunpodEmulator) -> None:
    answer = runpod_graphql(runpod_emulator, SPOT_MUTATION, {"input": _spot_input(bidPerGpu=0.31)})
    assert answer.status_code == 200
    pod = answer.json()["data"]["podRentInterruptable"]
    assert (pod["costPerHr"], pod["podType"], pod["desiredStatus"]) == (0.31, "INTERRUPTABLE", "RUNNING")
    assert runpod_emulator.pod(pod["id"]).spot is True


async def test_a_bid_under_the_minimum_is_refused(runpod_emulator: RunpodEmulator) -> None:
    answer = runpod_graphql(runpod_emulator, SPOT_MUTATION, {"input": _spot_input(bidPerGpu=0.10)})
    body = answer.json()
    assert answer.status_code == 200 and body["data"] == {"podRentInterruptable": None}
    assert body["errors"][0]["message"].startswith("Your bid price is lower than the minimum bid of $0.290/hr")
    assert body["errors"][0]["path"] == ["podRentInterruptable"]
    assert runpod_emulator.all_pods() == []


async def test_a_spot_pod_cannot_be_resumed_on_demand(runpod_emulator: RunpodEmulator) -> None:
    pod_id = runpod_graphql(runpod_emulator, SPOT_MUTATION, {"input": _spot_input()}).json()["data"][
        "podRentInterruptable"
    ]["id"]
    runpod_emulator.interrupt(pod_id)
    interrupted = runpod.get_pod(pod_id)
    assert (interrupted["desiredStatus"], interrupted["runtime"]) == ("EXITED", None)
    with pytest.raises(QueryError, match=r"Cannot resume a spot pod as an on demand pod\."):
        runpod.resume_pod(pod_id, 1)


async def test_terminating_an_unknown_pod_is_an_error_whose_path_names_pod_terminate(
    runpod_emulator: RunpodEmulator,
) -> None:
    """dstack treats this answer as "already gone": terminate stays idempotent for callers."""
    with pytest.raises(QueryError, match="pod not found to terminate"):
        runpod.terminate_pod("doesnotexist00")
    body = runpod_graphql(runpod_emulator, 'mutation { podTerminate(input: {podId: "nope"}) }').json()
    assert body["errors"][0]["path"] == ["podTerminate"]
    assert body["data"] == {"podTerminate": None}


async def test_a_volume_in_another_data_center_cannot_be_attached(runpod_emulator: RunpodEmulator) -> None:
    volume = runpod_emulator.create_volume("v", 30, "EU-RO-1")
    with pytest.raises(QueryError, match="is in data center EU-RO-1; it can't be attached to a pod in US-KS-2"):
        runpod.create_pod("x", "img", RTX_4090, data_center_id="US-KS-2", network_volume_id=volume.id)


async def test_network_volumes_are_created_listed_and_deleted_over_graphql(runpod_emulator: RunpodEmulator) -> None:
    created = runpod_graphql(
        runpod_emulator,
        "mutation($input: CreateNetworkVolumeInput!) {"
        " createNetworkVolume(input: $input) { id name size dataCenterId } }",
        {"input": {"name": "lorabot-eu-ro-1", "size": 30, "dataCenterId": "EU-RO-1"}},
    ).json()["data"]["createNetworkVolume"]
    assert created["name"] == "lorabot-eu-ro-1" and created["size"] == 30
    assert runpod_emulator.volume_path(created["id"]).is_dir()

    listed = runpod_graphql(
        runpod_emulator, "{ myself { networkVolumes { id dataCenterId dataCenter { id name } } } }"
    ).json()["data"]["myself"]["networkVolumes"]
    assert listed == [
        {"id": created["id"], "dataCenterId": "EU-RO-1", "dataCenter": {"id": "EU-RO-1", "name": "EU-RO-1"}}
    ]

    delete = 'mutation { deleteNetworkVolume(input: {id: "' + created["id"] + '"}) }'  # as dstack sends it
    assert runpod_graphql(runpod_emulator, delete).json() == {"data": {"deleteNetworkVolume": None}}
    again = runpod_graphql(runpod_emulator, delete).json()
    assert "Tried to delete nonexistent network volume" in again["errors"][0]["message"]
    assert not runpod_emulator.volume_path(created["id"]).exists()


async def test_badly_typed_input_is_refused_before_anything_is_created(runpod_emulator: RunpodEmulator) -> None:
    answer = runpod_graphql(runpod_emulator, SPOT_MUTATION, {"input": _spot_input(gpuCount="two")})
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["message"] == 'Int cannot represent non-integer value: "two"'
    literal = runpod_graphql(
        runpod_emulator,
        'mutation { podFindAndDeployOnDemand(input: {gpuTypeId: "' + RTX_4090 + '", cloudType: "SECURE"}) { id } }',
    )
    assert literal.json()["errors"][0]["message"] == 'Value "SECURE" does not exist in "CloudTypeEnum" enum.'
    assert runpod_emulator.all_pods() == []


async def test_a_double_quote_in_docker_args_breaks_the_sdks_unescaped_query(runpod_emulator: RunpodEmulator) -> None:
    """The SDK pastes dockerArgs into the query text without escaping, so RunPod (and the emulator) can't
    parse it: a start command with `"` must be sent with GraphQL variables instead."""
    with pytest.raises(QueryError, match="Syntax Error"):
        runpod.create_pod("x", "img", RTX_4090, docker_args='python3 -c "print(1)"')
    assert runpod_emulator.all_pods() == []


async def test_unknown_fields_and_operations_are_errors_and_recorded_as_failures(
    runpod_emulator: RunpodEmulator,
) -> None:
    body = runpod_graphql(runpod_emulator, "{ myself { pods { id gpuTemperature } } }").json()
    assert body["errors"][0]["message"] == 'Cannot query field "gpuTemperature" on type "Pod".'
    body = runpod_graphql(runpod_emulator, 'mutation { podReboot(input: {podId: "x"}) { id } }').json()
    assert body["errors"][0]["message"] == 'Cannot query field "podReboot" on type "Mutation".'
    assert len(runpod_emulator.failures) == 2


@pytest.mark.parametrize("status", [500, 502])
async def test_injected_server_errors_reach_the_sdk(runpod_emulator: RunpodEmulator, status: int) -> None:
    runpod_emulator.fail_next(1, status=status)
    with pytest.raises(Exception) as caught:  # the SDK has no error type for 5xx: it fails decoding or reading
        runpod.get_pods()
    assert not isinstance(caught.value, AuthenticationError)
    assert runpod_emulator.requests[-1].http_status == status
    assert runpod.get_pods() == []  # only the next call fails


async def test_a_dropped_connection_is_a_connection_error(runpod_emulator: RunpodEmulator) -> None:
    import requests

    runpod_emulator.fail_next(1, status="disconnect")
    with pytest.raises(requests.ConnectionError):
        runpod.get_pods()


async def test_a_timeout_fault_holds_the_request_past_the_clients_patience(
    make_runpod_emulator: EmulatorFactory,
) -> None:
    import requests

    emulator = make_runpod_emulator(timeout_hold_s=5.0)
    emulator.fail_next(1, status="timeout")
    with pytest.raises(requests.Timeout):
        requests.post(emulator.graphql_url, json={"query": "{ myself { id } }"}, timeout=0.3)
    assert runpod.get_pods() == []
