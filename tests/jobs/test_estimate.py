"""Steps, duration and cost: seed 000's 5,900 steps, ~50 min on a 4090 and ~$0.75 in the Secure Cloud, the only
cloud a plan is priced in (the GPU pod trains on a Network Volume, which RunPod mounts only on Secure Cloud pods)."""

import importlib
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from jobs.estimate import (
    DEFAULT_OPTIMIZER_BYTES_PER_PARAM,
    LORA_FEATURE_SUMS,
    OPTIMIZER_BYTES_PER_PARAM,
    StageFigures,
    count_steps,
    estimate,
    job_output_bytes,
    lora_params,
    volume_size_gb,
)
from jobs.prices import PriceSource, StaticPriceProvider, format_usd, usd_to_micros
from tests.jobs.data.specs import CATALOG, spec

TABLE = StaticPriceProvider().get_table()


def _seed_estimate(warm: bool = False, gpu: str = "4090"):
    s = spec(sample_prompts=("a", "b"))
    steps = count_steps([(59, 10)], s.epochs, s.batch_size)
    model = CATALOG.get(s.base_model)
    return estimate(
        s, steps, image_count=59, model_bytes=model.total_bytes, gpu=TABLE.gpu(gpu), prices=TABLE, warm=warm
    )


def test_seed_000_run_is_5900_steps() -> None:
    steps = count_steps([(59, 10)], epochs=10, batch_size=1)
    assert (steps.images_x_repeats, steps.per_epoch, steps.total) == (590, 590, 5900)


def test_batches_round_up_per_epoch_as_sd_scripts_does() -> None:
    assert count_steps([(59, 10), (3, 1)], epochs=2, batch_size=4).total == 2 * 149  # ceil(593 / 4)


def test_steps_refuse_a_zero_batch() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        count_steps([(1, 1)], epochs=1, batch_size=0)


def test_training_takes_about_50_minutes_on_a_4090() -> None:
    e = _seed_estimate()
    assert 48 * 60 <= e.durations.train_s <= 52 * 60
    assert e.durations.cpu_stage_s >= 30 * 60  # cold: env build + 6.9 GB model
    assert _seed_estimate(warm=True).durations.cpu_stage_s == 120


def test_secure_total_is_within_20_percent_of_seed_000s_measured_075() -> None:
    e = _seed_estimate()
    secure = e.cost("secure")
    assert abs(secure.total_micros - 750_000) <= 150_000
    assert secure.total_micros == secure.volume_micros + secure.cpu_micros + secure.gpu_micros
    assert all(isinstance(v, int) for v in (secure.volume_micros, secure.cpu_micros, secure.gpu_micros))


def test_costs_split_like_seed_000s_table() -> None:
    e = _seed_estimate()
    secure = e.cost("secure")
    assert secure.volume_micros < 20_000  # "noise" (~$0.01)
    assert 30_000 <= secure.cpu_micros <= 60_000  # $0.08/h for 30-40 min
    assert 600_000 <= secure.gpu_micros <= 750_000  # $0.69/h for ~60 min


def test_a_slower_gpu_trains_longer() -> None:
    assert _seed_estimate(gpu="a5000").durations.train_s > _seed_estimate().durations.train_s


def test_only_the_secure_cloud_is_quoted_even_where_community_is_cheaper() -> None:
    e = _seed_estimate()
    assert TABLE.gpu("4090").price("community") == 440_000  # kept as data for a future path without a volume
    assert [c.cloud for c in e.costs] == ["secure"]
    with pytest.raises(KeyError, match="no community cost for RTX 4090"):
        e.cost("community")


def test_volume_is_at_least_30_gb_and_grows_with_the_model() -> None:
    stages = StageFigures()
    assert volume_size_gb(6_938_040_682, stages) == 30
    assert volume_size_gb(CATALOG.get("flux1-dev").total_bytes, stages) == 50


def test_the_volume_holds_every_epoch_s_lora_and_two_states_at_their_real_sizes() -> None:
    """SDXL dim 32 with its text encoders: 114 M parameters, 228 MB per bf16 LoRA; a state folder is fp32 weights +
    the optimizer's moments (684 MB with AdamW8bit, 1.37 GB with AdamW). Ten epochs keep ten LoRAs but at most two
    states (--save_last_n_epochs_state=1: the new one is written before the old one goes; the train-end one)."""
    s = spec(family="sdxl", network_dim=32, network_train_unet_only=False, optimizer="AdamW8bit", epochs=10)
    assert lora_params(s) == 114_016_256
    assert job_output_bytes(s) == 114_016_256 * (10 * 2 + 2 * (4 + 2))
    assert job_output_bytes(spec(family="sdxl", epochs=1)) < job_output_bytes(spec(family="sdxl", epochs=2))
    sdxl_model = 6_938_040_682
    assert volume_size_gb(sdxl_model, StageFigures(), job_output_bytes(s)) == 30  # 24.1 GB
    adamw = spec(family="sdxl", network_dim=32, network_train_unet_only=False, optimizer="AdamW", epochs=10)
    assert volume_size_gb(sdxl_model, StageFigures(), job_output_bytes(adamw)) == 30  # 25.5 GB
    flux = spec("flux-character")
    assert volume_size_gb(CATALOG.get("flux1-dev").total_bytes, StageFigures(), job_output_bytes(flux)) == 60


def test_the_stand_in_writes_files_of_the_sizes_the_estimate_counts() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs" / "sandbox" / "sdscripts"))
    try:
        standin = importlib.import_module("_standin_files")
    finally:
        sys.path.pop(0)
    names = {"sd15": "sd", "sdxl": "sdxl", "flux": "flux"}
    for family, (unet, text_encoders) in LORA_FEATURE_SUMS.items():
        parts = {"unet": unet, **({"te": text_encoders} if text_encoders else {})}
        assert standin.LORA_FEATURE_SUMS[names[family]] == parts
    assert dict(OPTIMIZER_BYTES_PER_PARAM) == standin.OPTIMIZER_BYTES_PER_PARAM
    assert standin.DEFAULT_OPTIMIZER_BYTES_PER_PARAM == DEFAULT_OPTIMIZER_BYTES_PER_PARAM


def test_money_helpers_round_half_up_in_micro_dollars() -> None:
    assert usd_to_micros("0.44") == 440_000
    assert usd_to_micros(Decimal("0.0000005")) == 1
    assert format_usd(745_000) == "$0.75"
    assert format_usd(4_321, 3) == "$0.004"


def test_render_table_shows_the_secure_total_and_where_prices_came_from() -> None:
    table = _seed_estimate().render_table()
    assert "Steps: 5,900" in table
    assert "| Cloud | Volume | CPU pod | GPU pod | Total |" in table
    assert "| secure |" in table and "| community |" not in table and "spot" not in table
    assert "$0.69/h" in table
    assert table.endswith("Prices: built-in prices.")


def test_the_price_source_says_how_old_live_prices_are_or_why_they_are_built_in() -> None:
    assert PriceSource(live=True, age_s=200).describe() == "live RunPod prices, 3 min old"
    assert PriceSource(live=True, age_s=20).describe() == "live RunPod prices, less than a minute old"
    assert PriceSource(live=False, reason="HTTP 500").describe() == (
        "built-in prices (RunPod could not be asked: HTTP 500)"
    )
