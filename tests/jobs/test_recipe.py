"""The recipe real pods build: a venv that means the same Python on the CPU and the GPU image, and the torch that
sd-scripts at the pinned commit needs."""

from __future__ import annotations

import re

from jobs.manifest import recipe_hash
from jobs.recipe import GPU_CHECK, runpod_recipe


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
    torch = next(step for step in recipe["steps"] if step["name"] == "torch")
    assert torch["argv"][-1] == "https://download.pytorch.org/whl/cu124"


def test_the_gpu_check_exits_3_only_when_torch_imports_and_sees_no_cuda():
    """The agent reads exit 3 as no_gpu and any other failure (torch not importing) as env_broken."""
    assert runpod_recipe()["gpu_check"] == ["{venv}/bin/python", "-c", GPU_CHECK]
    lines = GPU_CHECK.splitlines()
    assert lines.index("import torch") < lines.index("if not torch.cuda.is_available():")
    assert "    sys.exit(3)" in lines
