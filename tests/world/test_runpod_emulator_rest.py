"""The emulator's RunPod REST v2 front, called raw (requests) the way a v2 client calls RunPod."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import requests

from jobs.sandbox.emulator import COMMUNITY, NO_STOCK, SECURE, RunpodEmulator
from jobs.sandbox.emulator import rest as rest_module
from jobs.sandbox.emulator.pod_billing import disk_cost_micros
from tests.world import fixtures_runpod
from tests.world.fixtures_runpod import EmulatorFactory, runpod_graphql

RTX_4090 = "NVIDIA GeForce RTX 4090"
RTX_3090 = "NVIDIA GeForce RTX 3090"
L4 = "NVIDIA L4"  # offered in Secure Cloud only
PROBLEM = "application/problem+json"


@pytest.fixture
def emulator(make_runpod_emulator: EmulatorFactory) -> RunpodEmulator:
    # One sim second per real second: time moves by advance(), near enough.
    return make_runpod_emulator(time_scale=1.0)


class Client:
    def __init__(self, emulator: RunpodEmulator, key: str | None = None) -> None:
        self.url = emulator.rest_url
        self.headers = {"Authorization": f"Bearer {emulator.api_key if key is None else key}"}

    def call(self, method: str, path: str, body: Any = None, **params: str) -> requests.Response:
        return requests.request(
            method, self.url + path, json=body, params=params or None, headers=self.headers, timeout=10
        )

    def create(self, body: dict[str, Any]) -> requests.Response:
        return self.call("POST", "/v2/pods", body)

    def get(self, path: str, **params: str) -> requests.Response:
        return self.call("GET", path, **params)


@pytest.fixture
def client(emulator: RunpodEmulator) -> Client:
    return Client(emulator)


def _gpu_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "lorabot-j1-gpu", "image": "runpod/pytorch", "gpu": {"id": RTX_4090, "count": 1}}
    body.update(overrides)
    return body


def _cpu_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "lorabot-j1-cpu", "image": "runpod/base", "cpu": {"id": "cpu3g", "vcpuCount": 2}}
    body.update(overrides)
    return body


def _problem(answer: requests.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith(PROBLEM)
    body: dict[str, Any] = answer.json()
    assert (body["status"], isinstance(body["title"], str), isinstance(body["detail"], str)) == (status, True, True)
    return body


# ----- requests the v2 client sends are accepted -----


def test_every_option_of_a_gpu_pod_on_a_volume_is_accepted_and_shown_back(
    emulator: RunpodEmulator, client: Client
) -> None:
    volume = emulator.create_volume("lorabot-cache", 30, "US-KS-2")
    answer = client.create(
        _gpu_body(
            cloud="SECURE",
            dataCenterIds=["EU-RO-1", "US-KS-2"],
            args="python3 /workspace/agent.py --stage train",
            env={"LORABOT_STAGE": "train", "LORABOT_VOLUME": "/workspace"},
            disk=40,
            ports=["8888/http", "22/tcp"],
            mounts={"network": [{"volumeId": volume.id, "path": "/workspace"}]},
        )
    )
    assert answer.status_code == 201, answer.text
    pod = answer.json()
    assert (pod["status"], pod["actions"], pod["runtime"], pod["startedAt"]) == (
        "PROVISIONING",
        ["stop", "terminate"],
        None,
        None,
    )
    assert pod["gpu"] == {"id": RTX_4090, "count": 1} and "cpu" not in pod
    assert pod["mounts"] == {"network": [{"volumeId": volume.id, "path": "/workspace"}]}
    assert (pod["dataCenterId"], pod["cloud"], pod["cost"], pod["disk"]) == ("US-KS-2", SECURE, 0.69, 40)
    assert pod["env"] == {"LORABOT_STAGE": "train", "LORABOT_VOLUME": "/workspace"}
    assert (pod["args"], pod["image"], pod["ports"]) == (
        "python3 /workspace/agent.py --stage train",
        "runpod/pytorch",
        ["8888/http", "22/tcp"],
    )
    record = emulator.pod(pod["id"])
    assert (record.volume_id, record.volume_mount_path, record.data_center_id) == (volume.id, "/workspace", "US-KS-2")
    assert emulator.requests[-1].operation == "createPod" and emulator.requests[-1].http_status == 201


@pytest.mark.parametrize(
    "body",
    [
        _gpu_body(),
        _gpu_body(cloud="COMMUNITY", gpu={"id": RTX_3090, "count": 2}),
        _gpu_body(gpu={"id": RTX_4090, "allowedCudaVersions": ["12.4", "12.8"], "minCudaVersion": "12.4"}),
        _gpu_body(dataCenterIds=[], env={}, ports=[], args=""),
        _gpu_body(mounts={"persistent": {"size": 20, "path": "/data"}}),
        _cpu_body(),
        _cpu_body(cpu={"id": "cpu5c", "vcpuCount": 4}, disk=40, cloud="SECURE", dataCenterIds=["EU-SE-1"]),
    ],
    ids=["gpu-minimal", "gpu-community-2", "gpu-cuda", "gpu-empty-options", "gpu-persistent", "cpu", "cpu-options"],
)
def test_request_shapes_the_client_may_send_are_accepted(client: Client, body: dict[str, Any]) -> None:
    answer = client.create(body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == body["name"]


def test_a_cpu_pod_on_the_volume_is_priced_per_vcpu_of_its_flavor(emulator: RunpodEmulator, client: Client) -> None:
    volume = emulator.create_volume("v", 30, "EU-RO-1")
    answer = client.create(_cpu_body(disk=20, mounts={"network": [{"volumeId": volume.id, "path": "/workspace"}]}))
    assert answer.status_code == 201, answer.text
    pod = answer.json()
    assert pod["cpu"] == {"id": "cpu3g", "vcpuCount": 2, "memory": 8} and "gpu" not in pod
    assert (pod["cost"], pod["cloud"], pod["dataCenterId"], pod["cudaVersion"]) == (0.08, SECURE, "EU-RO-1", None)
    assert emulator.pod(pod["id"]).cpu_instance_id == "cpu3g-2-8"


# ----- 422: the body breaks the contract -----


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (_gpu_body(spot=True), "body: unknown properties: 'spot'"),
        (_gpu_body(cloud="ALL"), "body.cloud: 'ALL' is not one of ['SECURE', 'COMMUNITY']"),
        ({"image": "img", "gpu": {"id": RTX_4090}}, "body: 'name' is a required property"),
        ({"name": "x", "gpu": {"id": RTX_4090}}, "body: 'image' is a required property"),
        (_cpu_body(cpu={"id": "cpu3g", "vcpuCount": 1}), "body.cpu.vcpuCount: 1 is less than the minimum of 2"),
        (_gpu_body(gpu={"id": RTX_4090, "count": 0}), "body.gpu.count: 0 is less than the minimum of 1"),
        (_gpu_body(env=["A=b"]), "body.env: ['A=b'] is not of type 'object'"),
        (
            _gpu_body(mounts={"network": [{"volumeId": "a", "path": "/w"}, {"volumeId": "b", "path": "/x"}]}),
            "body.mounts.network: [{'volumeId': 'a', 'path': '/w'}, {'volumeId': 'b', 'path': '/x'}] is too long",
        ),
        (_gpu_body(mounts={"network": [{"volumeId": "a"}]}), "body.mounts.network[0]: 'path' is a required property"),
    ],
    ids=[
        "unknown-field",
        "cloud-enum",
        "no-name",
        "no-image",
        "vcpu-1",
        "gpu-count-0",
        "env-list",
        "two-volumes",
        "no-path",
    ],
)
def test_a_body_that_breaks_the_contract_is_422_with_an_errors_list(
    emulator: RunpodEmulator, client: Client, body: dict[str, Any], error: str
) -> None:
    problem = _problem(client.create(body), 422)
    assert error in problem["errors"]
    assert emulator.all_pods() == []
    assert emulator.requests[-1].errors == tuple(problem["errors"])


def test_a_body_that_is_not_json_is_400(client: Client) -> None:
    answer = requests.post(
        client.url + "/v2/pods", data=b"{nope", headers={**client.headers, "Content-Type": "application/json"}
    )
    _problem(answer, 400)


# ----- 400: contract-valid, refused or not placeable -----


def test_a_community_pod_cannot_mount_a_network_volume(emulator: RunpodEmulator, client: Client) -> None:
    volume = emulator.create_volume("v", 30, "EU-RO-1")
    body = _gpu_body(cloud="COMMUNITY", mounts={"network": [{"volumeId": volume.id, "path": "/workspace"}]})
    assert _problem(client.create(body), 400)["detail"] == "Network volumes are only available for Secure Cloud pods."
    assert emulator.all_pods() == []


def test_no_stock_is_400_with_runpods_text_and_never_falls_back(emulator: RunpodEmulator, client: Client) -> None:
    emulator.set_stock(RTX_4090, SECURE, 0)
    assert emulator.stock(RTX_3090, SECURE) > 0
    problem = _problem(client.create(_gpu_body()), 400)
    assert problem["detail"] == NO_STOCK
    assert "errors" not in problem
    assert emulator.all_pods() == []


def test_stock_in_another_data_center_than_asked_is_no_stock(emulator: RunpodEmulator, client: Client) -> None:
    emulator.set_stock(RTX_4090, SECURE, 0, data_center_id="EU-RO-1")
    assert _problem(client.create(_gpu_body(dataCenterIds=["EU-RO-1"])), 400)["detail"] == NO_STOCK
    assert client.create(_gpu_body(dataCenterIds=["EU-RO-1", "EU-SE-1"])).json()["dataCenterId"] == "EU-SE-1"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (_cpu_body(disk=21), "Container Disk must be less than or equal to 20"),
        (_cpu_body(cpu={"id": "cpu3g", "vcpuCount": 4}, disk=41), "Container Disk must be less than or equal to 40"),
        (_cpu_body(cpu={"id": "cpu3g", "vcpuCount": 3}), "vcpuCount must be a power of two from 2 to 32"),
        (_cpu_body(cpu={"id": "cpu3g", "vcpuCount": 64}), "vcpuCount must be a power of two from 2 to 32"),
        (_cpu_body(cpu={"id": "cpu9x", "vcpuCount": 2}), "Invalid CPU flavor: cpu9x"),
        (_cpu_body(cloud="COMMUNITY"), "CPU pods are only available in Secure Cloud."),
        (_cpu_body(mounts={"persistent": {"size": 20, "path": "/data"}}), "CPU pods take container disk"),
        ({"name": "x", "image": "img"}, "Exactly one of gpu or cpu must be set."),
        ({**_gpu_body(), "cpu": {"id": "cpu3g", "vcpuCount": 2}}, "Exactly one of gpu or cpu must be set."),
        (_gpu_body(gpu={"id": "NVIDIA GeForce RTX 9999"}), "Invalid GPU type: NVIDIA GeForce RTX 9999"),
        (_gpu_body(gpu={"id": L4}, cloud="COMMUNITY"), "NVIDIA L4 is not offered in COMMUNITY cloud."),
        (_gpu_body(dataCenterIds=["MARS-1"]), "Invalid data center id: MARS-1"),
        (_gpu_body(mounts={"network": [{"volumeId": "nope", "path": "/w"}]}), "Network volume nope not found."),
        (_gpu_body(gpu={"id": RTX_4090, "allowedCudaVersions": ["11.8"]}), NO_STOCK),
        (_gpu_body(templateId="runpod-ubuntu"), "Template runpod-ubuntu not found."),
    ],
    ids=[
        "cpu-disk-2",
        "cpu-disk-4",
        "vcpu-3",
        "vcpu-64",
        "flavor",
        "cpu-community",
        "cpu-persistent",
        "neither",
        "both",
        "gpu-id",
        "gpu-cloud",
        "data-center",
        "volume",
        "cuda",
        "template",
    ],
)
def test_contract_valid_requests_runpod_refuses_are_400(
    emulator: RunpodEmulator, client: Client, body: dict[str, Any], detail: str
) -> None:
    assert _problem(client.create(body), 400)["detail"].startswith(detail)
    assert emulator.all_pods() == []


def test_a_volume_outside_the_asked_data_centers_is_400(emulator: RunpodEmulator, client: Client) -> None:
    volume = emulator.create_volume("v", 30, "EU-RO-1")
    body = _gpu_body(dataCenterIds=["US-KS-2"], mounts={"network": [{"volumeId": volume.id, "path": "/workspace"}]})
    assert "which dataCenterIds does not include" in _problem(client.create(body), 400)["detail"]


# ----- 401 / 402 / 403 / 429 / faults -----


def test_a_missing_or_wrong_key_is_401(emulator: RunpodEmulator) -> None:
    assert _problem(Client(emulator, key="rpa_WRONG").get("/v2/pods"), 401)["title"] == "Unauthorized"
    no_header = requests.get(f"{emulator.rest_url}/v2/pods?api_key={emulator.api_key}", timeout=10)
    _problem(no_header, 401)  # REST v2 takes the key as a Bearer header only
    assert emulator.requests[-1].operation == "listPods"


def test_a_pod_dearer_per_hour_than_the_balance_is_402(emulator: RunpodEmulator, client: Client) -> None:
    emulator.set_balance(0.5)
    assert _problem(client.create(_gpu_body()), 402)["detail"] == "Insufficient balance"
    assert client.create(_cpu_body()).status_code == 201  # $0.08/h fits
    assert emulator.all_pods()[0].kind == "cpu"


def test_a_forbidden_pool_is_403_and_other_pools_still_place(emulator: RunpodEmulator, client: Client) -> None:
    emulator.forbid(RTX_4090, COMMUNITY)
    _problem(client.create(_gpu_body(cloud="COMMUNITY")), 403)
    assert client.create(_gpu_body(cloud="SECURE")).status_code == 201
    assert emulator.stock(RTX_4090, COMMUNITY) == 12  # nothing taken by the refused create


def test_rate_limited_calls_are_429_with_retry_after(emulator: RunpodEmulator, client: Client) -> None:
    emulator.rate_limit_next(2, retry_after_s=3)
    for _ in range(2):
        answer = client.create(_gpu_body())
        _problem(answer, 429)
        assert answer.headers["Retry-After"] == "3"
    assert runpod_graphql(emulator, "{ myself { id } }").status_code == 200  # GraphQL isn't counted
    assert client.create(_gpu_body()).status_code == 201
    assert [r.http_status for r in emulator.requests if r.operation == "createPod"] == [429, 429, 201]


def test_injected_faults_reach_rest_calls(emulator: RunpodEmulator, client: Client) -> None:
    emulator.fail_next(1, status=503)
    _problem(client.get("/v2/pods"), 503)
    emulator.fail_next(1, status=502)
    assert client.get("/v2/pods").headers["Content-Type"].startswith("text/html")
    assert client.get("/v2/pods").json() == {"pods": []}
    assert [r.http_status for r in emulator.requests] == [503, 502, 200]


# ----- 404 -----


def test_unknown_and_terminated_pods_and_volumes_are_404(emulator: RunpodEmulator, client: Client) -> None:
    _problem(client.get("/v2/pods/doesnotexist00"), 404)
    _problem(client.call("DELETE", "/v2/pods/doesnotexist00"), 404)
    _problem(client.call("POST", "/v2/pods/doesnotexist00/action", {"action": "stop"}), 404)
    _problem(client.get("/v2/network-volumes/nope"), 404)
    pod_id = client.create(_gpu_body()).json()["id"]
    answer = client.call("DELETE", f"/v2/pods/{pod_id}")
    assert (answer.status_code, answer.content) == (204, b"")
    _problem(client.get(f"/v2/pods/{pod_id}"), 404)
    _problem(client.call("DELETE", f"/v2/pods/{pod_id}"), 404)
    assert client.get("/v2/pods").json() == {"pods": []}
    assert emulator.pod(pod_id).state == "TERMINATED"


# ----- lifecycle -----


def test_a_pod_goes_provisioning_starting_running_and_stops_starts_terminates(
    emulator: RunpodEmulator, client: Client
) -> None:
    pod_id = client.create(_gpu_body(args="sleep 1000", ports=["8888/http"])).json()["id"]
    assert client.get(f"/v2/pods/{pod_id}").json()["status"] == "PROVISIONING"
    emulator.advance(60)  # half the GPU start-up delay: the image is pulled
    assert client.get(f"/v2/pods/{pod_id}").json()["status"] == "STARTING"
    emulator.advance(60)
    pod = client.get(f"/v2/pods/{pod_id}").json()
    assert (pod["status"], pod["actions"]) == ("RUNNING", ["stop", "restart", "terminate"])
    assert pod["runtime"]["uptime"] >= 0 and pod["runtime"]["gpus"] == [{"util": 0, "memoryUtil": 0}]
    assert pod["runtime"]["ports"] == [{"private": 8888, "public": 8888, "type": "http", "ip": "127.0.0.1"}]
    assert pod["startedAt"] is not None and pod["createdAt"] < pod["startedAt"]
    assert [p["id"] for p in client.get("/v2/pods").json()["pods"]] == [pod_id]

    stopped = client.call("POST", f"/v2/pods/{pod_id}/action", {"action": "stop"})
    assert stopped.status_code == 200
    assert (stopped.json()["status"], stopped.json()["cost"], stopped.json()["actions"]) == (
        "EXITED",
        0.0,
        ["start", "terminate"],
    )
    _problem(client.call("POST", f"/v2/pods/{pod_id}/action", {"action": "restart"}), 409)
    _problem(client.call("POST", f"/v2/pods/{pod_id}/action", {"action": "reboot"}), 422)

    started = client.call("POST", f"/v2/pods/{pod_id}/action", {"action": "start"}).json()
    assert (started["status"], started["cost"]) == ("PROVISIONING", 0.69)
    emulator.advance(120)
    assert client.get(f"/v2/pods/{pod_id}").json()["status"] == "RUNNING"

    restarted = client.call("POST", f"/v2/pods/{pod_id}/action", {"action": "restart"})
    assert restarted.status_code == 200 and restarted.json()["status"] == "STARTING"
    emulator.wait_until(lambda: client.get(f"/v2/pods/{pod_id}").json()["status"] == "RUNNING", what="restart")

    terminated = client.call("POST", f"/v2/pods/{pod_id}/action", {"action": "terminate"})
    assert (terminated.status_code, terminated.content) == (204, b"")
    _problem(client.get(f"/v2/pods/{pod_id}"), 404)


def test_a_lost_host_leaves_the_pod_in_error_with_billing_stopped(emulator: RunpodEmulator, client: Client) -> None:
    pod_id = client.create(_gpu_body(args="sleep 1000")).json()["id"]
    emulator.advance(120)
    emulator.wait_until(lambda: emulator.pod(pod_id).process_alive, what="the pod process")
    stock = emulator.stock(RTX_4090, SECURE)

    emulator.lose_host(pod_id)
    emulator.wait_until(lambda: not emulator.pod(pod_id).process_alive, what="the kill")
    report = emulator.pod(pod_id)
    assert report.exit_code == -9
    pod = client.get(f"/v2/pods/{pod_id}").json()
    assert (pod["status"], pod["cost"], pod["runtime"], pod["actions"]) == ("ERROR", 0.0, None, ["start", "terminate"])
    emulator.advance(3600)
    assert emulator.pod(pod_id).billed_seconds == report.billed_seconds
    assert client.get(f"/v2/pods/{pod_id}").json()["status"] == "ERROR"
    assert emulator.stock(RTX_4090, SECURE) == stock  # the host's GPUs went with it

    start = client.call("POST", f"/v2/pods/{pod_id}/action", {"action": "start"})
    assert _problem(start, 400)["detail"] == "There are not enough free GPUs on the host machine to start this pod."
    assert client.call("DELETE", f"/v2/pods/{pod_id}").status_code == 204


# ----- catalog -----


def test_gpu_catalog_prices_per_cloud_and_availability_from_stock(emulator: RunpodEmulator, client: Client) -> None:
    gpus = {gpu["id"]: gpu for gpu in client.get("/v2/catalog/gpus").json()["gpus"]}
    assert gpus[RTX_4090]["price"] == {"secure": 0.69, "community": 0.44}
    assert "availability" not in gpus[RTX_4090]
    assert (gpus[L4]["secure"], gpus[L4]["community"], gpus[L4]["price"]) == (
        True,
        False,
        {"secure": 0.43, "community": 0},
    )
    assert gpus[L4]["maxCount"] == {"secure": 8, "community": 0}

    emulator.set_stock(RTX_4090, COMMUNITY, 0)
    emulator.set_stock(RTX_4090, SECURE, 9, data_center_id="EU-SE-1")
    listed = client.get("/v2/catalog/gpus", include="AVAILABILITY", product="POD").json()["gpus"]
    secure = {gpu["id"]: gpu for gpu in listed}[RTX_4090]
    assert secure["availability"] == "HIGH"
    assert {dc["id"]: dc["availability"] for dc in secure["dataCenters"]} == {
        "EU-RO-1": "MEDIUM",
        "US-KS-2": "MEDIUM",
        "EU-SE-1": "HIGH",
    }
    listed = client.get("/v2/catalog/gpus", include="AVAILABILITY", product="POD", cloud="COMMUNITY").json()["gpus"]
    community = {gpu["id"]: gpu for gpu in listed}
    assert community[RTX_4090]["availability"] == "NONE" and "dataCenters" not in community[RTX_4090]
    assert community[L4]["availability"] == "NONE"
    four = client.get("/v2/catalog/gpus", include="AVAILABILITY", product="POD", count="5").json()["gpus"]
    assert {gpu["id"]: gpu for gpu in four}[RTX_4090]["dataCenters"] == [
        {"id": "EU-SE-1", "name": "EU-SE-1", "availability": "HIGH"}
    ]

    assert "requires product" in _problem(client.get("/v2/catalog/gpus", include="AVAILABILITY"), 400)["detail"]
    _problem(client.get("/v2/catalog/gpus", product="POD"), 400)
    _problem(client.get("/v2/catalog/gpus", include="SPECS"), 422)


def test_cpu_catalog_and_data_centers(client: Client) -> None:
    cpus = {cpu["id"]: cpu for cpu in client.get("/v2/catalog/cpus").json()["cpus"]}
    assert set(cpus) >= {"cpu3c", "cpu3g", "cpu5c"}
    assert cpus["cpu3g"]["vcpu"] == {"min": 2, "max": 32}
    assert (cpus["cpu3g"]["ramGbPerVcpu"], cpus["cpu3g"]["price"]["securePerVcpu"]) == (4.0, 0.04)
    available = client.get("/v2/catalog/cpus", include="AVAILABILITY", product="POD").json()["cpus"]
    assert available[0]["availability"] == "HIGH"

    centers = client.get("/v2/catalog/datacenters", include="GPU_AVAILABILITY").json()["dataCenters"]
    by_id = {dc["id"]: dc for dc in centers}
    assert by_id["EU-RO-1"]["region"] == "EUROPE" and by_id["US-KS-2"]["region"] == "NORTH_AMERICA"
    assert {"id": RTX_4090, "name": "RTX 4090", "availability": "MEDIUM"} in by_id["EU-RO-1"]["gpuAvailability"]
    europe = client.get("/v2/catalog/datacenters", regions="EUROPE").json()["dataCenters"]
    assert [dc["id"] for dc in europe] == ["EU-RO-1", "EU-SE-1"] and "gpuAvailability" not in europe[0]


# ----- network volumes -----


def test_network_volumes_are_created_listed_and_read(emulator: RunpodEmulator, client: Client) -> None:
    created = client.call(
        "POST", "/v2/network-volumes", {"name": "lorabot-eu-ro-1", "size": 30, "dataCenter": "EU-RO-1"}
    )
    assert created.status_code == 201
    volume = created.json()
    assert {k: volume[k] for k in ("name", "size", "dataCenter", "type")} == {
        "name": "lorabot-eu-ro-1",
        "size": 30,
        "dataCenter": "EU-RO-1",
        "type": "STANDARD",
    }
    assert emulator.volume_path(volume["id"]).is_dir()
    assert client.get("/v2/network-volumes").json() == {"networkVolumes": [volume]}
    assert client.get(f"/v2/network-volumes/{volume['id']}").json() == volume

    bad = {"name": "v", "size": 5, "dataCenter": "EU-RO-1"}
    assert (
        "body.size: 5 is less than the minimum of 10"
        in _problem(client.call("POST", "/v2/network-volumes", bad), 422)["errors"]
    )
    nowhere = {"name": "v", "size": 10, "dataCenter": "MARS-1"}
    assert (
        _problem(client.call("POST", "/v2/network-volumes", nowhere), 400)["detail"] == "Invalid data center id: MARS-1"
    )


# ----- billing -----


def _micros(amount: float) -> int:
    return int(Decimal(str(amount)) * 1_000_000)


def test_the_bill_is_the_emulators_own_per_second_cost_plus_container_disk(
    emulator: RunpodEmulator, client: Client
) -> None:
    cpu_id = client.create(_cpu_body(disk=20)).json()["id"]
    emulator.advance(40 * 60)
    client.call("DELETE", f"/v2/pods/{cpu_id}")
    gpu_id = client.create(_gpu_body(disk=50)).json()["id"]
    emulator.advance(2.5 * 3600)
    client.call("DELETE", f"/v2/pods/{gpu_id}")

    for pod_id, kind, disk in ((cpu_id, "cpu", 20), (gpu_id, "gpu", 50)):
        report = emulator.pod(pod_id)
        answer = client.get("/v2/billing/pods", podId=pod_id, bucketSize="hour").json()
        records = answer["records"]
        assert len(records) in (3, 4) if kind == "gpu" else len(records) in (1, 2)
        assert {r["podId"] for r in records} == {pod_id}
        compute = sum(_micros(r[f"{kind}Amount"]) for r in records)
        other = "cpu" if kind == "gpu" else "gpu"
        assert compute == report.cost_micros and all(r[f"{other}Amount"] == 0 for r in records)
        assert sum(_micros(r["diskAmount"]) for r in records) == disk_cost_micros(report.billed_seconds, disk)
        for r in records:
            assert _micros(r["totalAmount"]) == _micros(r["gpuAmount"]) + _micros(r["cpuAmount"]) + _micros(
                r["diskAmount"]
            )
        metadata = answer["metadata"]
        assert (metadata["recordCount"], metadata["uniquePodCount"]) == (len(records), 1)
        assert metadata["query"]["bucketSize"] == "hour" and metadata["query"]["podId"] == pod_id
        assert _micros(metadata["totals"]["totalAmount"]) == sum(_micros(r["totalAmount"]) for r in records)
        assert emulator.billing_records(pod_id, "hour") == records

    # 10 GB for an hour at $0.10/GB/month over a 30-day month.
    assert disk_cost_micros(3600, 10) == 1389
    daily = client.get("/v2/billing/pods").json()
    assert daily["metadata"]["uniquePodCount"] == 2 and daily["metadata"]["query"]["bucketSize"] == "day"


def test_billing_queries_the_contract_refuses_or_runpod_rejects(client: Client) -> None:
    _problem(client.get("/v2/billing/pods", bucketSize="minute"), 422)
    _problem(client.get("/v2/billing/pods", startTime="yesterday"), 422)
    _problem(client.get("/v2/billing/pods", lastN="2", startTime="2026-01-01T00:00:00Z"), 400)
    window = client.get("/v2/billing/pods", lastN="2", bucketSize="day").json()["metadata"]["query"]
    assert window["startTime"].endswith("T00:00:00Z") and window["endTime"].endswith("T00:00:00Z")


# ----- the emulator's own answers are held to the contract -----


def test_an_answer_outside_the_contract_is_a_failure_of_the_test(
    emulator: RunpodEmulator, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_view = rest_module.pod_view

    def with_extra(account: Any, pod: Any) -> dict[str, Any]:
        return {**real_view(account, pod), "gpuTemperature": 61}

    def without_status(account: Any, pod: Any) -> dict[str, Any]:
        view = real_view(account, pod)
        del view["status"]
        return view

    monkeypatch.setattr(rest_module, "pod_view", with_extra)
    pod_id = client.create(_gpu_body()).json()["id"]
    monkeypatch.setattr(rest_module, "pod_view", without_status)
    client.get(f"/v2/pods/{pod_id}")
    failures = emulator.clear_failures()
    assert failures == [
        "REST v2 response violates RunPod's contract: createPod 201: response: unknown properties: 'gpuTemperature'",
        "REST v2 response violates RunPod's contract: getPod 200: response: 'status' is a required property",
    ]
    assert emulator.failures == []


def test_a_query_parameter_runpod_does_not_have_is_a_failure(emulator: RunpodEmulator, client: Client) -> None:
    assert client.get("/v2/pods", gpuType=RTX_4090).status_code == 200
    assert emulator.clear_failures() == ["REST v2 unsupported request: listPods has no query parameter 'gpuType'"]


# ----- the GraphQL front follows the same rule -----


def test_graphql_deploys_with_a_volume_go_to_secure_cloud_only(emulator: RunpodEmulator) -> None:
    volume = emulator.create_volume("v", 30, "EU-RO-1")
    mutation = (
        "mutation($input: PodFindAndDeployOnDemandInput) { podFindAndDeployOnDemand(input: $input) { id costPerHr } }"
    )
    spec = {"name": "p", "imageName": "img", "gpuTypeId": RTX_4090, "networkVolumeId": volume.id}
    refused = runpod_graphql(emulator, mutation, {"input": {**spec, "cloudType": "COMMUNITY"}}).json()
    assert refused["errors"][0]["message"] == "Network volumes are only available for Secure Cloud pods."
    placed = runpod_graphql(emulator, mutation, {"input": {**spec, "cloudType": "ALL"}}).json()
    pod = placed["data"]["podFindAndDeployOnDemand"]
    assert pod["costPerHr"] == 0.69 and emulator.pod(pod["id"]).cloud == SECURE


def test_the_world_fails_a_test_that_leaves_a_contract_violation_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Drives the `make_runpod_emulator` fixture by hand: its teardown fails on a REST failure nobody took."""
    fixture = fixtures_runpod.make_runpod_emulator.__wrapped__
    steps = fixture(monkeypatch, tmp_path_factory)
    make = next(steps)
    emulator = make(time_scale=1.0)
    real_view = rest_module.volume_view
    monkeypatch.setattr(rest_module, "volume_view", lambda volume: {**real_view(volume), "type": "FAST"})
    Client(emulator).call("POST", "/v2/network-volumes", {"name": "v", "size": 10, "dataCenter": "EU-RO-1"})
    with pytest.raises(pytest.fail.Exception, match=r"createNetworkVolume 201: response\.type: 'FAST' is not one of"):
        next(steps)
