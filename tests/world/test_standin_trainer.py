"""The stand-in sd-scripts behaves like sd-scripts 48d368fa for everything lorabot relies on.

Each test runs a script as a subprocess, as the agent does, on a fast clock.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

from tests.agent.world import standin_hub

SDSCRIPTS = Path(__file__).resolve().parents[2] / "jobs" / "sandbox" / "sdscripts"
SAMPLE_NAME = re.compile(r"^kana_e(\d{6})_(\d{2})_(\d{14})(_\d+)?\.png$")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Job:
    root: Path

    @property
    def output(self) -> Path:
        return self.root / "output"

    def args(self, *extra: str, epochs: int = 3) -> list[str]:
        return [
            f"--pretrained_model_name_or_path={self.root / 'model.safetensors'}",
            f"--train_data_dir={self.root / 'data'}",
            f"--output_dir={self.output}",
            "--output_name=kana",
            "--network_module=networks.lora",
            "--network_dim=8",
            "--network_alpha=4",
            "--caption_extension=.txt",
            f"--max_train_epochs={epochs}",
            "--save_every_n_epochs=1",
            "--mixed_precision=bf16",
            "--save_precision=fp16",  # numpy (safetensors.numpy) has no bfloat16
            *extra,
        ]

    def run(self, script: str, args: list[str], fault: str = "", timeout: float = 20, columns: int | None = 400) -> Run:
        """`columns`: the console width its rich-style log lines fold to (COLUMNS, wide as the agent sets it;
        None = unset: 80, as rich without a terminal)."""
        env = {
            **{k: v for k, v in os.environ.items() if k != "COLUMNS"},
            **({"COLUMNS": str(columns)} if columns else {}),
            "LORABOT_TIME_SCALE": "2000",
            "LORABOT_STANDIN_STEPS_PER_SECOND": "2.0",
            "LORABOT_STANDIN_FAULT": fault,
            # No --tokenizer_cache_dir here: the stand-in, like sd-scripts, asks the Hub (a stand-in one).
            "HF_ENDPOINT": standin_hub().url,
        }
        done = subprocess.run(
            [sys.executable, str(SDSCRIPTS / script), *args],
            capture_output=True,
            env=env,
            timeout=timeout,
            cwd=self.root,
        )
        # bytes, not text=True: universal newlines would turn tqdm's carriage returns into line breaks
        return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def job(tmp_path: Path) -> Job:
    """4 images x 5 repeats (= 20 steps per epoch at batch 1), 3 with captions, and a folder sd-scripts skips."""
    concept = tmp_path / "data" / "5_kana"
    concept.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (32, 32), (i * 60, 10, 10)).save(concept / f"img{i}.png")
        if i < 3:
            (concept / f"img{i}.txt").write_text("kana, 1girl")
    (tmp_path / "data" / "kana").mkdir()  # no `{repeats}_` prefix
    (tmp_path / "model.safetensors").write_bytes(os.urandom(2_000_000))
    (tmp_path / "prompts.txt").write_text("kana, smiling --w 256 --h 384 --d 7\n# a comment\nkana, in a park\n")
    return Job(tmp_path)


def test_a_run_writes_epoch_checkpoints_and_a_final_lora_that_safetensors_loads(job: Job) -> None:
    run = job.run("sdxl_train_network.py", job.args())

    assert run.returncode == 0, run.stderr
    names = sorted(p.name for p in job.output.glob("*.safetensors"))
    # sd-scripts saves no epoch file for the last epoch: the final file is epoch 3 (train_network.py)
    assert names == ["kana-000001.safetensors", "kana-000002.safetensors", "kana.safetensors"]
    tensors = load_file(job.output / "kana-000002.safetensors")
    down = [name for name in tensors if name.endswith("lora_down.weight")]
    assert down and all(tensors[name].shape[0] == 8 for name in down)
    with safe_open(str(job.output / "kana.safetensors"), framework="numpy") as f:
        meta = f.metadata()
    assert meta["ss_network_dim"] == "8"
    assert meta["ss_network_alpha"] == "4.0"
    assert meta["ss_output_name"] == "kana"
    assert meta["ss_num_epochs"] == "3"
    assert meta["ss_epoch"] == "3"
    assert meta["ss_steps"] == "60"
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["ss_network_module"] == "networks.lora"
    assert float(meta["ss_training_started_at"]) > 0
    assert json.loads(meta["ss_dataset_dirs"]) == {"5_kana": {"n_repeats": 5, "img_count": 4}}


def test_it_prints_the_lines_the_agent_parses(job: Job) -> None:
    run = job.run("sdxl_train_network.py", job.args())

    assert "  total optimization steps / 学習ステップ数: 60" in run.stdout
    assert [int(n) for n in re.findall(r"^epoch (\d+)/3$", run.stdout, re.MULTILINE)] == [1, 2, 3]
    bars = [segment for segment in run.stderr.split("\r") if segment.startswith("steps:")]
    # at 2000x real time, a millisecond of Python is two simulated seconds: the rate is not asserted
    assert re.match(
        r"steps: 100%\|██████████\| 60/60 \[\d\d:\d\d<00:00, +[\d.]+(it/s|s/it), avr_loss=0\.\d+\]", bars[-1]
    )
    losses = [float(m) for m in re.findall(r"avr_loss=([\d.]+)\]", run.stderr)]
    assert losses[-1] < losses[0]  # it learns


def test_samples_are_pngs_named_like_sd_scripts_and_differ_per_epoch_and_prompt(job: Job) -> None:
    run = job.run(
        "sdxl_train_network.py",
        job.args(f"--sample_prompts={job.root / 'prompts.txt'}", "--sample_every_n_epochs=1", epochs=2),
    )

    assert run.returncode == 0, run.stderr
    samples = sorted((job.output / "sample").iterdir())
    parsed = [SAMPLE_NAME.match(p.name) for p in samples]
    assert all(parsed), [p.name for p in samples]
    assert [(m.group(1), m.group(2), m.group(4)) for m in parsed if m] == [
        ("000001", "00", "_7"),
        ("000001", "01", None),
        ("000002", "00", "_7"),
        ("000002", "01", None),
    ]
    with Image.open(samples[0]) as first:
        assert first.size == (256, 384)
        first_pixels = first.tobytes()
    with Image.open(samples[2]) as same_prompt_next_epoch:
        assert same_prompt_next_epoch.tobytes() != first_pixels


def test_no_samples_without_sample_every_n(job: Job) -> None:
    job.run("sdxl_train_network.py", job.args(f"--sample_prompts={job.root / 'prompts.txt'}", epochs=1))

    assert not (job.output / "sample").exists()


def test_save_state_writes_accelerate_folders_with_train_state(job: Job) -> None:
    run = job.run("sdxl_train_network.py", job.args("--save_state"))

    assert run.returncode == 0, run.stderr
    state = job.output / "kana-000002-state"
    assert sorted(p.name for p in state.iterdir()) == [
        "model.safetensors",
        "optimizer.bin",
        "random_states_0.pkl",
        "scheduler.bin",
        "train_state.json",
    ]
    assert json.loads((state / "train_state.json").read_text()) == {"current_epoch": 2, "current_step": 40}
    assert (job.output / "kana-state" / "train_state.json").exists()
    load_file(state / "model.safetensors")


def test_save_last_n_epochs_state_keeps_only_the_newest_epoch_state_as_sd_scripts_does(job: Job) -> None:
    run = job.run("sdxl_train_network.py", job.args("--save_state", "--save_last_n_epochs_state=1", epochs=4))

    assert run.returncode == 0, run.stderr
    states = sorted(p.name for p in job.output.iterdir() if p.name.endswith("-state"))
    # Epoch 3's state replaced 1 and 2 (each removed after the next one was written); the last epoch saves only
    # the train-end state, so epoch 3's numbered one stays beside it.
    assert states == ["kana-000003-state", "kana-state"]
    assert re.findall(r"removing old state: (\S+)", run.stderr) == [
        str(job.output / "kana-000001-state"),
        str(job.output / "kana-000002-state"),
    ]
    assert run.stderr.index("save train state to " + str(job.output / "kana-000002-state")) < run.stderr.index(
        "removing old state: " + str(job.output / "kana-000001-state")
    )
    # Checkpoints are --save_last_n_epochs' business, not the state's.
    assert all((job.output / f"kana-{epoch:06d}.safetensors").exists() for epoch in (1, 2, 3))


def test_log_lines_fold_at_80_columns_without_a_terminal_and_stay_whole_on_a_wide_console(job: Job) -> None:
    """rich's RichHandler (sd-scripts' logger) folds each message to the console width: the agent widens it."""
    args = job.args("--save_state", epochs=2)
    folded = job.run("sdxl_train_network.py", args, columns=None).stderr
    state = job.output / "kana-000001-state"
    assert f"save train state to {state}/train_state.json" not in folded  # 80 columns: the path breaks
    # rich puts the source file at the right of the record's first row, the message's rest goes below
    unbroken = re.sub(r"\s+", "", f"save train state to {state}/train_state.json")
    assert unbroken in re.sub(r"\s+|sdxl_train_network\.py", "", folded)

    whole = job.run("sdxl_train_network.py", args, columns=400).stderr
    line = next(line for line in whole.splitlines() if f"save train state to {state}/" in line)
    assert re.sub(r"\s+", " ", line).endswith("at epoch 1 step 20 sdxl_train_network.py")


def test_resume_trains_only_the_remaining_epochs(job: Job) -> None:
    first = job.run("sdxl_train_network.py", job.args("--save_state", epochs=5), fault="crash@50")
    assert first.returncode == 1
    assert (job.output / "kana-000002-state").is_dir()
    assert not (job.output / "kana-000003.safetensors").exists()
    before = (job.output / "kana-000002.safetensors").read_bytes()

    second = job.run(
        "sdxl_train_network.py", job.args("--save_state", f"--resume={job.output / 'kana-000002-state'}", epochs=5)
    )

    assert second.returncode == 0, second.stderr
    assert "load train state from" in second.stderr
    assert [int(n) for n in re.findall(r"^epoch (\d+)/5$", second.stdout, re.MULTILINE)] == [3, 4, 5]
    assert (job.output / "kana-000002.safetensors").read_bytes() == before  # epoch 2 not trained again
    assert (job.output / "kana-000004.safetensors").exists() and (job.output / "kana.safetensors").exists()


def test_resume_with_skip_until_initial_step_prints_sd_scripts_skipping_lines(job: Job) -> None:
    job.run("sdxl_train_network.py", job.args("--save_state", epochs=3))

    run = job.run(
        "sdxl_train_network.py",
        job.args("--save_state", "--skip_until_initial_step", f"--resume={job.output / 'kana-000001-state'}"),
    )

    assert "skipping epoch 1 because initial_step (multiplied) is 20" in run.stderr
    assert re.findall(r"^epoch (\d+)/3$", run.stdout, re.MULTILINE) == ["2", "3"]


def test_te_output_caching_with_te_training_fails_with_sd_scripts_assertion(job: Job) -> None:
    run = job.run("sdxl_train_network.py", job.args("--cache_text_encoder_outputs"))

    assert run.returncode == 1
    assert run.stderr.rstrip().splitlines()[-1] == (
        "AssertionError: network for Text Encoder cannot be trained with caching Text Encoder outputs / "
        "Text Encoderの出力をキャッシュしながらText Encoderのネットワークを学習することはできません"
    )
    assert not job.output.exists()


def test_te_output_caching_is_fine_when_only_the_unet_trains(job: Job) -> None:
    run = job.run(
        "sdxl_train_network.py", job.args("--cache_text_encoder_outputs", "--network_train_unet_only", epochs=1)
    )

    assert run.returncode == 0, run.stderr


def test_sdxl_bucket_steps_must_be_a_multiple_of_32(job: Job) -> None:
    run = job.run("sdxl_train_network.py", job.args("--enable_bucket", "--bucket_reso_steps=48"))

    assert run.returncode == 1
    assert "AssertionError: bucket_reso_steps is 48. it must be divisible by 32." in run.stderr


def test_dataset_warnings_match_sd_scripts(job: Job) -> None:
    run = job.run("sdxl_train_network.py", job.args("--clip_skip=2", epochs=1))

    assert "ignore directory without repeats / 繰り返し回数のないディレクトリを無視します: kana" in run.stderr
    assert "No caption file found for 1 images. Training will continue without captions for these images." in run.stderr
    assert "clip_skip will be unexpected / SDXL学習ではclip_skipは動作しません" in run.stderr


def test_default_caption_extension_is_dot_caption(job: Job) -> None:
    args = [a for a in job.args(epochs=1) if not a.startswith("--caption_extension")]

    run = job.run("sdxl_train_network.py", args)

    assert "No caption file found for 4 images." in run.stderr


def test_dataset_config_toml_sets_repeats_and_batch_size(job: Job) -> None:
    config = job.root / "dataset.toml"
    config.write_text(
        "[general]\ncaption_extension = '.txt'\n\n[[datasets]]\nresolution = 1024\nbatch_size = 2\n\n"
        f"  [[datasets.subsets]]\n  image_dir = '{job.root / 'data' / '5_kana'}'\n  num_repeats = 3\n"
    )
    args = [a for a in job.args(epochs=2) if not a.startswith("--train_data_dir")]

    run = job.run("sdxl_train_network.py", [*args, f"--dataset_config={config}"])

    assert run.returncode == 0, run.stderr
    assert "total optimization steps / 学習ステップ数: 12" in run.stdout  # 4 images x 3 / 2 per batch x 2 epochs


def test_an_unknown_flag_is_rejected_like_argparse_does(job: Job) -> None:
    run = job.run("sdxl_train_network.py", [*job.args(), "--network_dimm=8"])

    assert run.returncode == 2
    assert "sdxl_train_network.py: error: unrecognized arguments: --network_dimm=8" in run.stderr


def test_a_missing_base_model_fails_like_sd_scripts(job: Job) -> None:
    (job.root / "model.safetensors").unlink()

    run = job.run("sdxl_train_network.py", job.args())

    assert run.returncode == 1
    assert "model is not found as a file or in Hugging Face, perhaps file name is wrong?" in run.stderr
    assert "OSError:" in run.stderr


def test_oom_prints_torchs_error_and_exits_1(job: Job) -> None:
    run = job.run("sdxl_train_network.py", job.args(), fault="oom@5")

    assert run.returncode == 1
    assert "Traceback (most recent call last):" in run.stderr
    assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate" in run.stderr
    assert " 4/60 " in run.stderr and " 5/60 " not in run.stderr


def test_nan_shows_in_the_progress_bar_then_exits_1(job: Job) -> None:
    run = job.run("sdxl_train_network.py", job.args(), fault="nan@3")

    assert run.returncode == 1
    assert "avr_loss=nan" in run.stderr
    assert "loss is nan at step 3" in run.stderr


def test_crash_prints_a_python_traceback(job: Job) -> None:
    run = job.run("sdxl_train_network.py", job.args(), fault="crash@2")

    assert run.returncode == 1
    assert run.stderr.rstrip().splitlines()[-1].startswith("RuntimeError: stand-in trainer crashed at step 2")


def test_flux_needs_its_text_encoder_and_ae_files(job: Job) -> None:
    for name in ("ae", "t5xxl"):
        (job.root / f"{name}.safetensors").write_bytes(b"x")
    files = [f"--{name}={job.root / f'{name}.safetensors'}" for name in ("ae", "t5xxl")]
    args = [*job.args(*files, epochs=1), "--clip_l=/nope/clip_l.safetensors"]
    args = [a.replace("networks.lora", "networks.lora_flux") for a in args]

    run = job.run("flux_train_network.py", args)

    assert run.returncode == 1
    assert "FileNotFoundError: [Errno 2] No such file or directory: '/nope/clip_l.safetensors'" in run.stderr


def test_flux_trains_with_its_files(job: Job) -> None:
    for name in ("ae", "clip_l", "t5xxl"):
        (job.root / f"{name}.safetensors").write_bytes(b"x")
    files = [f"--{name}={job.root / f'{name}.safetensors'}" for name in ("ae", "clip_l", "t5xxl")]
    args = [a.replace("networks.lora", "networks.lora_flux") for a in job.args(*files, epochs=1)]

    run = job.run("flux_train_network.py", args)

    assert run.returncode == 0, run.stderr
    with safe_open(str(job.output / "kana.safetensors"), framework="numpy") as f:
        assert f.metadata()["ss_base_model_version"] == "flux1"


def test_sd15_script_accepts_its_own_flags_only(job: Job) -> None:
    run = job.run("train_network.py", [*job.args(epochs=1), "--cache_text_encoder_outputs"])

    assert run.returncode == 2  # an SDXL/Flux-only flag


def test_the_python_310_toml_fallback_reads_dataset_configs_like_tomllib() -> None:
    import importlib.util
    import tomllib

    spec = importlib.util.spec_from_file_location("standin_dataset", SDSCRIPTS / "_standin_dataset.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    text = (
        "[general]\nenable_bucket = true\ncaption_extension = '.txt'  # comment\n\n"
        "[[datasets]]\nresolution = [1024, 768]\n"
        'batch_size = 2\n\n  [[datasets.subsets]]\n  image_dir = "/v/data/5_kana"\n  num_repeats = 5\n'
        "  [[datasets.subsets]]\n  image_dir = '/v/data/1_bg'\n  keep_tokens = 1\n"
    )

    assert module.parse_simple_toml(text) == tomllib.loads(text)
