"""The emulator's REST v2 contract is RunPod's own OpenAPI document, extracted and kept current."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from jobs.sandbox.emulator.contract import CONTRACT_PATH, Contract, runpod_contract, strict

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import extract_runpod_contract as extractor  # noqa: E402


def _shared_document() -> Path:
    source = extractor.DEFAULT_SOURCE
    if not source.exists():
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"RunPod's OpenAPI document is missing at {source}; CI must check the contract is current")
        pytest.skip(f"NOT CHECKED: RunPod's OpenAPI document is absent at {source}, so the contract may be stale")
    return source


def test_the_committed_contract_is_what_the_extractor_makes_from_runpods_document() -> None:
    source = _shared_document()
    assert extractor.main([str(source), "--check"]) == 0, "run tools/extract_runpod_contract.py and commit"


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    source = _shared_document()
    stale = tmp_path / "contract.json"
    stale.write_text(CONTRACT_PATH.read_text().replace('"minimum": 10', '"minimum": 11', 1))
    assert extractor.main([str(source), "--out", str(stale), "--check"]) == 1
    assert extractor.main([str(source), "--out", str(stale)]) == 0
    assert stale.read_text() == CONTRACT_PATH.read_text()


def test_the_contract_has_every_operation_lorabot_uses_without_prose() -> None:
    data = json.loads(CONTRACT_PATH.read_text())
    assert set(data["operations"]) == set(extractor.OPERATIONS)
    assert data["operations"]["createPod"]["method"] == "POST"
    assert data["operations"]["createPod"]["path"] == "/v2/pods"
    assert data["operations"]["deletePod"]["responses"]["204"] == {"contentType": None, "schema": None}

    def keys(node: object, names: bool = False) -> set[str]:
        if isinstance(node, list):
            return set().union(*(keys(item) for item in node)) if node else set()
        if not isinstance(node, dict):
            return set()
        found = set() if names else set(node)
        for key, value in node.items():
            found |= keys(value, names=not names and key in ("properties", "$defs"))
        return found

    assert keys(data) & extractor.PROSE_KEYS == set()
    refs = {ref for ref in json.dumps(data).split('"$ref": "')[1:]}
    for ref in refs:
        name = ref.split('"', 1)[0]
        assert name.startswith("#/$defs/") and name.removeprefix("#/$defs/") in data["$defs"], name
    assert CONTRACT_PATH.read_text().endswith("}\n")


def test_request_errors_are_readable_paths_with_messages() -> None:
    contract = runpod_contract()
    errors = contract.check_request_body(
        "createPod",
        {
            "name": "x",
            "image": "img",
            "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1, "spot": True},
            "cloud": "ALL",
            "colour": "blue",
        },
    )
    assert errors == [
        "body: unknown properties: 'colour'",
        "body.cloud: 'ALL' is not one of ['SECURE', 'COMMUNITY']",
        "body.gpu: unknown properties: 'spot'",
    ]
    assert contract.check_request_body("createPod", None) == ["body: a JSON request body is required"]


def test_query_values_are_typed_by_their_schema_and_unknown_names_reported() -> None:
    values, errors, unknown = runpod_contract().parse_query(
        "listGpuTypes", {"include": "AVAILABILITY", "product": "POD,SERVERLESS", "count": "2", "colour": "x"}
    )
    assert values == {"include": ["AVAILABILITY"], "product": ["POD", "SERVERLESS"], "count": 2}
    assert (errors, unknown) == ([], ["colour"])
    _, errors, _ = runpod_contract().parse_query("listPodBilling", {"bucketSize": "minute", "lastN": "0"})
    assert errors == [
        "query.bucketSize: 'minute' is not one of ['hour', 'day', 'week', 'month', 'year']",
        "query.lastN: 0 is less than the minimum of 1",
    ]


def test_responses_are_checked_strictly_for_undeclared_fields() -> None:
    contract = runpod_contract()
    problem = {"title": "Not Found", "status": 404, "detail": "pod not found"}
    assert contract.check_response("getPod", 404, problem, "application/problem+json") == []
    assert contract.check_response("getPod", 404, {**problem, "code": 7}, "application/problem+json") == [
        "response: unknown properties: 'code'"
    ]
    assert contract.check_response("getPod", 404, problem, "application/json") == [
        "content type 'application/json', the contract says 'application/problem+json'"
    ]
    assert contract.check_response("deletePod", 204, None, None) == []
    assert contract.check_response("deletePod", 204, {}, "application/json") == [
        "status 204 declares no body, one was sent"
    ]


def test_strict_leaves_combinator_members_and_maps_open() -> None:
    schema = {
        "allOf": [{"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {}}}}}],
        "properties": {"env": {"type": "object", "additionalProperties": {"type": "string"}}},
    }
    made = strict(schema)
    assert made["unevaluatedProperties"] is False
    assert "unevaluatedProperties" not in made["allOf"][0]
    assert made["allOf"][0]["properties"]["a"]["unevaluatedProperties"] is False
    assert "unevaluatedProperties" not in made["properties"]["env"]
    assert isinstance(Contract.load(), Contract)
