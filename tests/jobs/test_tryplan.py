"""/try requests: what a user may ask (refused with a specific message otherwise), the estimate and where its figures
come from, and the requests.json entry: command lines sd-scripts' generation scripts accept, prompt lines lorabot
writes, one output per (epoch, prompt) cell with its own upload URL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.tryplan import (
    MAX_CELLS,
    LoraRef,
    TryJob,
    TryRefused,
    TrySpec,
    cell_key,
    estimate_generation_s,
    parse_request_status,
    parse_try,
    request_entry,
    requests_document,
    requests_key,
    status_key,
)
from tests.jobs.data.specs import spec

GEN_FLAGS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[2] / "jobs/sandbox/sdscripts/gen_flags.json").read_text()
)
FLUX_PATHS = {
    "clip_l": "{volume}/lorabot/models/clip_l.safetensors",
    "t5xxl": "{volume}/lorabot/models/t5xxl_fp16.safetensors",
    "ae": "{volume}/lorabot/models/ae.safetensors",
}


def job(preset: str = "sdxl-character", epochs: tuple[int, ...] = (1, 2, 3, 4, 5), picked: int | None = None) -> TryJob:
    return TryJob.from_spec(
        spec(preset),
        job_id="j42",
        epochs_available=epochs,
        picked_epoch=picked,
        extra_model_paths=FLUX_PATHS if preset.startswith("flux") else None,
    )


def refusal(**options: Any) -> str:
    target = options.pop("job", None) or job()
    with pytest.raises(TryRefused) as caught:
        parse_try(target, **{"prompt": "kanachan smiling", **options})
    return caught.value.message


def test_defaults_come_from_the_job_and_the_picked_epoch() -> None:
    plain = parse_try(job(), prompt="kanachan smiling | kanachan angry ")
    assert plain == TrySpec(
        prompts=("kanachan smiling", "kanachan angry"),
        epochs=(3, 4, 5),  # nothing picked: the last three
        seed=42,
        negative="low quality, worst quality, bad hands, bad anatomy, blurry",
        strength=1.0,
        steps=28,
    )
    assert parse_try(job(picked=2), prompt="kanachan").epochs == (2,)
    chosen = parse_try(
        job(), prompt="kanachan", epochs="1-2, 5", seed=7, negative="", strength=0.6, steps=12, compare=True
    )
    assert (chosen.epochs, chosen.seed, chosen.negative, chosen.strength, chosen.steps, chosen.compare) == (
        (1, 2, 5),
        7,
        "",
        0.6,
        12,
        True,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": "7"}, "j42 has no checkpoint for epoch 7 (checkpoints kept: 1-5)"),
        ({"job": job(epochs=(1, 3)), "epochs": "1-3"}, "j42 has no checkpoint for epoch 2 (checkpoints kept: 1, 3)"),
        ({"epochs": "last"}, "epochs must look like 3, 1-3 or 2,5,8; got 'last'"),
        ({"epochs": "4-2"}, "epoch range 4-2 runs backwards"),
        ({"prompt": "kanachan --n ugly"}, "the prompt contains '--', which sd-scripts reads as an option"),
        ({"prompt": "a|kanachan --d 3"}, "prompt 2 contains '--'"),
        ({"prompt": "kanachan\nsmiling"}, "the prompt contains a line break or control character"),
        ({"prompt": "n girl smiling"}, "the prompt starts with 'n' and a space, which sd-scripts reads as an option"),
        ({"prompt": "kanachan {smiling|angry}"}, "reads {a|b} as a choice between prompts"),
        ({"prompt": "a | | b"}, "prompt 2 is empty"),
        ({"prompt": "a|b|c|d|e"}, "at most 4 prompts per /try"),
        ({"prompt": "x" * 501}, "the prompt is 501 characters long; the limit is 500"),
        ({"negative": "ugly --s 90"}, "the negative prompt contains '--'"),
        ({"seed": -1}, "seed must be between 0 and 4294967295, got -1"),
        ({"seed": 2**32}, "seed must be between 0 and 4294967295"),
        ({"strength": 2.5}, "strength (the LoRA's multiplier) must be between 0 and 2, got 2.5"),
        ({"strength": float("nan")}, "strength (the LoRA's multiplier) must be between 0 and 2"),
        ({"steps": 0}, "steps must be between 1 and 100, got 0"),
        ({"job": job(epochs=tuple(range(1, 13))), "epochs": "1-11"}, "at most 10 epochs per /try, got 11"),
        ({"prompt": "a|b|c", "job": job(epochs=tuple(range(1, 13))), "epochs": "1-9"}, "3 prompts x 9 epochs = 27"),
        ({"job": job(epochs=())}, "j42 has no epoch checkpoint in the store to try"),
    ],
)
def test_refusals_say_what_is_wrong(options: dict[str, Any], message: str) -> None:
    assert message in refusal(**options)


def test_user_text_in_a_refusal_is_shown_escaped() -> None:
    message = refusal(epochs="a\n" + "9" * 200)
    assert "got 'a\\n999" in message and "\n" not in message and len(message) < 120


def test_cell_limit_is_the_contracts() -> None:
    many = job(epochs=tuple(range(1, 11)))
    assert parse_try(many, prompt="a|b", epochs="1-10").cells == 20 <= MAX_CELLS


def _parse_args(script: str, args: list[str]) -> dict[str, Any]:
    """Each --flag=value of a run against the script's real parser table (gen_flags.json): known, right type."""
    kinds = GEN_FLAGS[script]
    seen: dict[str, Any] = {}
    for arg in args:
        flag, has_value, value = arg.partition("=")
        assert flag in kinds, f"{flag} is not a flag of {script}"
        kind = kinds[flag]
        if kind["action"] == "store_true":
            assert not has_value
            seen[flag] = True
            continue
        assert has_value, f"{flag} needs a value"
        converted = {"int": int, "float": float}.get(kind["type"], str)(value)
        if kind["choices"]:
            assert converted in kind["choices"]
        seen[flag] = converted
    return seen


