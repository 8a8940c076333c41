"""The argument builder: every flag it can emit exists in that script's sd-scripts parser (@48d368fa), with a value
of the right kind; dataset.toml and sample_prompts.txt are what sd-scripts reads."""

from __future__ import annotations

import itertools
import json
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from jobs.planning import make_plan
from jobs.rules import EXTRA_OPTIONS, PlanRefused
from jobs.sdscripts import SCRIPTS, build_dataset_toml, build_sample_prompts, render_command
from jobs.spec import UserOptions
from tests.jobs.data.specs import CATALOG, PRESETS, PRICES, FakeConcept, FakeDataset, facts, seed_dataset, spec

ROOT = Path(__file__).resolve().parents[2]
_FLAG_FILES = [ROOT / "jobs/sandbox/sdscripts/flags.json", ROOT / "tests/jobs/data/sdscripts_flags.json"]
FLAGS: dict[str, set[str]] = {
    k: set(v)
    for k, v in json.loads(next(p for p in _FLAG_FILES if p.exists()).read_text()).items()
    if not k.startswith("_")
}
_KINDS_FILE = ROOT / "jobs/sandbox/sdscripts/flag_kinds.json"
KINDS: dict[str, dict[str, Any]] = json.loads(_KINDS_FILE.read_text()) if _KINDS_FILE.exists() else {}
_TYPES = {"int": int, "float": float, "str": str}

# Option sets a user can combine: each preset is planned with every combination of these.
VARIANTS: list[dict[str, Any]] = [
    {},
    {"te_lr": 0.0},
    {"te_lr": 3e-5, "cache_text_encoder_outputs": True},
    {"clip_skip": 2},
    {"batch_size": 2, "resolution": 768},
    {"gpu": "a6000"},
    {
        "extra_options": {
            k: (True if t is bool else t(0.5) if t is float else t(1))
            for k, t in EXTRA_OPTIONS.items()
            if k not in ("shuffle_caption", "caption_dropout_rate")
        }
    },
    {"sample_prompts": ("kanachan, 1girl, waving",), "epochs": 4, "repeats": 3},
]


def _plans():
    dataset = FakeDataset([FakeConcept("kanachan", 10, "10_kanachan", 40), FakeConcept("extra", None, "extra", 5)])
    for preset, (a, b) in itertools.product(PRESETS.names, itertools.combinations(range(len(VARIANTS)), 2)):
        options = UserOptions(preset=preset, trigger="kanachan", class_word="1girl", **{**VARIANTS[a], **VARIANTS[b]})
        try:
            yield preset, make_plan(dataset, options, presets=PRESETS, catalog=CATALOG, prices=PRICES)
        except PlanRefused as refused:  # pragma: no cover - a refusal here is itself a failure
            pytest.fail(f"{preset} {options}: {refused}")


def test_every_emitted_flag_exists_in_that_scripts_parser_with_a_value_of_its_kind() -> None:
    checked = 0
    for preset, plan in _plans():
        assert plan.script == SCRIPTS[plan.spec.family]
        for arg in plan.args:
            name, has_value, value = arg.partition("=")
            assert name in FLAGS[plan.script], f"{preset}: {name} is not a flag of {plan.script}"
            kind = KINDS.get(name)
            if kind is None:
                continue
            if kind["action"] == "store_true":
                assert not has_value, f"{preset}: {name} is a switch, given {value!r}"
            else:
                assert has_value, f"{preset}: {name} needs a value"
                if kind["type"] in _TYPES and name != "--resolution":
                    _TYPES[kind["type"]](value)
                if kind["choices"]:
                    assert value in kind["choices"], f"{preset}: {name}={value} not in {kind['choices']}"
            checked += 1
    assert checked > 1000


def test_every_run_saves_each_epoch_with_its_state_for_resume_and_upload() -> None:
    for _, plan in _plans():
        assert {"--save_state", "--save_every_n_epochs=1", "--save_model_as=safetensors"} <= set(plan.args)
        # Only the newest epoch state stays on the volume: a resume needs nothing older.
        assert "--save_last_n_epochs_state=1" in plan.args
        assert f"--output_name={plan.spec.output_name}" in plan.args


