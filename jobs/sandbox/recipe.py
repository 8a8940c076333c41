"""The offline environment recipe (tests and the sandbox cloud): the manifest's `env` shape, built in seconds.

Same steps as the real recipe (jobs/recipe.py) where it matters to the agent (a constraints file in `files`, a
venv, an sd-scripts folder, a launcher inside the venv, a GPU check), with no network: the venv has no pip, the
"install" step only reads the constraints file as `pip install -c` would (failing when the agent did not write it),
the "clone" copies the stand-in sd-scripts, and the GPU check passes only on pods the emulator gives a (fake) GPU.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

COPY_TREE = (
    "import shutil,sys; shutil.copytree(sys.argv[1], sys.argv[2], "
    "ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))"
)
# The stand-in needs no packages; the file is there so the agent's `files` and `{env_dir}` are exercised.
SANDBOX_CONSTRAINTS = "# The stand-in sd-scripts installs nothing; pip would read this file with -c.\n"
READ_CONSTRAINTS = (
    "import sys; text = open(sys.argv[1]).read(); "
    "print(f'constraints: {sum(1 for l in text.splitlines() if l and not l.startswith(chr(35)))} pins')"
)
# Exits as the real check does (jobs/recipe.py GPU_CHECK): 3 with the reason when there is no (fake) GPU.
FAKE_GPU_CHECK = (
    "import os,sys\n"
    "gpu = os.environ.get('LORABOT_FAKE_GPU')\n"
    "print(f'sees {gpu}' if gpu else 'no LORABOT_FAKE_GPU on this pod: no CUDA device', file=sys.stderr)\n"
    "sys.exit(0 if gpu else 3)\n"
)


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def sandbox_recipe(standin_dir: Path, python: str | None = None, python_version: str | None = None) -> dict[str, Any]:
    """`standin_dir` is the stand-in sd-scripts folder (jobs/sandbox/sdscripts); `python` builds the venv and
    `python_version` is its major.minor (this interpreter's when `python` is not given; unrecorded otherwise)."""
    if python is None:
        python, python_version = sys.executable, python_version or f"{sys.version_info[0]}.{sys.version_info[1]}"
    recipe: dict[str, Any] = {
        # The stand-in's files are copied into the environment, so their content is part of the recipe's hash: a
        # sandbox volume built before a stand-in script was added (gen_img.py for /try) gets a fresh copy.
        "name": f"sandbox-standin-sd-scripts-{_tree_digest(standin_dir)}",
        "python": python,
        "files": {"constraints.txt": SANDBOX_CONSTRAINTS},
        "steps": [
            {"name": "venv", "argv": ["{python}", "-m", "venv", "--without-pip", "{venv}"]},
            {"name": "install", "argv": ["{venv}/bin/python", "-c", READ_CONSTRAINTS, "{env_dir}/constraints.txt"]},
            {"name": "sd-scripts", "argv": ["{python}", "-c", COPY_TREE, str(standin_dir), "{sd_scripts}"]},
        ],
        "launcher": ["{venv}/bin/python"],
        "gpu_check": ["{venv}/bin/python", "-c", FAKE_GPU_CHECK],
    }
    if python_version is not None:
        recipe["python_version"] = python_version
    return recipe