def presigners() -> tuple[Any, Any, list[str]]:
    calls: list[str] = []

    def get(key: str) -> str:
        calls.append(f"GET {key}")
        return f"https://bucket/{key}?op=get"

    def put(key: str) -> str:
        calls.append(f"PUT {key}")
        return f"https://bucket/{key}?op=put"

    return get, put, calls


LORAS = {e: LoraRef(f"jobs/j42/epochs/{e:06d}/kana-{e:06d}.safetensors", f"{e:064x}", 1000 + e) for e in range(1, 6)}


def test_sdxl_entry_runs_gen_img_once_per_epoch_with_every_prompt_in_its_file() -> None:
    target = job()
    wanted = parse_try(target, prompt="kanachan smiling|kanachan angry", epochs="2,4", seed=7, strength=0.8)
    get, put, calls = presigners()
    entry = request_entry(target, wanted, tid="t3", loras=LORAS, presign_get=get, presign_put=put)
    assert entry["script"] == "gen_img.py"
    assert entry["loras"] == {
        "2": {"url": f"https://bucket/{LORAS[2].key}?op=get", "sha256": LORAS[2].sha256, "size": 1002},
        "4": {"url": f"https://bucket/{LORAS[4].key}?op=get", "sha256": LORAS[4].sha256, "size": 1004},
    }
    assert [run["epoch"] for run in entry["runs"]] == [2, 4]
    run = entry["runs"][1]
    args = _parse_args("gen_img.py", run["args"])
    assert args["--sdxl"] is True
    assert args["--ckpt"] == "{model_path}"
    assert args["--network_weights"] == "{lora_path}" and args["--network_mul"] == 0.8
    assert args["--network_module"] == "networks.lora"
    assert args["--from_file"] == "{run_dir}/prompts.txt" and args["--outdir"] == "{run_dir}/out"
    assert (args["--W"], args["--H"], args["--steps"], args["--sampler"]) == (1024, 1024, 28, "euler_a")
    assert "--seed" not in args  # each line carries --d: gen_img's --seed with one line hits sd-scripts' bug
    negative = "low quality, worst quality, bad hands, bad anatomy, blurry"
    assert run["files"] == {
        "prompts.txt": f"kanachan smiling --n {negative} --d 7 --s 28 --f e000004-p00.png\n"
        f"kanachan angry --n {negative} --d 7 --s 28 --f e000004-p01.png\n"
    }
    assert run["outputs"] == [
        {"file": "e000004-p00.png", "epoch": 4, "prompt": 0},
        {"file": "e000004-p01.png", "epoch": 4, "prompt": 1},
    ]
    assert entry["cells"] == {
        name: f"https://bucket/jobs/j42/try/t3/{name}.png?op=put"
        for name in ("e000002-p00", "e000002-p01", "e000004-p00", "e000004-p01")
    }
    assert cell_key("j42", "t3", 4, 1) == "jobs/j42/try/t3/e000004-p01.png"
    assert entry["status_url"] == f"https://bucket/{status_key('j42', 't3')}?op=put"
    assert entry["expected_s"] == estimate_generation_s(target, wanted).seconds
    assert not any(call.startswith("GET jobs/j42/try") for call in calls)  # cells and status are PUT only


