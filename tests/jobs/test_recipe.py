"""The recipe real pods build: a venv that means the same Python on the CPU and the GPU image, and the torch that
sd-scripts at the pinned commit needs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from jobs.manifest import recipe_hash
from jobs.recipe import CONSTRAINTS_FILE, CONSTRAINTS_PATH, GPU_CHECK, runpod_recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import lock_recipe


def pinned(recipe: dict, package: str) -> str:
    found = {arg.split("==")[1] for step in recipe["steps"] for arg in step["argv"] if arg.startswith(f"{package}==")}
    assert len(found) == 1, (package, found)
    return found.pop()


def test_the_venv_is_built_by_an_explicit_versioned_interpreter_and_that_version_is_recorded():
    """`python3` is 3.10 on runpod/base and 3.11 on runpod/pytorch; /usr/bin/python3.11 is 3.11 on both."""
    recipe = runpod_recipe()
    assert recipe["python"] == "/usr/bin/python3.11"
    assert recipe["python_version"] == "3.11"
    versioned = re.search(r"python(\d+\.\d+)$", recipe["python"])
    assert versioned is not None and versioned.group(1) == recipe["python_version"]
    assert recipe["steps"][0]["argv"][:3] == ["{python}", "-m", "venv"]


def test_the_recorded_python_version_is_part_of_the_cache_key():
    recipe = runpod_recipe()
    assert recipe_hash(recipe) != recipe_hash({**recipe, "python_version": "3.10"})


def test_torch_is_the_version_sd_scripts_at_the_pin_requires_with_its_own_torchvision_and_xformers():
    """sd-scripts 48d368fa: "PyTorch 2.6.0 or later is required" (torch 2.6.0 + torchvision 0.21.0, cu124);
    xFormers 0.0.29.post2 is the release built for PyTorch 2.6.0 on CUDA 12.4, installed without deps."""
    recipe = runpod_recipe()
    assert pinned(recipe, "torch") == "2.6.0"
    assert pinned(recipe, "torchvision") == "0.21.0"
    assert pinned(recipe, "xformers") == "0.0.29.post2"
    xformers = next(step for step in recipe["steps"] if step["name"] == "xformers")
    assert "--no-deps" in xformers["argv"]


def test_every_pip_step_installs_under_the_locked_constraints_and_only_from_pypi():
    """PyPI's Linux torch 2.6.0 is the CUDA 12.4 build, so no other index is named; each pip step gets `-c`."""
    recipe = runpod_recipe()
    pip_steps = [step for step in recipe["steps"] if step["argv"][0] == "{venv}/bin/pip"]
    assert [step["name"] for step in pip_steps] == ["torch", "xformers", "requirements", "tagger"]
    for step in pip_steps:
        argv = step["argv"]
        assert argv[argv.index("-c") + 1] == "{env_dir}/" + CONSTRAINTS_FILE
        assert not any("index-url" in arg for arg in argv)
    assert recipe["files"] == {CONSTRAINTS_FILE: CONSTRAINTS_PATH.read_text()}


def test_the_tagger_step_pins_every_package_the_lock_does_not():
    """sd-scripts' WD14 tagger with --onnx imports onnx and onnxruntime; what the lock lacks is pinned in the step."""
    [step] = [s for s in runpod_recipe()["steps"] if s["name"] == "tagger"]
    packages = [arg for arg in step["argv"] if "==" in arg]
    assert {p.split("==")[0] for p in packages} == {"onnx", "onnxruntime", "ml-dtypes", "flatbuffers"}
    locked = {line.split("==")[0].lower() for line in CONSTRAINTS_PATH.read_text().splitlines() if "==" in line}
    assert not {p.split("==")[0] for p in packages} & locked


def test_the_constraints_file_is_part_of_the_cache_key():
    recipe = runpod_recipe()
    edited = {**recipe, "files": {CONSTRAINTS_FILE: recipe["files"][CONSTRAINTS_FILE] + "extra==1.0\n"}}
    assert recipe_hash(recipe) != recipe_hash(edited)


def test_the_committed_lock_pins_every_input_and_the_recipe_pins_it_was_made_from():
    """The cheap, offline half of `tools/lock_recipe.py --check`: the file names its generator, every requirement
    it was resolved from is pinned (at the input's version when the input is exact), and the recipe's pins are the
    inputs it records: changing a pin in jobs/recipe.py without locking again fails here."""
    text = CONSTRAINTS_PATH.read_text()
    assert text.startswith(lock_recipe.HEADER)
    locked = lock_recipe.parse(text)
    assert lock_recipe.offline_problems(locked) == []
    assert list(locked.inputs.requirements[:4]) == lock_recipe.recipe_pins()
    assert locked.pins["nvidia-cuda-runtime-cu12"].startswith("12.4.")
    assert all(line.startswith("#") or lock_recipe.PIN.match(line) for line in text.splitlines() if line)


def test_the_lock_records_sd_scripts_requirements_at_the_pin():
    """Only where the sd-scripts tarball is at hand (it is never committed)."""
    if not lock_recipe.DEFAULT_SD_SCRIPTS.is_file():
        pytest.skip(f"{lock_recipe.DEFAULT_SD_SCRIPTS} is not here")
    locked = lock_recipe.parse(CONSTRAINTS_PATH.read_text())
    assert lock_recipe.offline_problems(locked, lock_recipe.current_inputs(lock_recipe.DEFAULT_SD_SCRIPTS)) == []


def test_a_hand_edit_or_a_stale_input_is_caught_offline():
    locked = lock_recipe.parse(CONSTRAINTS_PATH.read_text())
    moved = lock_recipe.parse(CONSTRAINTS_PATH.read_text().replace("\ntorch==2.6.0\n", "\ntorch==2.7.0\n"))
    assert any("torch is pinned at 2.7.0" in problem for problem in lock_recipe.offline_problems(moved))
    newer = lock_recipe.Inputs(tuple(r.replace("torch==2.6.0", "torch==2.7.0") for r in locked.inputs.requirements))
    assert any("inputs changed" in problem for problem in lock_recipe.offline_problems(locked, newer))
    forged = lock_recipe.Locked(newer, locked.digest, locked.pins)
    assert any("edited by hand" in problem for problem in lock_recipe.offline_problems(forged))


def test_the_resolution_must_fit_the_gpu_image():
    """Run elsewhere, or handed a wheel for a newer glibc than Ubuntu 22.04's, the tool refuses to lock."""
    env = {"sys_platform": "linux", "platform_machine": "x86_64", "python_version": "3.11"}
    wheel = "https://files.example/x/{}"
    fits = {"environment": env, "install": [{"download_info": {"url": wheel.format("a-1-py3-none-any.whl")}}]}
    assert lock_recipe.platform_problems(fits) == []
    newer = wheel.format("b-1-cp311-cp311-manylinux_2_39_x86_64.whl")
    assert lock_recipe.platform_problems({"environment": env, "install": [{"download_info": {"url": newer}}]})
    mac = {"environment": {**env, "sys_platform": "darwin"}, "install": []}
    assert "sys_platform='darwin'" in lock_recipe.platform_problems(mac)[0]


def test_the_gpu_check_exits_3_only_when_torch_imports_and_sees_no_cuda():
    """The agent reads exit 3 as no_gpu and any other failure (torch not importing) as env_broken."""
    assert runpod_recipe()["gpu_check"] == ["{venv}/bin/python", "-c", GPU_CHECK]
    lines = GPU_CHECK.splitlines()
    assert lines.index("import torch") < lines.index("if not torch.cuda.is_available():")
    assert "    sys.exit(3)" in lines
