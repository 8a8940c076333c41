"""The agent's small parts: when a file is complete, what sd-scripts' output means, redaction, the bundle."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from jobs.agent.artifacts import StableSizes, png_complete, safetensors_complete
from jobs.agent.manifest import ManifestError, parse_manifest, recipe_hash
from jobs.agent.redact import Redactor
from jobs.agent.trainlog import TrainLog, classify_failure
from jobs.agent_bundle import build_agent
from jobs.manifest import recipe_hash as bot_recipe_hash
from jobs.sandbox.recipe import sandbox_recipe


def safetensors(data: bytes = b"\x00" * 16) -> bytes:
    header = json.dumps(
        {
            "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, len(data)]},
            "__metadata__": {"ss_output_name": "kana"},
        }
    ).encode()
    return struct.pack("<Q", len(header)) + header + data


def test_a_safetensors_file_is_complete_only_when_its_length_matches_its_header(tmp_path: Path):
    path = tmp_path / "kana-000001.safetensors"
    whole = safetensors()
    path.write_bytes(whole[:-3])
    assert not safetensors_complete(path)
    path.write_bytes(whole)
    assert safetensors_complete(path)
    path.write_bytes(whole[:5])
    assert not safetensors_complete(path)


def test_a_png_is_complete_only_with_its_iend_chunk(tmp_path: Path):
    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    path = tmp_path / "s.png"
    path.write_bytes(buffer.getvalue()[:-6])
    assert not png_complete(path)
    path.write_bytes(buffer.getvalue())
    assert png_complete(path)


def test_a_file_must_keep_its_size_across_two_polls_unless_the_writer_has_exited(tmp_path: Path):
    path = tmp_path / "kana.safetensors"
    path.write_bytes(safetensors())
    sizes = StableSizes()
    assert not sizes.complete(path)
    assert sizes.complete(path)
    assert StableSizes().complete(path, settled=True)


def test_progress_comes_from_the_tqdm_bar_and_the_epoch_lines():
    log = TrainLog(total_epochs=10)
    log.feed("  total optimization steps / 学習ステップ数: 5900\n\nepoch 2/10\n\n")
    log.feed("steps:  10%|█         | 590/5900 [05:01<45:10,  1.96it/s, avr_loss=0.0912]\rsteps:  10%|█   ")
    assert log.snapshot() == {
        "step": 590,
        "total_steps": 5900,
        "epoch": 2,
        "total_epochs": 10,
        "loss": 0.0912,
        "it_per_s": 1.96,
        "eta_seconds": 2709.2,
        "epoch_end_s": None,
    }


def test_after_a_resume_the_restarted_bar_is_offset_by_the_epochs_already_done():
    log = TrainLog(total_epochs=10, resumed_epochs=4)
    log.feed("  total optimization steps / 学習ステップ数: 100\nepoch 5/10\n")
    log.feed("steps:   2%|▏         | 2/100 [00:01<00:49,  2.00it/s, avr_loss=0.05]\n")
    assert log.progress.step == 42 and log.progress.eta_seconds == 29.0


def bar(n: int, total: int, bar_seconds: float) -> str:
    """A tqdm redraw as sd-scripts' bar prints it (smoothing=0: rate = n / the bar's own elapsed time)."""
    percent, elapsed = n * 100 // total, int(bar_seconds)
    return f"\rsteps: {percent:3d}%|█  | {n}/{total} [00:{elapsed:02d}<00:10, {n / bar_seconds:.2f}it/s]"


def test_the_eta_counts_the_epoch_ends_the_bar_pauses_for():
    """4 epochs of 10 steps at 2 it/s, each epoch's end (checkpoint, state, samples) taking 20 s the bar does not
    count: 1.5 s into epoch 2, 29 steps (14.5 s) and 3 ends (60 s) are left; the bar alone says 14.5 s."""
    log = TrainLog(total_epochs=4)
    log.feed("  total optimization steps / 学習ステップ数: 40\n\rsteps:   0%|  | 0/40 [00:00<?, ?it/s]", now=0.0)
    log.feed("\nepoch 1/4\n", now=0.1)
    for n in range(1, 11):
        log.feed(bar(n, 40, n * 0.5), now=n * 0.5)
    assert log.progress.epoch_end_s is None and log.progress.eta_seconds == 15.0  # no end measured yet
    log.feed("\nepoch 2/4\n", now=25.0)  # the bar's unpause() hid the 20 s pause
    log.feed(bar(11, 40, 5.5), now=25.5)
    assert log.progress.epoch_end_s == 20.0
    assert log.progress.eta_seconds == 74.5
    # The agent spent 4 s uploading; the trainer printed steps 12-19 meanwhile: only the newest line is measured,
    # so the error is under a step (the last one was printed 0.5 s before this read), not the 4 s.
    log.feed("".join(bar(n, 40, n * 0.5) for n in range(12, 20)), now=30.0)
    assert log.progress.epoch_end_s == 20.5


def test_a_read_during_an_epoch_end_is_not_taken_for_a_longer_end():
    log = TrainLog(total_epochs=2)
    log.feed("  total optimization steps / 学習ステップ数: 4\n\rsteps:   0%|  | 0/4 [00:00<?, ?it/s]", now=0.0)
    log.feed("\nepoch 1/2\n" + bar(1, 4, 1.0) + bar(2, 4, 2.0), now=2.0)
    log.feed("\nepoch 2/2\n" + bar(3, 4, 3.0), now=13.0)
    assert log.progress.epoch_end_s == 10.0
    log.feed(bar(4, 4, 4.0), now=14.0)
    log.feed("", now=30.0)  # sampling after the last step: the bar is still, the end is under way
    assert log.progress.epoch_end_s == 10.0 and log.progress.eta_seconds == 10.0


def test_failures_are_named_from_the_log():
    assert classify_failure(["torch.OutOfMemoryError: CUDA out of memory. Tried"], False, 1)[0] == "oom"
    assert classify_failure(["AssertionError: network for Text Encoder cannot be trained"], False, 1)[0] == "assertion"
    missing = ["FileNotFoundError: [Errno 2] No such file or directory: 'x'"]
    assert classify_failure(missing, False, 1)[0] == "missing_file"
    assert classify_failure(["ok"], True, 1)[0] == "nan"
    kind, message = classify_failure(["RuntimeError: boom"], False, 1)
    assert kind == "trainer_crash" and "exited with code 1" in message and "boom" in message


def test_secrets_and_presigned_queries_are_masked():
    redact = Redactor({"HF_TOKEN": "hf_abcdef", "PATH": "/usr/bin", "AWS_SECRET_ACCESS_KEY": "s3cr3t!"})
    text = redact("token hf_abcdef s3cr3t! at https://b.example/jobs/j1/x?X-Amz-Signature=abc&X-Amz-Credential=k ok")
    assert text == "token *** *** at https://b.example/jobs/j1/x?*** ok"
    assert redact("/usr/bin") == "/usr/bin"


def test_the_manifest_is_checked_with_specific_messages():
    with pytest.raises(ManifestError, match="version 2 is not supported"):
        parse_manifest(b'{"version": 2}')
    with pytest.raises(ManifestError, match="manifest env is missing"):
        parse_manifest(b'{"version": 1}')
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_manifest(b"{")


def test_the_agent_keys_the_env_cache_exactly_as_the_bot_does():
    recipe = sandbox_recipe(Path("/standin"))
    assert recipe_hash(recipe) == bot_recipe_hash(recipe)


def test_the_bundle_is_deterministic_and_runs_as_a_zipapp(tmp_path: Path):
    first, sha = build_agent()
    second, sha_again = build_agent()
    assert first == second and sha == sha_again
    names = zipfile.ZipFile(BytesIO(first)).namelist()
    assert names[0] == "__main__.py" and "agent/train.py" in names and "agent/__main__.py" in names
    pyz = tmp_path / "agent.pyz"
    pyz.write_bytes(first)
    done = subprocess.run([sys.executable, str(pyz), "bogus"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "usage: python3 agent.pyz prepare|train" in done.stderr
    done = subprocess.run(
        [sys.executable, str(pyz), "train"], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin"}
    )
    assert done.returncode == 2 and "LORABOT_MANIFEST_URL is not set" in done.stderr
