"""LORABOT_STANDIN_REAL_SIZES=1: the stand-in writes LoRAs and state folders as large as sd-scripts' real ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

from jobs.agent.artifacts import safetensors_complete, state_complete
from tests.agent.world import standin_hub

SDSCRIPTS = Path(__file__).resolve().parents[2] / "jobs" / "sandbox" / "sdscripts"
MB = 1_000_000


def test_an_sd15_dim_32_lora_is_38_mb_and_its_adamw8bit_state_115_mb(tmp_path: Path) -> None:
    concept = tmp_path / "data" / "1_kana"
    concept.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(concept / "img.png")
    (tmp_path / "model.safetensors").write_bytes(os.urandom(1000))
    args = [
        f"--pretrained_model_name_or_path={tmp_path / 'model.safetensors'}",
        f"--train_data_dir={tmp_path / 'data'}",
        f"--output_dir={tmp_path / 'out'}",
        "--output_name=kana",
        "--network_module=networks.lora",
        "--network_dim=32",
        "--network_alpha=16",
        "--max_train_epochs=1",
        "--save_precision=fp16",
        "--optimizer_type=AdamW8bit",
        "--save_state",
    ]
    # No --tokenizer_cache_dir: the stand-in, like sd-scripts, asks the Hub for CLIP's tokenizer (a stand-in one).
    env = {
        **os.environ,
        "LORABOT_TIME_SCALE": "2000",
        "LORABOT_STANDIN_REAL_SIZES": "1",
        "HF_ENDPOINT": standin_hub().url,
    }
    done = subprocess.run(
        [sys.executable, str(SDSCRIPTS / "train_network.py"), *args], capture_output=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    lora = tmp_path / "out" / "kana.safetensors"
    assert 37.5 * MB < lora.stat().st_size < 38.5 * MB  # 18.9 M parameters in fp16
    assert safetensors_complete(lora)
    weights = load_file(lora)
    assert all(np.isfinite(w).all() for w in weights.values())
    state = tmp_path / "out" / "kana-state"
    assert state_complete(state, 1)
    state_bytes = sum(p.stat().st_size for p in state.iterdir())
    assert 112 * MB < state_bytes < 116 * MB  # fp32 weights (75.5 MB) + 8-bit Adam moments (37.8 MB)