def test_sd15_entry_has_no_sdxl_flag_and_keeps_fp16() -> None:
    target = job("sd15-character")
    entry = request_entry(
        target,
        parse_try(target, prompt="kanachan", epochs="1", negative=""),
        tid="t1",
        loras=LORAS,
        presign_get=str,
        presign_put=str,
    )
    args = _parse_args("gen_img.py", entry["runs"][0]["args"])
    assert "--sdxl" not in args and args["--fp16"] is True and args["--xformers"] is True
    assert (args["--W"], args["--scale"]) == (512, 7.0)
    assert entry["runs"][0]["files"]["prompts.txt"] == "kanachan --d 42 --s 25 --f e000001-p00.png\n"


def test_flux_entry_runs_one_image_per_process_in_its_own_folder() -> None:
    target = job("flux-character")
    wanted = parse_try(target, prompt="kanachan|kanachan waving", epochs="1-2", strength=0.5, negative="")
    entry = request_entry(target, wanted, tid="t2", loras=LORAS, presign_get=str, presign_put=str)
    assert entry["script"] == "flux_minimal_inference.py"
    assert [(r["epoch"], r["outputs"]) for r in entry["runs"]] == [
        (e, [{"file": "*.png", "epoch": e, "prompt": i}]) for e in (1, 2) for i in (0, 1)
    ]
    args = _parse_args("flux_minimal_inference.py", entry["runs"][3]["args"])
    assert args["--lora_weights"] == "{lora_path};0.5"
    assert args["--prompt"] == "kanachan waving"
    assert (args["--seed"], args["--steps"], args["--guidance"], args["--width"]) == (42, 20, 3.5, 1024)
    assert args["--ae"] == FLUX_PATHS["ae"] and args["--output_dir"] == "{run_dir}/out"
    assert "--negative_prompt" not in args
    # The prompt travels as one argv item (the agent runs no shell), never split at its spaces.
    assert "--prompt=kanachan waving" in entry["runs"][3]["args"]


def test_entry_needs_every_epochs_lora_and_a_safe_id() -> None:
    target = job()
    wanted = parse_try(target, prompt="kanachan", epochs="1")
    with pytest.raises(ValueError, match="no LoRA given for epochs"):
        request_entry(target, wanted, tid="t1", loras={}, presign_get=str, presign_put=str)
    with pytest.raises(ValueError, match="request id"):
        request_entry(target, wanted, tid="../t1", loras=LORAS, presign_get=str, presign_put=str)


def test_estimate_counts_model_loads_per_run_and_steps_per_image() -> None:
    sdxl = job()
    wanted = parse_try(sdxl, prompt="a|b", epochs="1-3", steps=20)
    estimate = estimate_generation_s(sdxl, wanted)
    assert estimate.seconds == 3 * 25.0 + 6 * 20 * 0.25
    assert "assumed" in estimate.source and "not measured" in estimate.source
    flux = job("flux-character")
    flux_estimate = estimate_generation_s(flux, parse_try(flux, prompt="a|b", epochs="1-3", steps=20))
    assert flux_estimate.seconds == 6 * 60.0 + 6 * 20 * 1.0  # one model load per image
    assert "loads it for every image" in flux_estimate.source
    sd15 = job("sd15-character")
    assert estimate_generation_s(sd15, parse_try(sd15, prompt="a", epochs="1", steps=20)).seconds == 10.0 + 1.0


def test_requests_document_and_keys() -> None:
    body = requests_document([{"id": "t1"}, {"id": "t2"}])
    assert json.loads(body) == {"version": 1, "requests": [{"id": "t1"}, {"id": "t2"}]}
    with pytest.raises(ValueError, match="unique"):
        requests_document([{"id": "t1"}, {"id": "t1"}])
    assert requests_key("j42") == "jobs/j42/try/requests.json"


def test_request_status_parses_the_agents_report() -> None:
    body = json.dumps(
        {
            "id": "t1",
            "phase": "failed",
            "cells_done": 1,
            "cells": 4,
            "seconds": 12.5,
            "boots": 1,
            "error": {"kind": "generation", "message": "torch.OutOfMemoryError: CUDA out of memory."},
        }
    ).encode()
    status = parse_request_status(body)
    assert status.finished and status.error_kind == "generation" and status.cells == 4
    with pytest.raises(ValueError):
        parse_request_status(b'{"id": "t1", "phase": "thinking"}')
