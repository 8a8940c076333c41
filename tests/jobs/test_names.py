"""Public job ids and deterministic pod names: what users type and what the reaper recognises."""

from __future__ import annotations

import pytest

from jobs.names import InvalidJobId, ParsedPodName, job_public_id, parse_job_public_id, parse_pod_name, pod_name
from jobs.states import PodRole


def test_public_ids_round_trip() -> None:
    assert job_public_id(42) == "j42"
    assert parse_job_public_id("j42") == 42
    assert parse_job_public_id("  J7 ") == 7


@pytest.mark.parametrize("text", ["42", "j", "j0", "j042", "job42", "j-1", "j4 2", "", "j" + "9" * 30])
def test_a_malformed_job_id_says_what_a_job_id_looks_like(text: str) -> None:
    with pytest.raises(InvalidJobId, match="job ids look like j42"):
        parse_job_public_id(text)


def test_pod_names_are_deterministic_per_job_role_and_attempt() -> None:
    assert pod_name(42, PodRole.CPU, 1) == "lorabot-j42-cpu"
    assert pod_name(42, PodRole.GPU, 1) == "lorabot-j42-gpu"
    assert pod_name(42, PodRole.GPU, 3) == "lorabot-j42-gpu-3"
    with pytest.raises(ValueError, match="attempts start at 1"):
        pod_name(42, PodRole.GPU, 0)


def test_the_reaper_maps_our_names_back_and_ignores_everyone_elses() -> None:
    assert parse_pod_name("lorabot-j42-gpu-3") == ParsedPodName(job_id=42, role=PodRole.GPU, attempt=3)
    assert parse_pod_name("lorabot-j7-cpu") == ParsedPodName(job_id=7, role=PodRole.CPU, attempt=1)
    # A /try pod: the reaper finds its job too (and keeps it only while its window or request is open).
    assert pod_name(42, PodRole.TRY, 2) == "lorabot-j42-try-2"
    assert parse_pod_name("lorabot-j42-try-2") == ParsedPodName(job_id=42, role=PodRole.TRY, attempt=2)
    for foreign in ["my-comfyui", "lorabot-j42-gpu-1", "lorabot-j42-tpu", "lorabot-42-gpu", "xlorabot-j1-cpu"]:
        assert parse_pod_name(foreign) is None
