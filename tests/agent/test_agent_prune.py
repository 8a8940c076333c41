"""The CPU stage removes what `lorabot volumes prune` marked, first: exactly the listed stale paths, never one
outside the volume's cache folders, a symlink, or a path this job or a live job on the volume uses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jobs.agent.manifest import recipe_hash

from .bucket import Bucket
from .world import Agent, Job, put_job

OLD_MODEL_PATHS = ["models/old.safetensors", "models/.old.safetensors.verified"]


def plant(path: Path, files: dict[str, bytes]) -> int:
    """Files under a folder (or one file when the name is empty); their total size."""
    for name, data in files.items():
        target = path / name if name else path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return sum(len(data) for data in files.values())


def with_prune(bucket: Bucket, job: Job, items: list[dict[str, Any]], keep: list[str]) -> None:
    job.manifest["prune"] = {"items": items, "keep": keep}
    bucket.put(job.keys.manifest, json.dumps(job.manifest).encode())


def test_prepare_removes_exactly_the_listed_stale_paths_and_refuses_the_rest(
    bucket: Bucket, agent: Agent, volume: Path
) -> None:
    job = put_job(bucket)
    root = volume / "lorabot"
    old_env = plant(root / "env/0123456789abcdef", {"COMPLETE": b"{}", "venv/lib/big.so": b"x" * 5000})
    old_model = plant(root / "models", {"old.safetensors": b"m" * 3000, ".old.safetensors.verified": b"{}"})
    old_data = plant(root / "datasets" / ("d" * 64), {"COMPLETE": b"d", "a.png": b"p" * 700})
    plant(root / "models", {"busy.safetensors": b"b" * 100})  # a live job trains on it
    plant(volume / "elsewhere", {"precious.txt": b"keep me"})
    os.symlink(volume / "elsewhere", root / "models/link.safetensors")
    plant(root / "jobs/j9", {"READY": b"{}"})
    own_env = f"env/{recipe_hash(job.manifest['env'])}"
    with_prune(
        bucket,
        job,
        [
            {"kind": "env", "key": "0123456789abcdef", "paths": ["env/0123456789abcdef"]},
            {"kind": "model", "key": "old.safetensors", "paths": OLD_MODEL_PATHS},
            {"kind": "dataset", "key": "d" * 64, "paths": [f"datasets/{'d' * 64}"]},
            {"kind": "model", "key": "busy.safetensors", "paths": ["models/busy.safetensors"]},
            {"kind": "env", "key": "mine", "paths": [own_env]},
            {"kind": "model", "key": "base.safetensors", "paths": ["models/base.safetensors"]},
            {"kind": "model", "key": "wd14", "paths": ["models/wd14"]},
            {"kind": "model", "key": "link", "paths": ["models/link.safetensors"]},
            {"kind": "env", "key": "escape", "paths": ["env/../../elsewhere"]},
            {"kind": "env", "key": "job", "paths": ["jobs/j9"]},
            {"kind": "dataset", "key": "gone", "paths": [f"datasets/{'e' * 64}"]},
        ],
        keep=["models/busy.safetensors"],
    )  # fmt: skip

    code, out = agent.run(job, "prepare")
    assert code == 0, out
    status = job.status("prepare")
    assert status["phase"] == "ready", status["error"]
    pruned = {(r["kind"], r["key"]): r for r in status["pruned"]}
    assert [(r["deleted"], r["refused"]) for r in status["pruned"][:3]] == [
        (["env/0123456789abcdef"], []),
        (OLD_MODEL_PATHS, []),
        ([f"datasets/{'d' * 64}"], []),
    ]
    # The files' bytes (apparent sizes), and the files are gone.
    assert pruned[("env", "0123456789abcdef")]["freed_bytes"] == old_env
    assert pruned[("model", "old.safetensors")]["freed_bytes"] == old_model
    assert pruned[("dataset", "d" * 64)]["freed_bytes"] == old_data
    # A path already gone counts as deleted, with nothing freed: the bot may forget that entry.
    assert (pruned[("dataset", "gone")]["deleted"], pruned[("dataset", "gone")]["freed_bytes"]) == (
        [f"datasets/{'e' * 64}"],
        0,
    )
    for gone in (
        "env/0123456789abcdef",
        "models/old.safetensors",
        "models/.old.safetensors.verified",
        f"datasets/{'d' * 64}",
    ):
        assert not os.path.lexists(root / gone), gone
    assert not [p.name for p in root.glob("*/.*pruning-*")]

    refusals = {
        key: [r["reason"] for r in pruned[(kind, key)]["refused"]]
        for kind, key in pruned
        if pruned[(kind, key)]["refused"]
    }
    in_use = ["in use (this job's manifest or a live job on this volume)"]
    assert refusals == {
        "busy.safetensors": in_use,
        "mine": in_use,
        "base.safetensors": in_use,
        "wd14": in_use,
        "link": ["a symlink"],
        "escape": ["not a direct child of env/, models/, datasets/, captioned/ or hf/tokenizers/"],
        "job": ["not a direct child of env/, models/, datasets/, captioned/ or hf/tokenizers/"],
    }
    assert (root / "models/busy.safetensors").read_bytes() == b"b" * 100
    assert (volume / "elsewhere/precious.txt").read_bytes() == b"keep me"
    assert (root / "models/link.safetensors").is_symlink() and (root / "jobs/j9/READY").is_file()
    # The job's own environment and model were built after the removals and are there.
    assert (root / own_env / "COMPLETE").is_file() and (root / "models/base.safetensors").is_file()
    steps = {s["name"]: s["state"] for s in status["steps"]}
    assert steps["prune"] == "done" and steps["env"] == "done"


def test_a_half_removed_leftover_is_swept_and_a_prepare_without_a_prune_section_touches_nothing(
    bucket: Bucket, agent: Agent, volume: Path
) -> None:
    job = put_job(bucket)
    root = volume / "lorabot"
    plant(root / "models", {"old.safetensors": b"m" * 10})
    code, out = agent.run(job, "prepare")
    assert code == 0, out
    assert "pruned" not in job.status("prepare") and (root / "models/old.safetensors").is_file()
    assert "prune" not in {s["name"] for s in job.status("prepare")["steps"]}

    plant(root / "env/.0123456789abcdef.pruning-4242", {"venv/x": b"x" * 50})  # a pod died while removing it
    second = put_job(bucket, "j2")
    with_prune(bucket, second, [{"kind": "model", "key": "old.safetensors", "paths": ["models/old.safetensors"]}], [])
    code, out = agent.run(second, "prepare", extra={"RUNPOD_POD_ID": "pod-prepare-2"})
    assert code == 0, out
    assert [(r["key"], r["freed_bytes"]) for r in second.status("prepare")["pruned"]] == [("old.safetensors", 10)]
    assert not (root / "env/.0123456789abcdef.pruning-4242").exists()
    assert not (root / "models/old.safetensors").exists()


def test_a_malformed_prune_section_fails_the_stage_before_anything_is_removed(
    bucket: Bucket, agent: Agent, volume: Path
) -> None:
    job = put_job(bucket)
    plant(volume / "lorabot/models", {"old.safetensors": b"m"})
    with_prune(bucket, job, [{"kind": "venv", "key": "x", "paths": ["models/old.safetensors"]}], [])
    code, _out = agent.run(job, "prepare")
    status = job.status("prepare")
    assert code != 0 and status["phase"] == "failed"
    assert status["error"]["kind"] == "internal" and "prune.items[0]" in status["error"]["message"]
    assert (volume / "lorabot/models/old.safetensors").is_file()


def test_a_flux_models_extras_its_tokenizers_and_a_datasets_captioned_copy_go_but_never_this_jobs_own(
    bucket: Bucket, agent: Agent, volume: Path
) -> None:
    # This job (SDXL trainer: the CLIP-L and CLIP-G tokenizers) also loads an extra file, clip_l.
    job = put_job(bucket, extra_models={"clip_l.safetensors": b"c" * 40})
    root = volume / "lorabot"
    flux = plant(root / "models", {"flux1-old.safetensors": b"f" * 900, ".flux1-old.safetensors.verified": b"{}"})
    flux += plant(root / "models", {"t5xxl.safetensors": b"t" * 600, ".t5xxl.safetensors.verified": b"{}"})
    flux += plant(root / "hf/tokenizers/google_t5-v1_1-xxl", {"spiece.model": b"s" * 70})
    plant(root / "models", {"clip_l.safetensors": b"c" * 40})
    plant(root / "hf/tokenizers/openai_clip-vit-large-patch14", {"vocab.json": b"{}"})
    data = plant(root / "datasets" / ("d" * 64), {"COMPLETE": b"d", "a.png": b"p" * 300})
    data += plant(root / "captioned", {"k1.json": b'{"sha256": "' + b"c" * 64 + b'"}', "k1.zip": b"z" * 200})
    data += plant(root / "datasets" / ("c" * 64), {"COMPLETE": b"c", "a.png": b"p" * 300, "a.txt": b"kana"})
    plant(root / "captioned", {"live.json": b"{}", "live.zip": b"z"})  # a live job on the volume reuses these
    flux_paths = [
        "models/flux1-old.safetensors", "models/.flux1-old.safetensors.verified",
        "models/t5xxl.safetensors", "models/.t5xxl.safetensors.verified",
        "hf/tokenizers/google_t5-v1_1-xxl",
    ]  # fmt: skip
    data_paths = [f"datasets/{'d' * 64}", "captioned/k1.json", "captioned/k1.zip", f"datasets/{'c' * 64}"]
    with_prune(
        bucket,
        job,
        [
            {"kind": "model", "key": "flux1-old.safetensors+tokenizers-x", "paths": flux_paths},
            {"kind": "dataset", "key": "d" * 64, "paths": data_paths},
            # What the bot never asks for, refused here all the same: this job's extra and tokenizer, a live job's.
            {"kind": "model", "key": "mine", "paths": [
                "models/clip_l.safetensors", "hf/tokenizers/openai_clip-vit-large-patch14",
                "hf/tokenizers/laion_CLIP-ViT-bigG-14-laion2B-39B-b160k",
            ]},
            {"kind": "dataset", "key": "live", "paths": ["captioned/live.json", "captioned/live.zip"]},
            {"kind": "model", "key": "deep", "paths": ["hf/tokenizers/google_t5-v1_1-xxl/spiece.model", "hf/x"]},
        ],
        keep=["captioned/live.json", "captioned/live.zip"],
    )  # fmt: skip

    code, out = agent.run(job, "prepare")
    assert code == 0, out
    status = job.status("prepare")
    assert status["phase"] == "ready", status["error"]
    pruned = {r["key"]: r for r in status["pruned"]}
    assert (pruned["flux1-old.safetensors+tokenizers-x"]["deleted"], pruned["d" * 64]["deleted"]) == (
        flux_paths,
        data_paths,
    )
    assert pruned["flux1-old.safetensors+tokenizers-x"]["freed_bytes"] == flux
    assert pruned["d" * 64]["freed_bytes"] == data
    for gone in [*flux_paths, *data_paths]:
        assert not os.path.lexists(root / gone), gone
    in_use = "in use (this job's manifest or a live job on this volume)"
    assert [r["reason"] for r in pruned["mine"]["refused"]] == [in_use] * 3
    assert [r["reason"] for r in pruned["live"]["refused"]] == [in_use] * 2
    assert [r["reason"] for r in pruned["deep"]["refused"]] == [
        "not a direct child of env/, models/, datasets/, captioned/ or hf/tokenizers/"
    ] * 2
    assert (root / "models/clip_l.safetensors").read_bytes() == b"c" * 40
    assert (root / "hf/tokenizers/openai_clip-vit-large-patch14").is_dir()
    assert (root / "captioned/live.json").is_file() and (root / "captioned/live.zip").is_file()


def test_a_cache_folder_that_is_a_symlink_is_never_followed(bucket: Bucket, agent: Agent, volume: Path) -> None:
    job = put_job(bucket)
    plant(volume / "elsewhere", {"k1.zip": b"precious"})
    (volume / "lorabot").mkdir(parents=True, exist_ok=True)
    os.symlink(volume / "elsewhere", volume / "lorabot/captioned")
    with_prune(bucket, job, [{"kind": "dataset", "key": "d", "paths": ["captioned/k1.zip"]}], [])
    code, out = agent.run(job, "prepare")
    assert code == 0, out
    [result] = job.status("prepare")["pruned"]
    assert (result["deleted"], result["refused"]) == (
        [],
        [{"path": "captioned/k1.zip", "reason": "captioned/ is a symlink"}],
    )
    assert (volume / "elsewhere/k1.zip").read_bytes() == b"precious"


def test_the_captioned_copy_this_job_would_reuse_is_never_removed(bucket: Bucket, agent: Agent, volume: Path) -> None:
    from jobs.agent.captions import parse_caption_spec

    from .test_agent_captions import captioned_job

    job = captioned_job(bucket)
    spec = parse_caption_spec(job.manifest["captions"])
    assert spec is not None
    key = spec.cache_key(job.manifest["dataset"]["sha256"])
    root = volume / "lorabot"
    plant(root / "captioned", {f"{key}.json": json.dumps({"sha256": "c" * 64}).encode(), f"{key}.zip": b"z"})
    plant(root / "datasets" / ("c" * 64), {"a.png": b"p"})  # no COMPLETE: the job tags again (and keeps it whole)
    paths = [f"captioned/{key}.json", f"captioned/{key}.zip", f"datasets/{'c' * 64}"]
    with_prune(bucket, job, [{"kind": "dataset", "key": "d" * 64, "paths": paths}], [])
    code, out = agent.run(job, "prepare")
    assert code == 0, out
    [result] = job.status("prepare")["pruned"]
    assert result["deleted"] == [] and [r["path"] for r in result["refused"]] == paths
    assert (root / "datasets" / ("c" * 64) / "a.png").is_file()
