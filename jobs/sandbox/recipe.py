"""The offline environment recipe (tests and the sandbox cloud): the manifest's `env` shape, built in seconds.

Same steps as the real recipe (jobs/recipe.py) where it matters to the agent (a venv, an sd-scripts folder,
a launcher inside the venv, a GPU check), with no network: the venv has no pip, the "clone" copies the stand-in
sd-scripts, and the GPU check passes only on pods the emulator gives a (fake) GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

COPY_TREE = (
    "import shutil,sys; shutil.copytree(sys.argv[1], sys.argv[2], "
    "ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))"
)
FAKE_GPU_CHECK = "import os,sys; sys.exit(0 if os.environ.get('LORABOT_FAKE_GPU') else 3)"


def sandbox_recipe(standin_dir: Path, python: str | None = None) -> dict[str, Any]:
    """`standin_dir` is the stand-in sd-scripts folder (jobs/sandbox/sdscripts); `python` builds the venv."""
    return {
        "name": "sandbox-standin-sd-scripts",
        "python": python or sys.executable,
        "steps": [
            {"name": "venv", "argv": ["{python}", "-m", "venv", "--without-pip", "{venv}"]},
            {"name": "sd-scripts", "argv": ["{python}", "-c", COPY_TREE, str(standin_dir), "{sd_scripts}"]},
        ],
        "launcher": ["{venv}/bin/python"],
        "gpu_check": ["{venv}/bin/python", "-c", FAKE_GPU_CHECK],
    }
