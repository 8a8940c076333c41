"""The sd-scripts invocation for a checked TrainSpec: script, argument LIST, dataset.toml and sample_prompts.txt.

Paths are placeholders the pod's agent substitutes (docs/CONTRACTS.md): `{model_path}`, `{tokenizers_dir}`,
`{job_dir}`, `{data_dir}`, `{output_dir}`, `{volume}`. Nothing here is ever joined into a shell string except
`render_command`, for display.
Every flag emitted exists in the script's parser at kohya-ss/sd-scripts@48d368fa (tests/jobs/test_sdscripts.py).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from jobs.catalog import CatalogModel
from jobs.rules import DatasetFacts, effective_repeats
from jobs.spec import Family, TrainSpec

SCRIPTS: dict[Family, str] = {
    "sdxl": "sdxl_train_network.py",
    "sd15": "train_network.py",
    "flux": "flux_train_network.py",
}


@dataclass(frozen=True)
class TokenizerRepo:
    """A Hugging Face repo whose tokenizer a script loads: the files the CPU stage fetches (tokenizer files only,
    never weights) and those the repo may lack (fetched when present)."""

    repo: str
    files: tuple[str, ...]
    optional: tuple[str, ...] = ()
    revision: str = "main"


# CLIPTokenizer reads vocab.json + merges.txt; tokenizer_config.json carries model_max_length (77), which sd-scripts
# uses as the token length, and special_tokens_map.json the pad token: without them the tokenizer loads wrong.
_CLIP_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
_CLIP_OPTIONAL = ("tokenizer.json", "added_tokens.json")
CLIP_L = TokenizerRepo("openai/clip-vit-large-patch14", _CLIP_FILES, _CLIP_OPTIONAL)
CLIP_G = TokenizerRepo("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", _CLIP_FILES, _CLIP_OPTIONAL)
# T5TokenizerFast builds itself from the SentencePiece model when the repo has no tokenizer.json (sentencepiece and
# protobuf are in the recipe's lock); sd-scripts passes the max length itself, so the configs are optional.
T5_XXL = TokenizerRepo(
    "google/t5-v1_1-xxl", ("spiece.model",), ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")
)
# Which tokenizers each script loads at 48d368fa: every family goes through strategy_base._load_tokenizer, which
# takes `--tokenizer_cache_dir` and loads `<dir>/<repo with "/" as "_">` with from_pretrained(local folder) when that
# folder exists, and asks the Hub otherwise. So the CPU stage fills that folder (plain files; the Hub's own cache
# layout would have to be rebuilt by the stdlib agent) and the GPU pod's trainer runs with the Hub offline.
# - train_network.py (SD1.5): strategy_sd.TOKENIZER_ID (v1; lorabot trains no v2 models).
# - sdxl_train_network.py: strategy_sdxl.TOKENIZER1_PATH and TOKENIZER2_PATH.
# - flux_train_network.py: strategy_flux.CLIP_L_TOKENIZER_ID and T5_XXL_TOKENIZER_ID.
TOKENIZERS: dict[str, tuple[TokenizerRepo, ...]] = {
    "train_network.py": (CLIP_L,),
    "sdxl_train_network.py": (CLIP_L, CLIP_G),
    "flux_train_network.py": (CLIP_L, T5_XXL),
}
HUB_ENDPOINT = "https://huggingface.co"


def tokenizer_manifest(script: str, endpoint: str = HUB_ENDPOINT) -> list[dict[str, object]]:
    """The manifest's `tokenizers` for a script: per repo, the folder sd-scripts looks for under
    `--tokenizer_cache_dir` and each file's URL on the Hub (`endpoint` is a stand-in Hub in the test world)."""
    base = endpoint.rstrip("/")
    return [
        {
            "repo": repo.repo,
            "revision": repo.revision,
            "folder": repo.repo.replace("/", "_"),
            "files": [
                {"name": name, "url": f"{base}/{repo.repo}/resolve/{repo.revision}/{name}", "required": required}
                for names, required in ((repo.files, True), (repo.optional, False))
                for name in names
            ],
        }
        for repo in TOKENIZERS.get(script, ())
    ]