def test_paths_are_contract_placeholders_only() -> None:
    _, plan = next(_plans())
    assert "--pretrained_model_name_or_path={model_path}" in plan.args
    assert "--dataset_config={job_dir}/dataset.toml" in plan.args
    assert "--output_dir={output_dir}" in plan.args
    assert "--sample_prompts={job_dir}/sample_prompts.txt" in plan.args
    assert not any("/workspace" in a for a in plan.args)


def test_flux_gets_its_text_encoders_and_ae_from_the_volume() -> None:
    plan = make_plan(
        seed_dataset(), UserOptions(preset="flux-character"), presets=PRESETS, catalog=CATALOG, prices=PRICES
    )
    assert plan.script == "flux_train_network.py"
    for role, filename in (("clip_l", "clip_l"), ("t5xxl", "t5xxl_fp16"), ("ae", "flux1-dev-ae")):
        assert f"--{role}={{volume}}/lorabot/models/{filename}.safetensors" in plan.args
    assert "--sample_sampler=euler_a" not in " ".join(plan.args)


def test_dataset_toml_has_one_subset_per_concept_in_sd_scripts_schema() -> None:
    text = build_dataset_toml(
        spec(),
        facts().__class__(
            (facts().concepts[0], facts(images=3, repeats=None).concepts[0].__class__("other", "other", 3, None)),
            ".txt",
        ),
    )
    config = tomllib.loads(text)
    assert config["general"] == {"caption_extension": ".txt"}
    dataset = config["datasets"][0]
    assert (dataset["resolution"], dataset["batch_size"], dataset["bucket_reso_steps"]) == (1024, 1, 64)
    assert dataset["subsets"] == [
        {
            "image_dir": "{data_dir}/kanachan",
            "num_repeats": 10,
            "class_tokens": "kanachan 1girl",
            "caption_extension": ".txt",
        },
        {
            "image_dir": "{data_dir}/other",
            "num_repeats": 10,
            "class_tokens": "kanachan 1girl",
            "caption_extension": ".txt",
        },
    ]
    # sd-scripts' ConfigSanitizer schema (library/config_util.py @48d368fa): DB subset / dataset keys we use.
    allowed = {
        "image_dir",
        "num_repeats",
        "class_tokens",
        "caption_extension",
        "resolution",
        "batch_size",
        "enable_bucket",
        "min_bucket_reso",
        "max_bucket_reso",
        "bucket_reso_steps",
        "subsets",
    }
    assert set(dataset) | set(dataset["subsets"][0]) <= allowed


def test_dataset_toml_escapes_quotes_and_backslashes_in_values() -> None:
    text = build_dataset_toml(spec(trigger='ka"na\\chan', class_word="x\x7fy"), facts())
    assert tomllib.loads(text)["datasets"][0]["subsets"][0]["class_tokens"] == 'ka"na\\chan x\x7fy'


def test_sample_prompt_lines_carry_size_seed_cfg_steps_and_negative() -> None:
    text = build_sample_prompts(spec(sample_prompts=("kanachan, 1girl, smile",)))
    assert text == (
        "kanachan, 1girl, smile --n low quality, worst quality, bad hands, bad anatomy, blurry"
        " --w 1024 --h 1024 --d 42 --l 7 --s 28\n"
    )


def test_flux_sample_lines_use_guidance_and_no_negative() -> None:
    text = build_sample_prompts(spec("flux-character", sample_prompts=("kanachan portrait",), sample_guidance=3.5))
    assert text == "kanachan portrait --w 1024 --h 1024 --d 42 --s 20 --g 3.5\n"


def test_render_command_is_a_shell_quoted_display_of_the_same_list() -> None:
    args = ["--output_name=kana chan", "--sample_prompts={job_dir}/sample_prompts.txt"]
    line = render_command("sdxl_train_network.py", args)
    assert shlex.split(line) == [
        "accelerate",
        "launch",
        "--num_cpu_threads_per_process",
        "1",
        "sdxl_train_network.py",
        *args,
    ]
