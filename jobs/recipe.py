"""The environment recipe real pods build on the Network Volume (seed 000's setup, pinned).

The agent runs each step's argv in order, with `{python}`, `{venv}` and `{sd_scripts}` filled in, and keys the cache
on the volume by a hash of this whole dict: change a pin and the next job builds a fresh environment beside the old.
"""

from __future__ import annotations

from typing import Any

SD_SCRIPTS_REPO = "https://github.com/kohya-ss/sd-scripts"
SD_SCRIPTS_COMMIT = "48d368fa"
# The venv is built on the CPU pod (runpod/base:1.0.2-ubuntu2204) and run on the GPU pod
# (runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04). A venv is bound to the interpreter path that built it
# (`bin/python` links to it, its packages are in lib/pythonX.Y/), and `python3` is a different Python on each image:
# 3.10 on the base image, 3.11 on the PyTorch image, whose Dockerfile relinks /usr/bin/python3. Both images carry
# /usr/bin/python3.11 (the base image installs it beside 3.10, with venv; the PyTorch image's python3 links to it),
# see facts/runpod.md, so the venv is built by that explicit path and means Python 3.11 on both pods. The version
# is recorded too: the agent checks the venv's interpreter against it on both pods (`env_mismatch`).
VENV_PYTHON = "/usr/bin/python3.11"
VENV_PYTHON_VERSION = "3.11"
# sd-scripts at 48d368fa: "The scripts are tested with PyTorch 2.6.0. PyTorch 2.6.0 or later is required." and its
# README installs torch==2.6.0 torchvision==0.21.0 from the cu124 index, the CUDA the GPU image has (12.4.1).
TORCH_PINS = ["torch==2.6.0", "torchvision==0.21.0"]
TORCH_INDEX = "https://download.pytorch.org/whl/cu124"
# Installed with --no-deps: otherwise pip "helpfully" moves torch (seed 000). xFormers' changelog: 0.0.29.post2 is
# the release with wheels for PyTorch 2.6.0 on CUDA 12.4 (0.0.30 needs PyTorch 2.7 and has no cu124 wheels).
XFORMERS_PIN = "xformers==0.0.29.post2"
# The first step on the GPU pod (after the agent's own interpreter check): exit 3 when torch imports but CUDA is not
# available (`no_gpu`); any other failure, e.g. torch not importing, exits 1 with the exception as the last line of
# its traceback (`env_broken`).
GPU_CHECK = (
    "import sys\n"
    "import torch\n"
    "if not torch.cuda.is_available():\n"
    "    print(f'torch {torch.__version__} (CUDA {torch.version.cuda}) finds no CUDA device', file=sys.stderr)\n"
    "    sys.exit(3)\n"
    "print(f'torch {torch.__version__} sees {torch.cuda.get_device_name(0)}')\n"
)


def runpod_recipe() -> dict[str, Any]:
    return {
        "name": f"sd-scripts-{SD_SCRIPTS_COMMIT}-torch2.6.0-cu124-py{VENV_PYTHON_VERSION}",
        "python": VENV_PYTHON,
        "python_version": VENV_PYTHON_VERSION,
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
        "gpu_check": ["{venv}/bin/python", "-c", GPU_CHECK],
    }
