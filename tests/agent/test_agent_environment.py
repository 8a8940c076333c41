"""The GPU pod's first step tells three failures apart, each with its real cause: the venv's interpreter is not the
Python that built it (`env_mismatch`), torch does not import (`env_broken`), torch sees no GPU (`no_gpu`).

RunPod's CPU image has Python 3.10 at /usr/bin/python3 and its PyTorch image relinks that path to 3.11, so a venv built
by `python3` on the CPU pod starts another Python on the GPU pod and finds none of its packages. Here a folder,
`image/bin`, plays the images' /usr/bin: the CPU stage runs with the CPU image's files in it, then the folder is
refilled with the GPU image's files for the train stage, so the venv's interpreter path stays the same and what it
names changes, as on RunPod. This machine has only Python 3.11, so the GPU image's "other Python" at `python3` is a
stand-in: the real 3.11 run outside the venv (so, like the real one, it sees none of the venv's packages) whose
`sys.version_info` says 3.12 (set by a sitecustomize on its PYTHONPATH). Both images have a real `python3.11`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from jobs.agent.manifest import ManifestError, parse_manifest
from jobs.recipe import GPU_CHECK
from jobs.sandbox.recipe import sandbox_recipe

from .bucket import Bucket
from .world import STANDIN, Agent, Job, put_job

# The interpreter behind this test's venv: the one real Python of this machine.
REAL_PYTHON = os.path.realpath(sys._base_executable)
REAL_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
OTHER_VERSION = "3.12"


def cpu_image(bin_dir: Path) -> None:
    """The CPU image's /usr/bin: python3 and python3.11 are the same Python."""
    _clear(bin_dir)
    (bin_dir / "python3").symlink_to(REAL_PYTHON)
    (bin_dir / "python3.11").symlink_to(REAL_PYTHON)


def gpu_image(bin_dir: Path, *, with_python311: bool = True) -> None:
    """The GPU image's /usr/bin: python3 is another Python than the CPU image's; python3.11 is the same."""
    _clear(bin_dir)
    site = bin_dir.parent / "other-python-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(f"import sys\nsys.version_info = ({OTHER_VERSION.replace('.', ', ')}, 0)\n")
    other = bin_dir / "python3"
    other.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {REAL_PYTHON} "$@"\n')
    other.chmod(0o755)
    if with_python311:
        (bin_dir / "python3.11").symlink_to(REAL_PYTHON)


