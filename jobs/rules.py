"""Rules every TrainSpec passes before money is spent: each one FIXES the spec with a visible notice or REFUSES.

They encode what kohya-ss/sd-scripts (@48d368fa) asserts or silently gets wrong, from seed 000's four gotchas and
the issues users file most. All refusals are collected so a user fixes everything in one go (`PlanRefused`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from jobs.catalog import Catalog, CatalogError, CatalogModel
from jobs.prices import GpuOffer, PriceTable
from jobs.spec import ExtraValue, Notice, NoticeLevel, TrainSpec
from jobs.usertext import shown


class PlanRefused(Exception):
    """The plan cannot run as asked; `reasons` are user-facing sentences, one per problem."""

    def __init__(self, reasons: list[str], notices: list[Notice] | None = None) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)
        self.notices = list(notices or [])

    def __str__(self) -> str:
        return "refused: " + " | ".join(self.reasons)


@dataclass(frozen=True)
class ConceptFacts:
    """One concept folder of the normalised dataset; `repeats` is None when its folder carried no `{n}_` prefix."""

    name: str
    folder: str
    image_count: int
    repeats: int | None = None


@dataclass(frozen=True)
class DatasetFacts:
    concepts: tuple[ConceptFacts, ...]
    caption_extension: str = ".txt"

    @property
    def image_count(self) -> int:
        return sum(c.image_count for c in self.concepts)


@dataclass(frozen=True)
class RuleLimits:
    max_total_steps: int = 20_000
    max_epochs: int = 100
    max_repeats: int = 100
    max_batch_size: int = 16
    max_sample_prompts: int = 4
    max_prompt_chars: int = 500
    min_resolution: int = 256
    max_resolution: int = 2048


# Options a user may add beyond the typed ones (`--extra key=value`): name → accepted Python type. Each exists in
# all three scripts' parsers (checked by tests/jobs/test_sdscripts.py against the extracted flag tables).
EXTRA_OPTIONS: dict[str, type] = {
    "noise_offset": float,
    "min_snr_gamma": float,
    "max_grad_norm": float,
    "scale_weight_norms": float,
    "network_dropout": float,
    "keep_tokens": int,
    "shuffle_caption": bool,
    "flip_aug": bool,
    "caption_dropout_rate": float,
}


@dataclass(frozen=True)
class ValueRange:
    """The values an option can take, from what sd-scripts does with it; numbers must also be finite."""

    low: float
    high: float
    meaning: str
    high_open: bool = False  # the high end itself is excluded

    def admits(self, value: float) -> bool:
        if not math.isfinite(value) or value < self.low:
            return False
        return value < self.high if self.high_open else value <= self.high

    def describe(self) -> str:
        return f"from {self.low:g} to {self.high:g}" + (" (exclusive)" if self.high_open else "")


# sd-scripts' help texts and uses at 48d368fa. A 0 switches the feature off where sd-scripts tests the value's truth
# (min_snr_gamma, scale_weight_norms, noise_offset); a negative or non-finite value would train on nonsense weights
# (min(snr, gamma) < 0), never clip (max_grad_norm), or drop everything (network_dropout 1).
EXTRA_OPTION_RANGES: dict[str, ValueRange] = {
    "noise_offset": ValueRange(0, 1, "the noise offset's strength; around 0.1 is usual"),
    "min_snr_gamma": ValueRange(0, 20, "the Min-SNR weighting's gamma, 0 for off; the paper recommends 5"),
    "max_grad_norm": ValueRange(0, 100, "the gradient norm clipped to, 0 for no clipping; 1 is sd-scripts' default"),
    "scale_weight_norms": ValueRange(0, 10, "the largest weight norm kept, 0 for off; 1 is a good start"),
    "network_dropout": ValueRange(0, 1, "the share of neurons dropped each step; 1 would drop them all", True),
    "keep_tokens": ValueRange(0, 255, "how many comma-separated caption tags stay first when captions are shuffled"),
    "caption_dropout_rate": ValueRange(0, 1, "the share of steps trained with an empty caption"),
}
# The seed reaches numpy's generator through accelerate's set_seed, which takes 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1
# Text-encoder output caching needs identical captions every step (sd-scripts' is_text_encoder_output_cacheable).
_TE_CACHE_BREAKERS = ("shuffle_caption", "caption_dropout_rate")
OPTIMIZERS = ("AdamW8bit", "AdamW", "PagedAdamW8bit", "Adafactor", "Lion", "Lion8bit", "Prodigy", "DAdaptAdam")
_ADAPTIVE_OPTIMIZERS = ("Prodigy", "DAdaptAdam")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
SAVE_PRECISIONS = ("float", "fp16", "bf16")
# VRAM a family needs at batch 1 with the presets' settings (seed 000: SDXL peaked at 16.4 GB with TE training).
MIN_VRAM_GB = {"sd15": 12, "sdxl": 20, "flux": 24}

_NAME_WORD = re.compile(r"[^\W_][\w .'\-]{0,63}")
_OUTPUT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_OUTPUT_BAD_RUN = re.compile(r"[^A-Za-z0-9._-]+")
# sd-scripts' line_to_prompt_dict matches these at the start of EVERY ` --`-separated part, the prompt included:
# a prompt "n girl" would become a negative prompt.
_PROMPT_OPTION_START = re.compile(r"(w|h|d|s|l|g|n|ss|cn|ctr|rcfg|fs) ", re.IGNORECASE)


@dataclass
class RuleContext:
    dataset: DatasetFacts
    model: CatalogModel | None
    gpu: GpuOffer | None
    limits: RuleLimits
    notices: list[Notice] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    def note(self, level: NoticeLevel, code: str, text: str) -> None:
        self.notices.append(Notice(level, code, text))

    def refuse(self, text: str) -> None:
        self.refusals.append(text)


Rule = Callable[[TrainSpec, RuleContext], TrainSpec]


def effective_repeats(spec: TrainSpec, concept: ConceptFacts) -> int:
    """--repeats wins, then the folder's `{n}_` prefix, then the preset's default."""
    if spec.repeats is not None:
        return spec.repeats
    return concept.repeats if concept.repeats else spec.default_repeats


def images_x_repeats(spec: TrainSpec, dataset: DatasetFacts) -> int:
    return sum(c.image_count * effective_repeats(spec, c) for c in dataset.concepts)


# --- names -------------------------------------------------------------------------------------------------------


def rule_trigger_and_class(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """Trigger and class words end up in dataset.toml, captions and prompt lines: plain words only."""
    for label, value in (("trigger", spec.trigger), ("class word", spec.class_word)):
        if not _NAME_WORD.fullmatch(value) or " --" in value:
            ctx.refuse(
                f"{label} {_show(value)} must be 1-64 letters, digits, spaces, dots, apostrophes or dashes"
                " (no line breaks, no ' --', no leading punctuation)"
            )
        elif _PROMPT_OPTION_START.match(value):
            # Sample prompts start with the trigger (or the class word), and sd-scripts would read "n girl" as
            # the negative-prompt option: the word itself is the problem, so it is what the refusal names.
            ctx.refuse(
                f"{label} {_show(value)} starts with {_show(value.split(' ')[0])} and a space, which sd-scripts"
                " reads as a sample-prompt option letter; join the words (e.g. with '_') or start with another word"
            )
    return spec


def rule_output_name(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """output_name becomes file names and bucket keys (`<name>-000003.safetensors`): no path characters."""
    if _OUTPUT_NAME.fullmatch(spec.output_name):
        return spec
    cleaned = _OUTPUT_BAD_RUN.sub("_", spec.output_name).strip("._-")[:64] or "lora"
    ctx.note(
        "fix",
        "output-name",
        f"output name {_show(spec.output_name)} became {cleaned!r}: file names may only hold letters, digits,"
        " '.', '_' and '-'",
    )
    return replace(spec, output_name=cleaned)


# --- model, GPU, family ------------------------------------------------------------------------------------------


def rule_model_family(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    if ctx.model is not None and ctx.model.family != spec.family:
        ctx.refuse(
            f"base model {ctx.model.id} is a {ctx.model.family} model but preset {spec.preset} trains {spec.family};"
            f" pick a {ctx.model.family} preset or a {spec.family} base model"
        )
    return spec


def rule_gpu_vram(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    if ctx.gpu is None:
        return spec
    need = MIN_VRAM_GB[spec.family]
    if ctx.gpu.vram_gb < need:
        ctx.refuse(
            f"{ctx.gpu.display_name} has {ctx.gpu.vram_gb} GB of VRAM; {spec.family} LoRA training with this preset"
            f" needs at least {need} GB (use a 24 GB card such as the RTX 4090)"
        )
    return spec


def rule_gpu_secure_cloud(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """The GPU pod trains on the Network Volume, and RunPod mounts volumes only on Secure Cloud pods."""
    if ctx.gpu is None:
        return spec
    if ctx.gpu.price("secure") is None:
        ctx.refuse(
            f"{ctx.gpu.display_name} is not offered in RunPod's Secure Cloud, the only cloud whose pods can mount the"
            " Network Volume lorabot trains on; pick another GPU (e.g. 4090)"
        )
    elif ctx.gpu.live and ctx.gpu.stock is None:
        ctx.note(
            "warn",
            "gpu-stock",
            f"RunPod has no {ctx.gpu.display_name} free in the Secure Cloud right now; the job may wait for a GPU",
        )
    return spec


def rule_network_module(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """Flux needs networks.lora_flux; networks.lora on Flux fails to find its target modules."""
    wanted = "networks.lora_flux" if spec.family == "flux" else "networks.lora"
    if spec.network_module != wanted:
        ctx.note("fix", "network-module", f"network module {spec.network_module} → {wanted} for {spec.family}")
        return replace(spec, network_module=wanted)
    return spec


def rule_flux_memory(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """FLUX.1-dev is 24 GB of weights: on a 24 GB card it only trains with fp8 base weights, swapped blocks and
    cached text encoders (sd-scripts docs/flux_train_network.md; OOM reports: bmaltais/kohya_ss#2972, #2991)."""
    if spec.family != "flux":
        return spec
    small_card = ctx.gpu is None or ctx.gpu.vram_gb <= 24
    changes: dict[str, object] = {}
    if small_card and not spec.fp8_base:
        changes["fp8_base"] = True
    if small_card and spec.blocks_to_swap is None:
        changes["blocks_to_swap"] = 18
    if not spec.cache_text_encoder_outputs:
        changes["cache_text_encoder_outputs"] = True
    if spec.mixed_precision == "no":
        changes["mixed_precision"] = "bf16"  # sd-scripts asserts: fp8_base requires mixed precision fp16/bf16
    if spec.attention != "sdpa":
        changes["attention"] = "sdpa"
    if changes:
        shown = ", ".join(f"{k}={v}" for k, v in changes.items())
        ctx.note("fix", "flux-24gb", f"Flux on a 24 GB card needs {shown}")
        spec = replace(spec, **changes)  # type: ignore[arg-type]
    defaults = {
        "guidance_scale": 1.0,  # FLUX.1-dev is guidance-distilled: train with guidance 1.0 (sd-scripts' advice)
        "timestep_sampling": "flux_shift",
        "model_prediction_type": "raw",
        "sample_guidance": 3.5,
    }
    missing = {k: v for k, v in defaults.items() if getattr(spec, k) is None}
    if missing:
        shown = ", ".join(f"{k}={v}" for k, v in missing.items())
        ctx.note("fix", "flux-settings", f"Flux settings the preset left unset: {shown}")
        spec = replace(spec, **missing)  # type: ignore[arg-type]
    return spec


# --- seed 000's four gotchas -------------------------------------------------------------------------------------


def rule_te_cache(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """Gotcha 1. sdxl_train_network.py asserts `network_train_unet_only or not cache_text_encoder_outputs`
    ("network for Text Encoder cannot be trained with caching Text Encoder outputs"; bmaltais/kohya_ss#1210,
    kohya-ss/sd-scripts#1518). The preset's policy decides which side gives way."""
    if spec.network_train_unet_only and spec.te_lr is not None:
        spec = replace(spec, te_lr=None)
    if not spec.cache_text_encoder_outputs:
        return spec
    if spec.family == "sd15":
        ctx.note(
            "fix",
            "te-cache-sd15",
            "turned --cache_text_encoder_outputs off: train_network.py (SD 1.5) has no such option",
        )
        return replace(spec, cache_text_encoder_outputs=False)
    for key in _TE_CACHE_BREAKERS:
        if spec.extra_options.get(key):
            ctx.refuse(
                f"{key} changes captions every step, which sd-scripts refuses while text-encoder outputs are cached"
                f" (kohya-ss/sd-scripts#886); remove {key} or use a preset that trains the text encoder"
            )
    if spec.network_train_unet_only:
        return spec
    if spec.te_cache_policy == "keep_te_training":
        ctx.note(
            "fix",
            "te-cache",
            f"turned --cache_text_encoder_outputs off: the text encoder is trained (text_encoder_lr={_lr(spec.te_lr)}),"
            " and sd-scripts refuses to train it from cached outputs; preset"
            f" {spec.preset} keeps text-encoder training (more VRAM, still fits 24 GB)",
        )
        return replace(spec, cache_text_encoder_outputs=False)
    ctx.note(
        "fix",
        "te-cache",
        f"dropped text_encoder_lr={_lr(spec.te_lr)} and train the U-Net only (--network_train_unet_only):"
        f" sd-scripts cannot train the text encoder from cached outputs, and preset {spec.preset} keeps the cache",
    )
    return replace(spec, network_train_unet_only=True, te_lr=None)


def rule_caption_extension(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """Gotcha 2. sd-scripts defaults to `.caption` and only warns "No caption file found for N images", then trains
    without captions (kohya-ss/sd-scripts#533, bmaltais/kohya_ss#988). The normalised dataset decides."""
    wanted = ctx.dataset.caption_extension
    if spec.caption_extension != wanted:
        ctx.note(
            "fix",
            "caption-extension",
            f"caption extension {spec.caption_extension} → {wanted} (--caption_extension={wanted}) to match the"
            f" dataset's caption files; otherwise sd-scripts trains without captions",
        )
        return replace(spec, caption_extension=wanted)
    return spec


def rule_clip_skip(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """Gotcha 3. SDXL (and Flux) training ignores --clip_skip ("clip_skip will be unexpected"): drop it, keep it
    for inference."""
    if spec.clip_skip is None:
        return spec
    if spec.family == "sd15":
        if not 1 <= spec.clip_skip <= 12:
            ctx.refuse(f"clip_skip must be between 1 and 12, got {spec.clip_skip}")
        return spec
    ctx.note(
        "fix",
        "clip-skip",
        f"dropped --clip_skip={spec.clip_skip}: {spec.family} training ignores it; use clip_skip={spec.clip_skip}"
        " at inference",
    )
    note = f"Use clip_skip={spec.clip_skip} at inference (as for the base model)."
    return replace(spec, clip_skip=None, inference_notes=(*spec.inference_notes, note))


def rule_samples(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """Gotcha 4. Without --sample_prompts and a cadence sd-scripts renders nothing, and picking the best epoch needs
    samples: default prompts from trigger + class, every epoch, one fixed seed."""
    changes: dict[str, object] = {}
    if not spec.sample_prompts:
        prompts = tuple(
            p.replace("{trigger}", spec.trigger).replace("{class}", spec.class_word) for p in spec.default_prompts
        )
        changes["sample_prompts"] = prompts
        ctx.note(
            "fix",
            "sample-prompts",
            f"no sample prompt given: using {len(prompts)} from the trigger and class ("
            + "; ".join(repr(p) for p in prompts)
            + f"), seed {spec.seed}",
        )
    if not spec.sample_every_n_epochs:
        changes["sample_every_n_epochs"] = 1
        ctx.note("fix", "sample-cadence", "samples were off: rendering them after every epoch")
    elif not 1 <= spec.sample_every_n_epochs <= ctx.limits.max_epochs:
        ctx.refuse(
            f"samples every N epochs must be between 1 and {ctx.limits.max_epochs}, got {spec.sample_every_n_epochs}"
        )
    if not 0 <= spec.seed <= MAX_SEED:
        ctx.refuse(
            f"seed must be between 0 and {MAX_SEED} (what the trainer's random generators take), got {spec.seed}"
        )
    return replace(spec, **changes) if changes else spec  # type: ignore[arg-type]


def option_marker_refusal(text: str, what: str) -> str | None:
    """sd-scripts reads ` --` in a prompt line as the start of an option; None when `text` has none. Shared by the
    sample prompts and the caption editor (bot/web/editor.py), whose captions must not carry options either."""
    if " --" not in text:
        return None
    return (
        f"{what} contains ' --', which sd-scripts reads as an option (--n, --w, --s ...);"
        " lorabot sets size, steps, seed and negative prompt itself: remove the ' --'"
    )


def rule_sample_prompt_text(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """sample_prompts.txt is one prompt per line, options after ` --` (train_util.line_to_prompt_dict). User text
    that holds a line break or ` --` would add prompts or options: REFUSED, never escaped (the format has no
    escape). A leading '#' would make the line a comment: FIXED by removing it."""
    if len(spec.sample_prompts) > ctx.limits.max_sample_prompts:
        ctx.refuse(f"at most {ctx.limits.max_sample_prompts} sample prompts, got {len(spec.sample_prompts)}")
    cleaned: list[str] = []
    for number, prompt in enumerate(spec.sample_prompts, start=1):
        text = prompt.strip()
        if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text):
            ctx.refuse(
                f"sample prompt {number} contains a line break or control character; sd-scripts reads one prompt"
                " per line, so it would split into several: write it on one line"
            )
        elif (option := option_marker_refusal(text, f"sample prompt {number}")) is not None:
            ctx.refuse(option)
        elif _PROMPT_OPTION_START.match(text) and not _starts_with_refused_word(text, spec):
            ctx.refuse(
                f"sample prompt {number} starts with {_show(text.split(' ')[0])} and a space, which sd-scripts reads as"
                " an option letter: start it with the trigger word instead"
            )
        elif len(text) > ctx.limits.max_prompt_chars:
            ctx.refuse(
                f"sample prompt {number} is {len(text)} characters long; the limit is {ctx.limits.max_prompt_chars}"
            )
        if text.startswith("#"):
            text = text.lstrip("#").strip()
            ctx.note(
                "fix",
                "sample-prompt-comment",
                f"removed the leading '#' of sample prompt {number}: sd-scripts skips lines starting with '#'",
            )
        if not text:
            ctx.refuse(f"sample prompt {number} is empty")
        cleaned.append(text)
    return replace(spec, sample_prompts=tuple(cleaned))


# --- sizes, steps, hyper-parameters ------------------------------------------------------------------------------


def rule_resolution(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """Resolution in range and a multiple of 64; bucket steps as each script asserts (SDXL/Flux: multiple of 32,
    SD 1.5: multiple of 64 — kohya-ss/sd-scripts#1140, #1763); min ≤ resolution ≤ max bucket (asserted)."""
    lo, hi = ctx.limits.min_resolution, ctx.limits.max_resolution
    if not lo <= spec.resolution <= hi:
        ctx.refuse(f"resolution must be between {lo} and {hi} pixels, got {spec.resolution}")
        return spec
    changes: dict[str, int] = {}
    resolution = spec.resolution
    if resolution % 64:
        resolution = max(lo, round(resolution / 64) * 64)
        changes["resolution"] = resolution
        ctx.note("fix", "resolution", f"resolution {spec.resolution} → {resolution}: it must be a multiple of 64")
    step_unit = 64 if spec.family == "sd15" else 32
    if spec.bucket_reso_steps <= 0 or spec.bucket_reso_steps % step_unit:
        changes["bucket_reso_steps"] = 64
        ctx.note(
            "fix",
            "bucket-steps",
            f"bucket_reso_steps {spec.bucket_reso_steps} → 64: the {spec.family}"
            f" script asserts a multiple of {step_unit}",
        )
    if spec.min_bucket_reso > resolution or spec.max_bucket_reso < resolution:
        low, high = min(spec.min_bucket_reso, resolution), max(spec.max_bucket_reso, resolution)
        changes.update(min_bucket_reso=low, max_bucket_reso=high)
        ctx.note(
            "fix",
            "bucket-range",
            f"bucket range {spec.min_bucket_reso}-{spec.max_bucket_reso} → {low}-{high}"
            f" so it contains the resolution {resolution} (sd-scripts asserts it)",
        )
    if spec.family == "sd15" and resolution > 768:
        ctx.note(
            "warn",
            "sd15-resolution",
            f"SD 1.5 was trained at 512 px; {resolution} px is slow and often repeats subjects. 512-768 is usual",
        )
    if spec.family in ("sdxl", "flux") and resolution < 768:
        ctx.note("warn", "low-resolution", f"{spec.family} works best at 1024 px; {resolution} px gives softer results")
    return replace(spec, **changes) if changes else spec  # type: ignore[arg-type]


def rule_epochs_and_repeats(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    if not 1 <= spec.epochs <= ctx.limits.max_epochs:
        ctx.refuse(f"epochs must be between 1 and {ctx.limits.max_epochs}, got {spec.epochs}")
    if spec.repeats is not None and not 1 <= spec.repeats <= ctx.limits.max_repeats:
        ctx.refuse(f"repeats must be between 1 and {ctx.limits.max_repeats}, got {spec.repeats}")
    if spec.repeats is None and any(not c.repeats for c in ctx.dataset.concepts):
        ctx.note(
            "info",
            "repeats",
            f"folders without a '<repeats>_' prefix repeat {spec.default_repeats}x"
            f" (preset default); set --repeats to change it",
        )
    return spec


def rule_batch_size(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """A batch larger than an epoch's images would make every epoch one short, padded step."""
    if not 1 <= spec.batch_size <= ctx.limits.max_batch_size:
        ctx.refuse(f"batch size must be between 1 and {ctx.limits.max_batch_size}, got {spec.batch_size}")
        return spec
    per_epoch = images_x_repeats(spec, ctx.dataset)
    if 0 < per_epoch < spec.batch_size:
        ctx.note(
            "fix",
            "batch-size",
            f"batch size {spec.batch_size} → {per_epoch}: an epoch has only {per_epoch} images x repeats",
        )
        return replace(spec, batch_size=per_epoch)
    return spec


def rule_steps_cap(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    per_epoch = -(-images_x_repeats(spec, ctx.dataset) // spec.batch_size) if spec.batch_size >= 1 else 0
    cap = ctx.limits.max_total_steps
    if per_epoch * spec.epochs <= cap or spec.epochs < 1:
        return spec
    if per_epoch > cap:
        ctx.refuse(
            f"one epoch is already {per_epoch:,} steps (limit {cap:,} for the whole run): lower --repeats or"
            " raise --batch-size"
        )
        return spec
    epochs = cap // per_epoch
    ctx.note(
        "fix",
        "steps-cap",
        f"epochs {spec.epochs} → {epochs}: {spec.epochs} x {per_epoch:,} steps would pass the {cap:,}-step limit",
    )
    return replace(spec, epochs=epochs)


def rule_dim_alpha(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    if not 1 <= spec.network_dim <= 256:
        ctx.refuse(f"network dim must be between 1 and 256, got {spec.network_dim}")
    if not 0 < spec.network_alpha <= 256:
        ctx.refuse(f"network alpha must be above 0 and at most 256, got {spec.network_alpha:g}")
    elif spec.network_alpha > spec.network_dim:
        ctx.note(
            "warn",
            "alpha-above-dim",
            f"network alpha {spec.network_alpha:g} is above dim {spec.network_dim}:"
            f" updates are scaled up {spec.network_alpha / spec.network_dim:g}x; alpha ≤ dim is usual"
            " (seed 000: 8/16)",
        )
    return spec


def rule_learning_rates(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    if spec.optimizer not in OPTIMIZERS:
        ctx.refuse(f"unknown optimizer {_show(spec.optimizer)}; use one of {', '.join(OPTIMIZERS)}")
        return spec
    adaptive = spec.optimizer in _ADAPTIVE_OPTIMIZERS
    top, usual = (10.0, 2.0) if adaptive else (1e-2, 1e-3)
    for label, lr in (("U-Net learning rate", spec.unet_lr), ("text-encoder learning rate", spec.te_lr)):
        if lr is None:
            continue
        if not 0 < lr <= top:
            ctx.refuse(f"{label} must be above 0 and at most {top:g} with {spec.optimizer}, got {lr:g}")
        elif lr > usual:
            ctx.note(
                "warn",
                "high-lr",
                f"{label} {lr:g} is high for {spec.optimizer} (usual ≤ {usual:g});"
                " the LoRA may burn in after a few epochs",
            )
    if spec.te_lr is not None and spec.te_lr > spec.unet_lr:
        ctx.note(
            "warn",
            "te-lr-above-unet",
            f"text-encoder learning rate {spec.te_lr:g} is above the U-Net's"
            f" {spec.unet_lr:g}; half the U-Net rate is usual (seed 000: 5e-05 vs 1e-04)",
        )
    return spec


def rule_schedule_and_precision(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    if spec.lr_scheduler not in SCHEDULERS:
        ctx.refuse(f"unknown learning-rate scheduler {_show(spec.lr_scheduler)}; use one of {', '.join(SCHEDULERS)}")
    if spec.mixed_precision not in MIXED_PRECISIONS:
        ctx.refuse(f"mixed precision must be one of {', '.join(MIXED_PRECISIONS)}, got {_show(spec.mixed_precision)}")
    if spec.save_precision not in SAVE_PRECISIONS:
        ctx.refuse(f"save precision must be one of {', '.join(SAVE_PRECISIONS)}, got {_show(spec.save_precision)}")
    return spec


def rule_warmup(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    """A warm-up longer than the run never reaches the set learning rate."""
    total = -(-images_x_repeats(spec, ctx.dataset) // max(spec.batch_size, 1)) * spec.epochs
    if total > 0 and spec.lr_warmup_steps >= total:
        warmup = total // 10
        ctx.note("fix", "warmup", f"lr warm-up {spec.lr_warmup_steps} → {warmup} steps: the run has only {total}")
        return replace(spec, lr_warmup_steps=warmup)
    return spec


def rule_extra_options(spec: TrainSpec, ctx: RuleContext) -> TrainSpec:
    for key, value in spec.extra_options.items():
        wanted = EXTRA_OPTIONS.get(key)
        if key == "spot":
            ctx.refuse("RunPod no longer offers spot (interruptible) pods; remove `spot` from the config")
        elif wanted is None:
            ctx.refuse(f"extra option {_show(key)} is not allowed; allowed: {', '.join(sorted(EXTRA_OPTIONS))}")
        elif not _is_type(value, wanted):
            ctx.refuse(f"extra option {key} needs a {wanted.__name__}, got {_show(str(value))}")
        elif (allowed := EXTRA_OPTION_RANGES.get(key)) is not None and not allowed.admits(float(value)):
            ctx.refuse(f"extra option {key} must be {allowed.describe()} ({allowed.meaning}), got {value!r}")
    return spec


def _is_type(value: ExtraValue, wanted: type) -> bool:
    if wanted is bool:
        return isinstance(value, bool)
    if wanted is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, wanted) and not isinstance(value, bool)


RULES: tuple[Rule, ...] = (
    rule_trigger_and_class,
    rule_output_name,
    rule_model_family,
    rule_gpu_vram,
    rule_gpu_secure_cloud,
    rule_network_module,
    rule_flux_memory,
    rule_te_cache,
    rule_caption_extension,
    rule_clip_skip,
    rule_extra_options,
    rule_samples,
    rule_sample_prompt_text,
    rule_resolution,
    rule_epochs_and_repeats,
    rule_batch_size,
    rule_steps_cap,
    rule_dim_alpha,
    rule_learning_rates,
    rule_schedule_and_precision,
    rule_warmup,
)


@dataclass(frozen=True)
class Checked:
    spec: TrainSpec
    notices: tuple[Notice, ...]
    model: CatalogModel
    gpu: GpuOffer


def apply_rules(
    spec: TrainSpec,
    dataset: DatasetFacts,
    *,
    catalog: Catalog,
    prices: PriceTable,
    limits: RuleLimits | None = None,
) -> Checked:
    """Run every rule in order; any refusal → PlanRefused with all reasons (and the notices so far)."""
    refusals: list[str] = []
    model: CatalogModel | None = None
    gpu: GpuOffer | None = None
    try:
        model = catalog.get(spec.base_model)
        spec = replace(spec, base_model=model.id)
    except CatalogError as exc:
        refusals.append(str(exc))
    try:
        gpu = prices.gpu(spec.gpu)
        spec = replace(spec, gpu=gpu.gpu_id)
    except KeyError as exc:
        refusals.append(str(exc.args[0]))
    ctx = RuleContext(dataset=dataset, model=model, gpu=gpu, limits=limits or RuleLimits(), refusals=refusals)
    for rule in RULES:
        spec = rule(spec, ctx)
    if ctx.refusals or model is None or gpu is None:
        raise PlanRefused(ctx.refusals, ctx.notices)
    return Checked(spec=spec, notices=tuple(ctx.notices), model=model, gpu=gpu)


def _starts_with_refused_word(prompt: str, spec: TrainSpec) -> bool:
    """The prompt's option-like start is the trigger's or class word's, which their own rule already refused."""
    return any(
        word and prompt.startswith(word) and _PROMPT_OPTION_START.match(word)
        for word in (spec.trigger, spec.class_word)
    )


def _lr(value: float | None) -> str:
    return "the U-Net's" if value is None else f"{value:g}"


def _show(value: str) -> str:
    """A user's value quoted for a message (see `jobs.usertext`)."""
    return shown(value)
