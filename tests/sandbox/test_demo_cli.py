"""`lorabot demo` as the README says to run it: a subprocess with no credentials, results on disk in < 120 s."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

from PIL import Image

LORABOT = Path(sys.executable).parent / "lorabot"


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """A machine with no credentials at all: no RunPod, S3, Discord or Hugging Face variables."""
    drop = ("RUNPOD_", "S3_", "AWS_", "DISCORD_", "HF_", "LORABOT_", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["HOME"] = str(tmp_path / "home")
    return env


def _safetensors_metadata(path: Path) -> dict[str, str]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]).get("__metadata__", {})


def test_lorabot_demo_trains_a_lora_with_samples_and_a_cost_table(tmp_path: Path):
    """How long it takes is `bench.demo`'s figure (goal: under two minutes); the timeout only tells a hang."""
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [str(LORABOT), "demo", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=150,
        env=_clean_env(tmp_path),
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = data_dir / "demo" / "results"
    lora = results / "lbdemo.safetensors"
    assert _safetensors_metadata(lora)["ss_output_name"] == "lbdemo"
    checkpoints = sorted(p.name for p in (results / "epochs").iterdir())
    assert checkpoints == [f"lbdemo-00000{e}.safetensors" for e in (1, 2, 3)]
    samples = sorted((results / "samples").glob("*.png"))
    assert len(samples) == 3 * 2  # every epoch samples the preset's two default prompts
    with Image.open(samples[0]) as image:
        assert image.format == "PNG"
    # The thread's contact sheet lands in the results too: one image, rows = the 2 prompts, columns = the 3 epochs.
    [sheet] = sorted(results.glob("contact-sheet-*"))
    with Image.open(sheet) as image:
        assert sheet.name == "contact-sheet-1-of-1.png" and image.format == "PNG"
        assert image.width > 3 * 256 and image.height > 2 * 256
    cost = (results / "cost.md").read_text()
    assert "| **Total** |" in cost and "$0 real money" in cost
    figures = json.loads((results / "cost.json").read_text())
    assert figures["real_money_usd"] == 0
    assert figures["total_micros"] == sum(item["amount_micros"] for item in figures["items"]) > 0
    # The ledger matches what the emulated RunPod billed, within 1% (rounding of per-second billing).
    assert abs(figures["total_micros"] - figures["emulator_bill_micros"]) <= figures["emulator_bill_micros"] / 100
    assert {item["item"].split(" ")[0] for item in figures["items"]} == {"cpu_pod", "gpu_pod", "volume"}
    assert (data_dir / "demo" / "lorabot.db").is_file()
    # The terminal shows the thread's notices, a progress bar and the sandbox label.
    out = done.stdout
    assert "sandbox" in out and "$0 real money" in out
    for text in ("preparing:", "training started", "epoch 1/3", "epoch 3/3", "succeeded: final LoRA"):
        assert text in out, text
    assert "[##############################] 72/72 steps" in out
    # Library chatter stays out of the terminal; a retried RunPod call may log a warning on a busy machine.
    assert "Traceback" not in done.stderr and "INFO" not in done.stderr, done.stderr[-2000:]


def test_a_data_folder_with_someone_elses_demo_folder_is_refused_and_left_alone(tmp_path: Path):
    keep = tmp_path / "data" / "demo" / "mine.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("not the demo's")

    done = subprocess.run(
        [str(LORABOT), "demo", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(tmp_path),
    )

    assert done.returncode == 1
    assert "was not made by lorabot demo" in done.stderr
    assert keep.read_text() == "not the demo's"
    assert sorted(p.name for p in keep.parent.iterdir()) == ["mine.txt"]


def test_bad_demo_options_are_refused_with_the_reason(tmp_path: Path):
    done = subprocess.run(
        [str(LORABOT), "demo", "--epochs", "0"], capture_output=True, text=True, timeout=60, env=_clean_env(tmp_path)
    )

    assert done.returncode == 2
    assert "--epochs: 0 is not between 1 and 10" in done.stderr
