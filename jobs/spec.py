"""The typed training spec: what the bot will ask sd-scripts to do, after presets, user options and rules.

`UserOptions` is what a user typed (everything optional); a preset fills the gaps (`jobs.presets.merge`) and the
rules (`jobs.rules`) fix or refuse the result. The argument builder (`jobs.sdscripts`) reads only a `TrainSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

Family = Literal["sdxl", "sd15", "flux"]
FAMILIES: tuple[Family, ...] = ("sdxl", "sd15", "flux")
NoticeLevel = Literal["info", "fix", "warn"]
# How a preset resolves sd-scripts' "text encoder trained while its outputs are cached" assertion:
# keep training the text encoder (turn caching off) or train the U-Net only (keep caching).
TeCachePolicy = Literal["keep_te_training", "unet_only"]
ExtraValue = bool | int | float | str
# keep: the user's captions, tags only where none; auto: tags for every image; off: no tagging (jobs/captions.py).
CaptionMode = Literal["keep", "auto", "off"]


@dataclass(frozen=True)
class Notice:
    """One thing the planner did or wants the user to know: `fix` = it changed the spec, `warn` = it did not."""

    level: NoticeLevel
    code: str
    text: str

    def render(self) -> str:
        return f"[{self.level}] {self.code}: {self.text}"


@dataclass(frozen=True)
class UserOptions:
    """Options a user may give to `/train` or `lorabot plan`; None means "take the preset's value"."""

    preset: str | None = None
    base_model: str | None = None
    output_name: str | None = None
    trigger: str | None = None
    class_word: str | None = None
    epochs: int | None = None
    repeats: int | None = None
    network_dim: int | None = None
    network_alpha: float | None = None
    unet_lr: float | None = None
    te_lr: float | None = None
    resolution: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr_scheduler: str | None = None
    clip_skip: int | None = None
    cache_text_encoder_outputs: bool | None = None
    caption_extension: str | None = None
    sample_prompts: tuple[str, ...] = ()
    sample_every_n_epochs: int | None = None
    seed: int | None = None
    gpu: str | None = None
    extra_options: Mapping[str, ExtraValue] = field(default_factory=dict)
    # Auto-captioning mode (jobs/captions.py); None = "keep".
    captions: CaptionMode | None = None
    # Minutes the GPU pod stays up after training for /try (None = the operator's limits.test_window_min).
    test_window_min: int | None = None


@dataclass(frozen=True)
class TrainSpec:
    """Everything the argument builder needs. Frozen: rules return a changed copy (`dataclasses.replace`)."""

    family: Family
    base_model: str
    preset: str
    output_name: str
    trigger: str
    class_word: str
    epochs: int
    # None = the repeats the dataset's `{repeats}_{concept}` folders carry (or `default_repeats` when they carry none).
    repeats: int | None
    default_repeats: int
    network_module: str
    network_dim: int
    network_alpha: float
    unet_lr: float
    # None = the text encoder is not trained (`--network_train_unet_only`).
    te_lr: float | None
    resolution: int
    batch_size: int
    optimizer: str
    lr_scheduler: str
    lr_scheduler_num_cycles: int | None
    lr_warmup_steps: int
    mixed_precision: str
    save_precision: str
    cache_latents: bool
    cache_latents_to_disk: bool
    cache_text_encoder_outputs: bool
    network_train_unet_only: bool
    te_cache_policy: TeCachePolicy
    clip_skip: int | None
    gradient_checkpointing: bool
    attention: Literal["xformers", "sdpa"]
    no_half_vae: bool
    caption_extension: str
    enable_bucket: bool
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    sample_prompts: tuple[str, ...]
    sample_every_n_epochs: int | None
    sample_sampler: str
    sample_steps: int
    sample_cfg: float
    sample_negative: str
    default_prompts: tuple[str, ...]
    seed: int
    gpu: str
    # Flux only (flux_train_network.py); None/False elsewhere.
    fp8_base: bool = False
    blocks_to_swap: int | None = None
    guidance_scale: float | None = None
    sample_guidance: float | None = None
    timestep_sampling: str | None = None
    model_prediction_type: str | None = None
    discrete_flow_shift: float | None = None
    extra_options: Mapping[str, ExtraValue] = field(default_factory=dict)
    # Auto-captioning (jobs/captions.py): the WD14 tagger's thresholds and the tags the agent never writes.
    caption_general_threshold: float = 0.35
    caption_character_threshold: float = 0.35
    caption_undesired_tags: tuple[str, ...] = ()
    # Things the user needs at inference time that training ignores (e.g. SDXL's clip_skip).
    inference_notes: tuple[str, ...] = ()
    # The test window the user asked for at /train (minutes; None = the operator's default). Training ignores it.
    test_window_min: int | None = None


SPEC_FIELDS: frozenset[str] = frozenset(f.name for f in fields(TrainSpec))
