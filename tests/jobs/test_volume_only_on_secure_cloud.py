"""No option a user or the operator can set leads to a Community Cloud pod with the Network Volume.

RunPod mounts Network Volumes only on Secure Cloud pods, and every lorabot pod works on the volume. Each way in is
tried here: the config file, the environment, the orchestrator's own config, a pod request built directly, /train's
GPU option, a preset and the extra sd-scripts options. Beyond these, every world the tests drive checks at teardown
that lorabot never asked RunPod for such a pod (`LorabotWorld.community_volume_attempts`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from jobs.cloud import PodRequest
from jobs.config import ConfigError, load_settings
from jobs.orchestrator import GpuChoice, OrchestratorConfig
from jobs.presets import DEFAULT_PRESETS_DIR, PresetError, load_presets
from jobs.rules import PlanRefused, apply_rules
from tests.jobs.data.specs import CATALOG, PRICES, facts, spec

RTX_4090 = "NVIDIA GeForce RTX 4090"
PROMPTS = ("kanachan, 1girl, smile",)


def test_the_config_file_cannot_list_a_community_gpu(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[[runpod.gpu_fallback]]\ngpu_type_id = "{RTX_4090}"\ncloud = "COMMUNITY"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="Network Volumes only on Secure Cloud"):
        load_settings(path, env={})


def test_the_environment_cannot_list_a_community_gpu() -> None:
    fallback = json.dumps(
        [{"gpu_type_id": RTX_4090, "cloud": "SECURE"}, {"gpu_type_id": RTX_4090, "cloud": "COMMUNITY"}]
    )
    with pytest.raises(ConfigError, match="Network Volumes only on Secure Cloud"):
        load_settings(env={"RUNPOD_GPU_FALLBACK": fallback})


def test_the_settings_that_do_load_give_the_orchestrator_secure_gpus_only() -> None:
    config = OrchestratorConfig.from_settings(load_settings(env={}))
    assert config.gpu_fallback and {c.cloud for c in config.gpu_fallback} == {"SECURE"}


@pytest.mark.parametrize("cloud", ["COMMUNITY", "ALL", "community"])
def test_the_orchestrator_config_refuses_anything_but_secure(cloud: str) -> None:
    with pytest.raises(ValueError, match="only SECURE GPUs can mount the Network Volume"):
        OrchestratorConfig(gpu_fallback=(GpuChoice(RTX_4090, cloud),))


@pytest.mark.parametrize("gpu_type_id", [RTX_4090, None], ids=["gpu pod", "cpu pod"])
def test_a_pod_request_with_the_volume_in_the_community_cloud_cannot_be_built(gpu_type_id: str | None) -> None:
    with pytest.raises(ValueError, match="Secure Cloud"):
        PodRequest(
            name="lorabot-j1-gpu-1",
            image="runpod/base:1.0.2-ubuntu2204",
            args=None,
            env={},
            network_volume_id="vol123",
            data_center_id="EU-RO-1",
            volume_mount_path="/workspace",
            container_disk_gb=20,
            gpu_type_id=gpu_type_id,
            cloud="COMMUNITY",
        )


def test_a_train_gpu_option_naming_a_card_the_secure_cloud_lacks_is_refused_before_anything_runs() -> None:
    table = PRICES.get_table()
    community_only = replace(table, gpus=tuple(replace(g, hourly_micros={"secure": None}) for g in table.gpus))
    with pytest.raises(PlanRefused) as err:
        apply_rules(spec(sample_prompts=PROMPTS, gpu="4090"), facts(), catalog=CATALOG, prices=community_only)
    assert any("only cloud whose pods can mount the Network Volume" in r for r in err.value.reasons)


@pytest.mark.parametrize("key", ["cloud", "cloud_type", "cloudType", "spot"])
def test_the_extra_sd_scripts_options_cannot_choose_a_cloud(key: str) -> None:
    with pytest.raises(PlanRefused):
        apply_rules(
            spec(sample_prompts=PROMPTS, extra_options={key: "COMMUNITY"}),
            facts(),
            catalog=CATALOG,
            prices=PRICES.get_table(),
        )


@pytest.mark.parametrize("line", ['cloud = "COMMUNITY"', 'cloud_type = "COMMUNITY"', "spot = true"])
def test_a_preset_cannot_choose_a_cloud(tmp_path: Path, line: str) -> None:
    for path in DEFAULT_PRESETS_DIR.glob("*.toml"):
        text = path.read_text(encoding="utf-8")
        if path.name == "sdxl-face.toml":
            text = text.replace("[spec]\n", f"[spec]\n{line}\n")
        (tmp_path / path.name).write_text(text, encoding="utf-8")
    with pytest.raises(PresetError, match=r"sdxl-face\.toml"):
        load_presets(tmp_path)