def _clear(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for entry in bin_dir.iterdir():
        entry.unlink()


def use_recipe(bucket: Bucket, job: Job, recipe: dict[str, Any]) -> None:
    job.manifest["env"] = recipe
    bucket.put(job.keys.manifest, json.dumps(job.manifest).encode())


def trainer_started(agent: Agent, job: Job) -> bool:
    return any((agent.volume / "lorabot" / "jobs" / job.job_id / "logs").glob("trainer-*.log"))


@pytest.fixture
def image_bin(tmp_path: Path) -> Path:
    return tmp_path / "image" / "bin"


def test_a_venv_built_by_python3_is_an_env_mismatch_on_the_gpu_image_not_no_gpu(
    bucket: Bucket, agent: Agent, image_bin: Path
):
    """The old recipe (`python3`, no version recorded): the GPU pod says why the venv cannot run, and trains nothing."""
    job = put_job(bucket, epochs=1)
    use_recipe(bucket, job, sandbox_recipe(STANDIN, python=str(image_bin / "python3")))
    cpu_image(image_bin)
    assert agent.run(job, "prepare")[0] == 0
    gpu_image(image_bin)
    code, out = agent.run(job, "train", gpu=True)
    assert code == 1, out
    error = job.status("train")["error"]
    assert error["kind"] == "env_mismatch", error
    assert f"is Python {OTHER_VERSION} on this pod, but the venv was built by Python {REAL_VERSION}" in error["message"]
    assert f"-> {image_bin / 'python3'}" in error["message"]
    assert not trainer_started(agent, job)


def test_a_venv_built_by_the_explicit_python311_trains_on_both_images(bucket: Bucket, agent: Agent, image_bin: Path):
    """The new recipe: an interpreter path both images have at the same version, and that version recorded."""
    job = put_job(bucket, epochs=1)
    recipe = sandbox_recipe(STANDIN, python=str(image_bin / "python3.11"), python_version=REAL_VERSION)
    use_recipe(bucket, job, recipe)
    cpu_image(image_bin)
    assert agent.run(job, "prepare")[0] == 0
    gpu_image(image_bin)
    code, out = agent.run(job, "train", gpu=True)
    assert code == 0, out
    assert job.status("train")["phase"] == "succeeded"
    assert job.keys.final in bucket.objects


def test_a_venv_whose_interpreter_the_gpu_image_lacks_is_an_env_mismatch(bucket: Bucket, agent: Agent, image_bin: Path):
    job = put_job(bucket, epochs=1)
    use_recipe(bucket, job, sandbox_recipe(STANDIN, python=str(image_bin / "python3.11"), python_version=REAL_VERSION))
    cpu_image(image_bin)
    assert agent.run(job, "prepare")[0] == 0
    gpu_image(image_bin, with_python311=False)
    assert agent.run(job, "train", gpu=True)[0] == 1
    error = job.status("train")["error"]
    assert error["kind"] == "env_mismatch"
    assert f"-> {image_bin / 'python3.11'} does not exist on this pod" in error["message"]
    assert f"built by Python {REAL_VERSION}" in error["message"]
    assert not trainer_started(agent, job)


def test_a_venv_of_another_python_than_the_recipe_records_is_never_marked_complete(
    bucket: Bucket, agent: Agent, volume: Path
):
    """The CPU stage checks too, so no GPU pod is billed for a venv that cannot work."""
    job = put_job(bucket, epochs=1)
    use_recipe(bucket, job, sandbox_recipe(STANDIN, python=sys.executable, python_version=OTHER_VERSION))
    assert agent.run(job, "prepare")[0] == 1
    error = job.status("prepare")["error"]
    assert error["kind"] == "env_mismatch"
    assert f"is Python {REAL_VERSION}, but the recipe records {OTHER_VERSION}" in error["message"]
    assert not list((volume / "lorabot/env").glob("*/COMPLETE"))


def test_torch_that_does_not_import_is_env_broken_with_the_import_error(bucket: Bucket, agent: Agent):
    """The real recipe's GPU check, run in a venv without torch: the environment is broken, not the pod's GPU."""
    job = put_job(bucket, epochs=1)
    recipe = sandbox_recipe(STANDIN)
    recipe["gpu_check"] = ["{venv}/bin/python", "-c", GPU_CHECK]
    use_recipe(bucket, job, recipe)
    assert agent.run(job, "prepare")[0] == 0
    assert agent.run(job, "train", gpu=True)[0] == 1
    error = job.status("train")["error"]
    assert error["kind"] == "env_broken"
    assert "ModuleNotFoundError: No module named 'torch'" in error["message"]
    assert "must be rebuilt" in error["message"]
    assert not trainer_started(agent, job)


def test_a_pod_whose_torch_sees_no_gpu_is_no_gpu_with_what_the_check_said(bucket: Bucket, agent: Agent):
    job = put_job(bucket, epochs=1)
    assert agent.run(job, "prepare")[0] == 0
    assert agent.run(job, "train", gpu=False)[0] == 1
    error = job.status("train")["error"]
    assert error["kind"] == "no_gpu"
    assert "does not see a CUDA GPU on this pod (no LORABOT_FAKE_GPU on this pod: no CUDA device)" in error["message"]
    assert not trainer_started(agent, job)


def test_the_recipes_files_are_written_into_the_environment_before_its_steps_run(
    bucket: Bucket, agent: Agent, volume: Path
):
    """The real recipe's pip steps read `{env_dir}/constraints.txt`; the sandbox recipe's install step reads it too,
    so a missing file would fail the build."""
    job = put_job(bucket, epochs=1)
    recipe = sandbox_recipe(STANDIN)
    recipe["files"] = {"constraints.txt": "torch==2.6.0\nnumpy==2.4.6\n"}
    use_recipe(bucket, job, recipe)
    code, out = agent.run(job, "prepare")
    assert code == 0, out
    (env_dir,) = [path.parent for path in (volume / "lorabot" / "env").glob("*/COMPLETE")]
    assert (env_dir / "constraints.txt").read_text() == "torch==2.6.0\nnumpy==2.4.6\n"
    assert "constraints: 2 pins" in (volume / "lorabot" / "jobs" / job.job_id / "logs" / "prepare.log").read_text()


def test_a_recipe_file_may_not_take_a_name_the_environment_uses():
    recipe = {**sandbox_recipe(STANDIN), "files": {"venv": "x"}}
    manifest = {"version": 1, "env": recipe, "model": {}, "dataset": {}}
    with pytest.raises(ManifestError, match=r"env\.files name 'venv' is taken"):
        parse_manifest(json.dumps(manifest).encode())
