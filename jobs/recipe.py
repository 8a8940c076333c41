"""The environment recipe real pods build on the Network Volume (seed 000's setup, pinned).

The agent runs each step's argv in order, with `{python}`, `{venv}` and `{sd_scripts}` filled in, and keys the cache
on the volume by a hash of this whole dict: change a pin and the next job builds a fresh environment beside the old.
"""

from __future__ import annotations

from typing import Any

SD_SCRIPTS_REPO = "https://github.com/kohya-ss/sd-scripts"
SD_SCRIPTS_COMMIT = "48d368fa"
TORCH_PINS = ["torch==2.4.0", "torchvision==0.19.0"]
TORCH_INDEX = "https://download.pytorch.org/whl/cu124"
# Installed with --no-deps: otherwise pip "helpfully" upgrades torch to 2.5 (seed 000).
XFORMERS_PIN = "xformers==0.0.27.post2"


def runpod_recipe() -> dict[str, Any]:
    return {
        "name": f"sd-scripts-{SD_SCRIPTS_COMMIT}-torch2.4.0-cu124",
        "python": "python3",
        # expected_s: seconds each step takes on RunPod's CPU pods (seed 000: ~30 min to the volume being ready,
        # most of it the model download); the agent's ETA, and so the GPU reservation, rests on these.
        "steps": [
            {"name": "venv", "argv": ["{python}", "-m", "venv", "{venv}"], "expected_s": 10},
            {
                "name": "sd-scripts",
                "argv": ["git", "clone", "--filter=blob:none", SD_SCRIPTS_REPO, "{sd_scripts}"],
                "expected_s": 30,
            },
            {"name": "checkout", "argv": ["git", "-C", "{sd_scripts}", "checkout", SD_SCRIPTS_COMMIT], "expected_s": 5},
            {
                "name": "torch",
                "argv": ["{venv}/bin/pip", "install", *TORCH_PINS, "--index-url", TORCH_INDEX],
                "expected_s": 420,
            },
            {"name": "xformers", "argv": ["{venv}/bin/pip", "install", XFORMERS_PIN, "--no-deps"], "expected_s": 60},
            # requirements.txt ends with `-e .`, which pip resolves against the working directory.
            {
                "name": "requirements",
                "argv": ["{venv}/bin/pip", "install", "-r", "requirements.txt"],
                "cwd": "{sd_scripts}",
            },
        ],
        "launcher": ["{venv}/bin/accelerate", "launch", "--num_cpu_threads_per_process", "1"],
        "gpu_check": ["{venv}/bin/python", "-c", "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 3)"],
    }