DATASET_TOML = "dataset.toml"
SAMPLE_PROMPTS_TXT = "sample_prompts.txt"
# How the agent launches the script (docs/CONTRACTS.md manifest `env.launcher`), for the displayed command only.
DISPLAY_LAUNCHER = ("accelerate", "launch", "--num_cpu_threads_per_process", "1")


@dataclass(frozen=True)
class TrainCommand:
    script: str
    args: tuple[str, ...]
    dataset_toml: str
    sample_prompts_text: str

    @property
    def files(self) -> dict[str, str]:
        """The manifest's `files`: written into `{job_dir}` before the script starts."""
        return {DATASET_TOML: self.dataset_toml, SAMPLE_PROMPTS_TXT: self.sample_prompts_text}


def build_command(spec: TrainSpec, dataset: DatasetFacts, model: CatalogModel) -> TrainCommand:
    return TrainCommand(
        script=SCRIPTS[spec.family],
        args=tuple(build_args(spec, model)),
        dataset_toml=build_dataset_toml(spec, dataset),
        sample_prompts_text=build_sample_prompts(spec),
    )


def build_args(spec: TrainSpec, model: CatalogModel) -> list[str]:
    args = [
        "--pretrained_model_name_or_path={model_path}",
        # The tokenizers the CPU stage fetched (TOKENIZERS): the trainer runs with the Hub offline.
        "--tokenizer_cache_dir={tokenizers_dir}",
        f"--dataset_config={{job_dir}}/{DATASET_TOML}",
        "--output_dir={output_dir}",
        f"--output_name={spec.output_name}",
        # Also in dataset.toml; passed here too because it is sd-scripts' fallback and what users look for.
        f"--caption_extension={spec.caption_extension}",
        f"--resolution={spec.resolution},{spec.resolution}",
        f"--network_module={spec.network_module}",
        f"--network_dim={spec.network_dim}",
        f"--network_alpha={_num(spec.network_alpha)}",
        f"--learning_rate={_num(spec.unet_lr)}",
        f"--unet_lr={_num(spec.unet_lr)}",
    ]
    if spec.network_train_unet_only:
        args.append("--network_train_unet_only")
    elif spec.te_lr is not None:
        args.append(f"--text_encoder_lr={_num(spec.te_lr)}")
    args += [
        f"--max_train_epochs={spec.epochs}",
        f"--train_batch_size={spec.batch_size}",
        f"--mixed_precision={spec.mixed_precision}",
        f"--save_precision={spec.save_precision}",
        f"--optimizer_type={spec.optimizer}",
        f"--lr_scheduler={spec.lr_scheduler}",
    ]
    if spec.lr_scheduler_num_cycles is not None:
        args.append(f"--lr_scheduler_num_cycles={spec.lr_scheduler_num_cycles}")
    if spec.lr_warmup_steps:
        args.append(f"--lr_warmup_steps={spec.lr_warmup_steps}")
    # Every epoch saved with its state: the agent uploads each checkpoint and a new pod resumes from the last state.
    # A resume needs only the newest state (jobs/agent/artifacts.py latest_complete_state), so sd-scripts keeps one:
    # save_and_remove_state_on_epoch_end (library/train_util.py @48d368fa) removes epoch E-1's folder only after
    # accelerator.save_state has written epoch E's, so a complete state is on the volume at every moment. It does
    # not touch `{output_name}-state`, which --save_state always adds at train end (the agent removes both once
    # the job's uploads are confirmed).
    args += ["--save_every_n_epochs=1", "--save_model_as=safetensors", "--save_state", "--save_last_n_epochs_state=1"]
    args += [
        f"--sample_prompts={{job_dir}}/{SAMPLE_PROMPTS_TXT}",
        f"--sample_every_n_epochs={spec.sample_every_n_epochs}",
    ]
    if spec.family != "flux":  # flux_train_network.py samples with its own Euler sampler
        args.append(f"--sample_sampler={spec.sample_sampler}")
    args.append(f"--{spec.attention}")
    if spec.no_half_vae and spec.family != "flux":
        args.append("--no_half_vae")
    if spec.cache_latents:
        args.append("--cache_latents")
        if spec.cache_latents_to_disk:
            args.append("--cache_latents_to_disk")
    if spec.cache_text_encoder_outputs and spec.family != "sd15":
        args.append("--cache_text_encoder_outputs")
    if spec.gradient_checkpointing:
        args.append("--gradient_checkpointing")
    if spec.clip_skip is not None and spec.family == "sd15":
        args.append(f"--clip_skip={spec.clip_skip}")
    args += ["--persistent_data_loader_workers", "--max_data_loader_n_workers=2", f"--seed={spec.seed}"]
    if spec.family == "flux":
        args += _flux_args(spec, model)
    for key, value in sorted(spec.extra_options.items()):
        if value is True:
            args.append(f"--{key}")
        elif value is not False:
            args.append(f"--{key}={_num(value) if isinstance(value, float) else value}")
    return args


