"""Nothing is fetched on GPU time: the CPU stage puts the tokenizers the trainer loads on the volume, and the
trainer runs with the Hub offline (sd-scripts' `--tokenizer_cache_dir`, HF_HUB_OFFLINE=1), on a GPU pod whose
network guard (tests/world/netguard) fails the test if anything but the bucket is reached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from jobs.sdscripts import CLIP_G, CLIP_L

from .bucket import Bucket
from .world import STANDIN, Agent, Job, put_job, standin_hub


def tokenizers_dir(volume: Path) -> Path:
    return volume / "lorabot" / "hf" / "tokenizers"


def trainer_log(agent: Agent, job: Job) -> str:
    logs = sorted((agent.volume / "lorabot" / "jobs" / job.job_id / "logs").glob("trainer-*.log"))
    return logs[-1].read_text()


def test_the_cpu_stage_fetches_each_tokenizer_file_once_and_the_trainer_loads_them_offline(
    bucket: Bucket, agent: Agent, volume: Path
):
    job = put_job(bucket, epochs=1)
    hub = standin_hub()
    before = len(hub.fetched())
    assert agent.run(job, "prepare")[0] == 0
    fetched = hub.fetched()[before:]
    for repo in (CLIP_L, CLIP_G):
        folder = tokenizers_dir(volume) / repo.repo.replace("/", "_")
        names = {path.name for path in folder.iterdir()}
        # The stand-in Hub, like the real repos, has tokenizer.json but no added_tokens.json (optional, skipped).
        assert names == {*repo.files, "tokenizer.json", ".lorabot-tokenizer.json"}
        assert sorted(p for p in fetched if p.startswith(f"/{repo.repo}/")) == sorted(
            f"/{repo.repo}/resolve/main/{name}" for name in (*repo.files, "tokenizer.json")
        )
    assert not any(name.endswith(".safetensors") or name.endswith(".bin") for name in fetched)

    second = put_job(bucket, "j2", epochs=1)
    assert agent.run(second, "prepare")[0] == 0
    assert hub.fetched()[before + len(fetched) :] == [], "a second job on the volume must not fetch them again"

    assert agent.run(job, "train", gpu=True)[0] == 0
    assert job.status("train")["phase"] == "succeeded"
    log = trainer_log(agent, job)
    assert f"load tokenizer from cache: {tokenizers_dir(volume)}/openai_clip-vit-large-patch14" in log
    assert f"load tokenizer from cache: {tokenizers_dir(volume)}/laion_CLIP-ViT-bigG-14-laion2B-39B-b160k" in log


def test_a_tokenizer_the_hub_lacks_fails_the_cpu_stage_with_what_is_missing(bucket: Bucket, agent: Agent, volume: Path):
    job = put_job(bucket, epochs=1)
    tokenizers = job.manifest["tokenizers"]
    tokenizers[1]["files"][0]["url"] = tokenizers[1]["files"][0]["url"].replace("vocab.json", "nothing.json")
    bucket.put(job.keys.manifest, json.dumps(job.manifest).encode())
    assert agent.run(job, "prepare")[0] == 1
    error = job.status("prepare")["error"]
    assert error["kind"] == "model_download"
    assert error["message"].startswith("tokenizer laion/CLIP-ViT-bigG-14-laion2B-39B-b160k: vocab.json could not be")
    assert "HTTP 404" in error["message"] and "the Hub is offline" in error["message"]
    assert not (volume / "lorabot" / "jobs" / job.job_id / "READY").exists()
    assert not (tokenizers_dir(volume) / "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k").exists()


def test_a_trainer_without_its_tokenizers_fails_as_sd_scripts_does_with_the_hub_offline(
    bucket: Bucket, agent: Agent, volume: Path
):
    """Here the folder went missing after READY: sd-scripts would ask the Hub, which is offline on the GPU pod."""
    job = put_job(bucket, epochs=1)
    assert agent.run(job, "prepare")[0] == 0
    clip_g = tokenizers_dir(volume) / "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"
    clip_g.rename(clip_g.with_name("moved"))
    assert agent.run(job, "train", gpu=True)[0] == 1
    assert job.status("train")["phase"] == "failed"
    assert "OSError: Can't load tokenizer for 'laion/CLIP-ViT-bigG-14-laion2B-39B-b160k'" in trainer_log(agent, job)


def test_the_gpu_pods_network_guard_fails_a_trainer_that_reaches_for_the_hub(
    bucket: Bucket, agent: Agent, volume: Path, tmp_path: Path
):
    """The guard itself: the stand-in trainer run as sd-scripts would be without HF_HUB_OFFLINE, with no tokenizer
    on the volume, asks the (stand-in) Hub; under a GPU pod's guard the request is refused and recorded."""
    job = put_job(bucket, epochs=1)
    argv = [sys.executable, str(STANDIN / "sdxl_train_network.py"), f"--tokenizer_cache_dir={tmp_path / 'none'}"]
    argv += ["--pretrained_model_name_or_path=x", "--output_dir=out", "--train_data_dir=none"]
    env = {"PATH": os.environ["PATH"], "HF_ENDPOINT": standin_hub().url, **agent.guard_env(job)}
    hub_before = len(standin_hub().requests)
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "a GPU pod may reach only the bucket" in done.stdout + done.stderr
    assert f"connect to ('127.0.0.1', {standin_hub().url.rsplit(':', 1)[1]})" in agent.violations()
    assert len(standin_hub().requests) == hub_before, "the refused request never reached the Hub"
    agent.violations_log.unlink()  # this test caused it on purpose: the fixture's teardown checks the rest


def test_the_guard_refuses_name_lookups_and_lets_the_bucket_through(bucket: Bucket, agent: Agent, tmp_path: Path):
    job = put_job(bucket, epochs=1)
    code = (
        "import socket, sys, urllib.request\n"
        "urllib.request.urlopen(sys.argv[1]).read()\n"
        "try:\n"
        "    socket.getaddrinfo('huggingface.co', 443)\n"
        "except ConnectionRefusedError as exc:\n"
        "    print('refused:', exc)\n"
    )
    env = {"PATH": os.environ["PATH"], **agent.guard_env(job)}
    done = subprocess.run([sys.executable, "-c", code, job.manifest_url], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "refused: lorabot test world" in done.stdout
    assert "name lookup of 'huggingface.co'" in agent.violations()
    agent.violations_log.unlink()
