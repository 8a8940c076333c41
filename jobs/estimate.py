"""Steps, duration and cost of a planned job, before any money is spent.

Calibrated on seed 000: 59 images x 10 repeats x 10 epochs = 5,900 SDXL steps at 1024² batch 1 took about 50 min on
an RTX 4090 (0.51 s/step); the CPU stage (venv, sd-scripts, torch, 6.5 GB model) took 30-40 min cold; the measured
bill was ~$0.75 with a secure-cloud 4090. Durations are whole seconds; money is integer micro-dollars. Costs are
quoted for the Secure Cloud only: the GPU pod trains on the Network Volume, which RunPod mounts only there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from jobs.prices import QUOTED_CLOUDS, Cloud, GpuOffer, PriceSource, PriceTable, format_usd
from jobs.spec import Family, TrainSpec

GB = 1_000_000_000


@dataclass(frozen=True)
class StepCount:
    images_x_repeats: int
    per_epoch: int
    epochs: int

    @property
    def total(self) -> int:
        return self.per_epoch * self.epochs


def count_steps(subsets: Sequence[tuple[int, int]], epochs: int, batch_size: int) -> StepCount:
    """(image_count, repeats) per subset → steps as sd-scripts counts them: epochs x ceil(Σ images x repeats / batch).

    sd-scripts rounds up per aspect-ratio bucket, so a dataset with many buckets and batch > 1 can take a few more
    steps than this; at batch 1 (the presets' default) the figure is exact.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch size must be at least 1")
    images_x_repeats = sum(images * repeats for images, repeats in subsets)
    return StepCount(images_x_repeats, math.ceil(images_x_repeats / batch_size), epochs)


@dataclass(frozen=True)
class SpeedFigures:
    """Seconds per training step on an RTX 4090 at batch 1 and a reference resolution, per family, and how much
    slower other GPUs are. Defaults: SDXL from seed 000; SD1.5 and Flux (fp8 + 18 swapped blocks) from common
    reports; other GPUs relative to the 4090."""

    step_s_4090: Mapping[Family, tuple[int, Decimal]] = field(
        default_factory=lambda: {
            "sdxl": (1024, Decimal("0.51")),
            "sd15": (512, Decimal("0.16")),
            "flux": (1024, Decimal("2.2")),
        }
    )
    # Seconds to render one sample image at the reference resolution, per sampling step.
    sample_step_s_4090: Mapping[Family, Decimal] = field(
        default_factory=lambda: {"sdxl": Decimal("0.14"), "sd15": Decimal("0.05"), "flux": Decimal("1.2")}
    )
    gpu_slowdown: Mapping[str, Decimal] = field(
        default_factory=lambda: {
            "NVIDIA GeForce RTX 4090": Decimal("1.0"),
            "NVIDIA GeForce RTX 3090": Decimal("1.7"),
            "NVIDIA RTX A5000": Decimal("1.9"),
            "NVIDIA L4": Decimal("2.6"),
            "NVIDIA RTX A6000": Decimal("1.5"),
            "NVIDIA A40": Decimal("1.6"),
            "NVIDIA RTX 4000 Ada Generation": Decimal("2.4"),
            "NVIDIA RTX A4000": Decimal("2.6"),
        }
    )
    unknown_gpu_slowdown: Decimal = Decimal("2.0")
    # Each extra image in a batch costs this share of a batch-1 step (a batch of 2 ≈ 1.8x the time, half the steps).
    batch_extra: Decimal = Decimal("0.8")

    def step_seconds(self, family: Family, gpu_id: str, resolution: int, batch_size: int) -> Decimal:
        reference, seconds = self.step_s_4090[family]
        pixels = Decimal(resolution * resolution) / Decimal(reference * reference)
        batch = 1 + self.batch_extra * (batch_size - 1)
        return seconds * self.slowdown(gpu_id) * pixels * batch

    def slowdown(self, gpu_id: str) -> Decimal:
        return self.gpu_slowdown.get(gpu_id, self.unknown_gpu_slowdown)


@dataclass(frozen=True)
class StageFigures:
    """Fixed costs around training (seconds), as the two-stage flow of seed 000 spends them."""

    cpu_pod_start_s: int = 60
    env_build_s: int = 1500  # apt + venv + torch cu124 + requirements + xformers (seed 000: the bulk of 30-40 min)
    download_bytes_per_s: int = 20_000_000
    warm_cpu_stage_s: int = 120  # cache hit: only the dataset and the READY marker
    gpu_startup_s: int = 120
    reserve_margin_s: int = 120  # the GPU pod is reserved this long before the CPU stage ends
    gpu_setup_s: Mapping[Family, int] = field(default_factory=lambda: {"sdxl": 120, "sd15": 60, "flux": 300})
    cache_latents_per_image_s: Decimal = Decimal("0.2")
    checkpoint_per_epoch_s: int = 15  # LoRA file + --save_state folder
    upload_s: int = 60
    env_bytes: int = 8_500_000_000  # the venv on the volume (seed 000: 8.5 GB)
    volume_headroom_bytes: int = 5_000_000_000
    min_volume_gb: int = 30


@dataclass(frozen=True)
class Durations:
    cpu_stage_s: int
    gpu_startup_s: int
    reserve_margin_s: int
    gpu_setup_s: int
    train_s: int
    sampling_s: int
    checkpoint_s: int
    upload_s: int

    @property
    def gpu_billed_s(self) -> int:
        return (
            self.gpu_startup_s
            + self.reserve_margin_s
            + self.gpu_setup_s
            + self.train_s
            + self.sampling_s
            + self.checkpoint_s
            + self.upload_s
        )

    @property
    def wall_s(self) -> int:
        """The GPU pod starts before the CPU stage ends, so their overlap counts once."""
        return self.cpu_stage_s + self.gpu_billed_s - self.gpu_startup_s - self.reserve_margin_s


@dataclass(frozen=True)
class CloudCost:
    cloud: Cloud
    gpu_hourly_micros: int
    volume_micros: int
    cpu_micros: int
    gpu_micros: int

    @property
    def total_micros(self) -> int:
        return self.volume_micros + self.cpu_micros + self.gpu_micros


@dataclass(frozen=True)
class Estimate:
    steps: StepCount
    gpu: GpuOffer
    step_seconds: Decimal
    durations: Durations
    volume_gb: int
    cpu_hourly_micros: int
    warm: bool
    costs: tuple[CloudCost, ...]
    prices_source: PriceSource
    tagging_s: int = 0

    def cost(self, cloud: Cloud) -> CloudCost:
        for cost in self.costs:
            if cost.cloud == cloud:
                return cost
        raise KeyError(f"this estimate has no {cloud} cost for {self.gpu.display_name}")

    def render_table(self) -> str:
        d = self.durations
        lines = [
            f"Steps: {self.steps.total:,} ({self.steps.images_x_repeats:,} images x repeats per epoch"
            f" / batch = {self.steps.per_epoch:,} steps x {self.steps.epochs} epochs)",
            f"GPU: {self.gpu.display_name} ({self.gpu.vram_gb} GB), ~{self.step_seconds:.2f} s/step"
            + (f", Secure Cloud stock: {self.gpu.stock or 'none free now'}" if self.gpu.live else ""),
            f"Duration: training {_minutes(d.train_s)}, samples {_minutes(d.sampling_s)},"
            f" checkpoints {_minutes(d.checkpoint_s)}, GPU set-up {_minutes(d.gpu_startup_s + d.gpu_setup_s)};"
            f" CPU stage {_minutes(d.cpu_stage_s)} ({'warm cache' if self.warm else 'cold: env + model download'}"
            + (f", of which auto-captioning {_minutes(self.tagging_s)}" if self.tagging_s else "")
            + ");"
            f" wall {_minutes(d.wall_s)}",
            "",
            "| Cloud | Volume | CPU pod | GPU pod | Total |",
            "|---|---|---|---|---|",
        ]
        cpu_line = f"{format_usd(self.cpu_hourly_micros)}/h x {_minutes(d.cpu_stage_s)}"
        for cost in self.costs:
            gpu_line = f"{format_usd(cost.gpu_hourly_micros)}/h x {_minutes(d.gpu_billed_s)}"
            lines.append(
                f"| {cost.cloud} | {format_usd(cost.volume_micros, 3)} ({self.volume_gb} GB x {_minutes(d.wall_s)})"
                f" | {format_usd(cost.cpu_micros, 3)} ({cpu_line}) | {format_usd(cost.gpu_micros, 3)} ({gpu_line})"
                f" | **{format_usd(cost.total_micros)}** |"
            )
        lines.append(f"Prices: {self.prices_source.describe()}.")
        return "\n".join(lines)


# Σ (in + out features) of the layers sd-scripts' LoRA wraps by default, (U-Net or transformer, text encoders):
# LoRA parameters = network_dim x Σ. Counted from the models' structure; the stand-in writes files of these sizes
# with LORABOT_STANDIN_REAL_SIZES=1 (jobs/sandbox/sdscripts/_standin_files.py shows the counting, and a test keeps
# the two tables equal). SD1.5 at dim 32 in fp16: 18.9 M parameters = 37.8 MB, as a real one.
LORA_FEATURE_SUMS: Mapping[Family, tuple[int, int]] = {
    "sd15": (423_936, 165_888),
    "sdxl": (2_659_840, 903_168),
    "flux": (4_786_176, 0),  # networks.lora_flux trains no text encoder by default
}
# Bytes per trained parameter of the optimizer's state in accelerate's optimizer.bin (8-bit moments: 1 byte each).
OPTIMIZER_BYTES_PER_PARAM: Mapping[str, int] = {
    "adamw8bit": 2,
    "pagedadamw8bit": 2,
    "lion8bit": 1,
    "lion": 4,
    "prodigy": 16,
}
DEFAULT_OPTIMIZER_BYTES_PER_PARAM = 8  # AdamW: two fp32 moments


def lora_params(spec: TrainSpec) -> int:
    unet, text_encoders = LORA_FEATURE_SUMS[spec.family]
    return spec.network_dim * (unet + (0 if spec.network_train_unet_only else text_encoders))


def job_output_bytes(spec: TrainSpec) -> int:
    """The most one job has in its output folder on the volume at once: a LoRA per epoch at the save precision,
    and two state folders (fp32 weights + optimizer moments): with --save_last_n_epochs_state=1 sd-scripts writes
    epoch E's state before it removes E-1's, and at train end `<name>-state` joins the last numbered one (one
    state only for a 1-epoch job). The agent removes all of it once the uploads are confirmed.
    SDXL dim 32 with its text encoders, AdamW8bit, 10 epochs: 10 x 228 MB + 2 x 684 MB = 3.6 GB."""
    params = lora_params(spec)
    lora = params * (4 if spec.save_precision in ("fp32", "float") else 2)
    optimizer = OPTIMIZER_BYTES_PER_PARAM.get(spec.optimizer.lower(), DEFAULT_OPTIMIZER_BYTES_PER_PARAM)
    state = params * (4 + optimizer)
    return spec.epochs * lora + min(spec.epochs, 2) * state


def volume_size_gb(model_bytes: int, stages: StageFigures, outputs_bytes: int = 0) -> int:
    """Env + models + the job's outputs + headroom, rounded up to 10 GB, at least seed 000's 30 GB."""
    need = model_bytes + stages.env_bytes + outputs_bytes + stages.volume_headroom_bytes
    return max(stages.min_volume_gb, math.ceil(need / GB / 10) * 10)


def estimate(
    spec: TrainSpec,
    steps: StepCount,
    *,
    image_count: int,
    model_bytes: int,
    gpu: GpuOffer,
    prices: PriceTable,
    warm: bool = False,
    speeds: SpeedFigures | None = None,
    stages: StageFigures | None = None,
    tagging_s: int = 0,
) -> Estimate:
    """`tagging_s`: auto-captioning on the CPU pod (jobs.captions); it needs the CPU stage even on a warm volume."""
    speeds = speeds or SpeedFigures()
    stages = stages or StageFigures()
    step_s = speeds.step_seconds(spec.family, gpu.gpu_id, spec.resolution, spec.batch_size)
    reference = speeds.step_s_4090[spec.family][0]
    sample_image_s = (
        speeds.sample_step_s_4090[spec.family]
        * spec.sample_steps
        * speeds.slowdown(gpu.gpu_id)
        * Decimal(spec.resolution * spec.resolution)
        / Decimal(reference * reference)
    )
    sample_rounds = spec.epochs // spec.sample_every_n_epochs if spec.sample_every_n_epochs else 0
    prompts = len(spec.sample_prompts)
    if warm:
        cpu_stage_s = stages.warm_cpu_stage_s
    else:
        cpu_stage_s = stages.cpu_pod_start_s + stages.env_build_s + model_bytes // stages.download_bytes_per_s
    cpu_stage_s += tagging_s
    durations = Durations(
        cpu_stage_s=cpu_stage_s,
        gpu_startup_s=stages.gpu_startup_s,
        reserve_margin_s=stages.reserve_margin_s,
        gpu_setup_s=stages.gpu_setup_s[spec.family] + _whole(stages.cache_latents_per_image_s * image_count),
        train_s=_whole(step_s * steps.total),
        sampling_s=_whole(sample_image_s * prompts * sample_rounds),
        checkpoint_s=stages.checkpoint_per_epoch_s * spec.epochs,
        upload_s=stages.upload_s,
    )
    volume_gb = volume_size_gb(model_bytes, stages, job_output_bytes(spec))
    volume_micros = _cost(prices.volume_hourly_micros(volume_gb), durations.wall_s)
    cpu_micros = _cost(Decimal(prices.cpu_pod_hourly_micros), durations.cpu_stage_s)
    costs = []
    for cloud in QUOTED_CLOUDS:
        hourly = gpu.price(cloud)
        if hourly is None:
            continue
        gpu_micros = _cost(Decimal(hourly), durations.gpu_billed_s)
        costs.append(CloudCost(cloud, hourly, volume_micros, cpu_micros, gpu_micros))
    return Estimate(
        steps=steps,
        gpu=gpu,
        step_seconds=step_s,
        durations=durations,
        volume_gb=volume_gb,
        cpu_hourly_micros=prices.cpu_pod_hourly_micros,
        warm=warm,
        costs=tuple(costs),
        prices_source=prices.source,
        tagging_s=tagging_s,
    )


def _cost(hourly_micros: Decimal, seconds: int) -> int:
    return int((hourly_micros * seconds / 3600).to_integral_value(rounding=ROUND_HALF_UP))


def _whole(seconds: Decimal) -> int:
    return int(seconds.to_integral_value(rounding=ROUND_HALF_UP))


def _minutes(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