def _flux_args(spec: TrainSpec, model: CatalogModel) -> list[str]:
    args = [f"--{role}={model.extra(role).volume_path}" for role in ("clip_l", "t5xxl", "ae")]
    if spec.fp8_base:
        args.append("--fp8_base")
    if spec.blocks_to_swap:
        args.append(f"--blocks_to_swap={spec.blocks_to_swap}")
    if spec.guidance_scale is not None:
        args.append(f"--guidance_scale={_num(spec.guidance_scale)}")
    if spec.timestep_sampling is not None:
        args.append(f"--timestep_sampling={spec.timestep_sampling}")
    if spec.model_prediction_type is not None:
        args.append(f"--model_prediction_type={spec.model_prediction_type}")
    if spec.discrete_flow_shift is not None:
        args.append(f"--discrete_flow_shift={_num(spec.discrete_flow_shift)}")
    return args


def build_dataset_toml(spec: TrainSpec, dataset: DatasetFacts) -> str:
    """sd-scripts' dataset config (docs/config_README-en.md): one DreamBooth-style subset per concept folder."""
    class_tokens = f"{spec.trigger} {spec.class_word}".strip()
    lines = [
        "# Written by lorabot; {data_dir} is replaced by the agent with the unpacked dataset folder.",
        "[general]",
        f"caption_extension = {_toml_str(spec.caption_extension)}",
        "",
        "[[datasets]]",
        f"resolution = {spec.resolution}",
        f"batch_size = {spec.batch_size}",
        f"enable_bucket = {_toml_bool(spec.enable_bucket)}",
        f"min_bucket_reso = {spec.min_bucket_reso}",
        f"max_bucket_reso = {spec.max_bucket_reso}",
        f"bucket_reso_steps = {spec.bucket_reso_steps}",
    ]
    for concept in dataset.concepts:
        lines += [
            "",
            "  [[datasets.subsets]]",
            f"  image_dir = {_toml_str('{data_dir}/' + concept.folder)}",
            f"  num_repeats = {effective_repeats(spec, concept)}",
            f"  class_tokens = {_toml_str(class_tokens)}",
            f"  caption_extension = {_toml_str(spec.caption_extension)}",
        ]
    return "\n".join(lines) + "\n"


def build_sample_prompts(spec: TrainSpec) -> str:
    """One line per prompt; the rules have refused any prompt text that could add lines or options."""
    size = f"--w {spec.resolution} --h {spec.resolution}"
    if spec.family == "flux":
        options = f"{size} --d {spec.seed} --s {spec.sample_steps} --g {_num(spec.sample_guidance or 3.5)}"
    else:
        options = f"{size} --d {spec.seed} --l {_num(spec.sample_cfg)} --s {spec.sample_steps}"
    if spec.sample_negative:
        options = f"--n {spec.sample_negative} {options}"
    return "".join(f"{prompt} {options}\n" for prompt in spec.sample_prompts)


def render_command(script: str, args: Sequence[str]) -> str:
    """A readable, shell-quoted one-liner for people; the agent never runs this string."""
    return shlex.join([*DISPLAY_LAUNCHER, script, *args])


def _num(value: float) -> str:
    """1e-4 → '0.0001', 8.0 → '8': short, and parsed back to the same float by argparse."""
    return f"{value:g}" if float(f"{value:g}") == value else repr(value)


def _toml_bool(value: bool) -> str:
    return "true" if value else "false"


def _toml_str(value: str) -> str:
    """A TOML basic string: JSON's escaping is valid TOML, except DEL, which TOML wants escaped too."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
