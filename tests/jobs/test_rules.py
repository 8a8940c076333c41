"""Each rule either fixes the spec with a visible notice or refuses with a reason; one test per case."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from jobs.rules import PlanRefused, RuleLimits, apply_rules
from jobs.spec import Notice, TrainSpec
from tests.jobs.data.specs import CATALOG, PRICES, facts, spec

TABLE = PRICES.get_table()
PROMPTS = ("kanachan, 1girl, smile",)


def check(s: TrainSpec, **dataset: Any) -> tuple[TrainSpec, list[Notice]]:
    checked = apply_rules(s, facts(**dataset), catalog=CATALOG, prices=TABLE)
    return checked.spec, list(checked.notices)


def refused(s: TrainSpec, limits: RuleLimits | None = None, **dataset: Any) -> list[str]:
    with pytest.raises(PlanRefused) as err:
        apply_rules(s, facts(**dataset), catalog=CATALOG, prices=TABLE, limits=limits)
    return err.value.reasons


def notice(notices: list[Notice], code: str) -> Notice:
    found = [n for n in notices if n.code == code]
    assert len(found) == 1, f"{code} not in {notices}"
    return found[0]


def test_seed_000_spec_with_prompts_passes_without_notices() -> None:
    s, notices = check(spec(sample_prompts=PROMPTS))
    assert notices == []
    assert s.gpu == "NVIDIA GeForce RTX 4090" and s.base_model == "illustrious-xl-v0.1"


# --- seed 000's four gotchas


def test_gotcha1_te_cache_with_te_training_turns_caching_off_when_the_preset_keeps_te_training() -> None:
    s, notices = check(spec(sample_prompts=PROMPTS, cache_text_encoder_outputs=True))
    assert not s.cache_text_encoder_outputs and s.te_lr == 5e-5
    assert notice(notices, "te-cache") == Notice(
        "fix",
        "te-cache",
        "turned --cache_text_encoder_outputs off: the text encoder is trained (text_encoder_lr=5e-05), and"
        " sd-scripts refuses to train it from cached outputs; preset sdxl-character keeps text-encoder training"
        " (more VRAM, still fits 24 GB)",
    )


def test_gotcha1_te_cache_with_te_training_goes_unet_only_when_the_preset_keeps_the_cache() -> None:
    s, notices = check(spec("sdxl-style", sample_prompts=PROMPTS, te_lr=3e-5, network_train_unet_only=False))
    assert s.cache_text_encoder_outputs and s.network_train_unet_only and s.te_lr is None
    assert notice(notices, "te-cache").text == (
        "dropped text_encoder_lr=3e-05 and train the U-Net only (--network_train_unet_only): sd-scripts cannot"
        " train the text encoder from cached outputs, and preset sdxl-style keeps the cache"
    )


def test_gotcha1_sd15_has_no_te_cache_option() -> None:
    s, notices = check(spec("sd15-character", sample_prompts=PROMPTS, cache_text_encoder_outputs=True))
    assert not s.cache_text_encoder_outputs
    assert notice(notices, "te-cache-sd15").text == (
        "turned --cache_text_encoder_outputs off: train_network.py (SD 1.5) has no such option"
    )


def test_te_cache_with_caption_shuffling_is_refused() -> None:
    s = spec("sdxl-style", sample_prompts=PROMPTS, extra_options={"shuffle_caption": True})
    assert refused(s) == [
        "shuffle_caption changes captions every step, which sd-scripts refuses while text-encoder outputs are"
        " cached (kohya-ss/sd-scripts#886); remove shuffle_caption or use a preset that trains the text encoder"
    ]


def test_gotcha2_caption_extension_follows_the_dataset() -> None:
    s, notices = check(spec(sample_prompts=PROMPTS, caption_extension=".caption"))
    assert s.caption_extension == ".txt"
    assert notice(notices, "caption-extension").text == (
        "caption extension .caption → .txt (--caption_extension=.txt) to match the dataset's caption files;"
        " otherwise sd-scripts trains without captions"
    )


def test_gotcha3_clip_skip_on_sdxl_is_dropped_and_kept_for_inference() -> None:
    s, notices = check(spec(sample_prompts=PROMPTS, clip_skip=2))
    assert s.clip_skip is None
    assert s.inference_notes == ("Use clip_skip=2 at inference (as for the base model).",)
    assert notice(notices, "clip-skip") == Notice(
        "fix", "clip-skip", "dropped --clip_skip=2: sdxl training ignores it; use clip_skip=2 at inference"
    )


def test_clip_skip_is_kept_on_sd15_and_refused_out_of_range() -> None:
    s, notices = check(spec("sd15-character", sample_prompts=PROMPTS, clip_skip=2))
    assert s.clip_skip == 2 and notices == []
    assert refused(spec("sd15-character", sample_prompts=PROMPTS, clip_skip=13)) == [
        "clip_skip must be between 1 and 12, got 13"
    ]


def test_gotcha4_no_prompts_gets_defaults_from_trigger_and_class_every_epoch() -> None:
    s, notices = check(spec(sample_every_n_epochs=None))
    assert s.sample_prompts == (
        "kanachan, 1girl, solo, smile, portrait, white background",
        "kanachan, 1girl, solo, full body, standing, simple background",
    )
    assert s.sample_every_n_epochs == 1
    assert notice(notices, "sample-prompts").text == (
        "no sample prompt given: using 2 from the trigger and class ('kanachan, 1girl, solo, smile, portrait,"
        " white background'; 'kanachan, 1girl, solo, full body, standing, simple background'), seed 42"
    )
    assert notice(notices, "sample-cadence").text == "samples were off: rendering them after every epoch"


# --- sample prompt text


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        (
            "kanachan\nsmile",
            "sample prompt 1 contains a line break or control character; sd-scripts reads one"
            " prompt per line, so it would split into several: write it on one line",
        ),
        (
            "kanachan\u2028smile",
            "sample prompt 1 contains a line break or control character; sd-scripts reads one"
            " prompt per line, so it would split into several: write it on one line",
        ),
        (
            "kanachan --w 4096",
            "sample prompt 1 contains ' --', which sd-scripts reads as an option (--n, --w, --s"
            " ...); lorabot sets size, steps, seed and negative prompt itself: remove the ' --'",
        ),
        (
            "n ugly kanachan",
            "sample prompt 1 starts with 'n' and a space, which sd-scripts reads as an option"
            " letter: start it with the trigger word instead",
        ),
        ("x" * 501, "sample prompt 1 is 501 characters long; the limit is 500"),
        ("   ", "sample prompt 1 is empty"),
    ],
)
def test_sample_prompt_text_that_could_inject_lines_or_options_is_refused(prompt: str, reason: str) -> None:
    assert refused(spec(sample_prompts=(prompt,))) == [reason]


def test_too_many_sample_prompts_are_refused() -> None:
    assert refused(spec(sample_prompts=PROMPTS * 5)) == ["at most 4 sample prompts, got 5"]


def test_a_leading_hash_would_make_a_comment_and_is_removed() -> None:
    s, notices = check(spec(sample_prompts=("# kanachan, smile",)))
    assert s.sample_prompts == ("kanachan, smile",)
    assert notice(notices, "sample-prompt-comment").text == (
        "removed the leading '#' of sample prompt 1: sd-scripts skips lines starting with '#'"
    )


# --- names


def test_output_name_with_path_characters_is_sanitised() -> None:
    s, notices = check(spec(sample_prompts=PROMPTS, output_name="../kana chan/v1"))
    assert s.output_name == "kana_chan_v1"
    assert notice(notices, "output-name").text == (
        "output name '../kana chan/v1' became 'kana_chan_v1': file names may only hold letters, digits, '.', '_'"
        " and '-'"
    )


def test_output_name_with_nothing_usable_becomes_lora() -> None:
    s, _ = check(spec(sample_prompts=PROMPTS, output_name="かなちゃん"))
    assert s.output_name == "lora"


@pytest.mark.parametrize("trigger", ["kana --n x", "kana\nchan", "--kana", ""])
def test_a_trigger_that_could_inject_options_or_lines_is_refused(trigger: str) -> None:
    assert refused(spec(sample_prompts=PROMPTS, trigger=trigger)) == [
        f"trigger {trigger!r} must be 1-64 letters, digits, spaces, dots, apostrophes or dashes (no line breaks,"
        " no ' --', no leading punctuation)"
    ]


def test_unicode_triggers_are_fine() -> None:
    s, _ = check(spec(sample_prompts=PROMPTS, trigger="かなちゃん"))
    assert s.trigger == "かなちゃん"


# --- model, GPU, family


def test_a_base_model_of_another_family_is_refused() -> None:
    assert refused(spec(sample_prompts=PROMPTS, base_model="flux1-dev")) == [
        "base model flux1-dev is a flux model but preset sdxl-character trains sdxl; pick a flux preset or a sdxl"
        " base model"
    ]


def test_an_unknown_base_model_is_refused_with_close_matches() -> None:
    assert refused(spec(sample_prompts=PROMPTS, base_model="pony6")) == [
        "unknown base model 'pony6'. Did you mean pony-v6? Known base models: illustrious-xl-v0.1, sdxl-1.0,"
        " pony-v6, sd15, flux1-dev."
    ]


def test_an_unknown_gpu_is_refused_with_close_matches() -> None:
    assert refused(spec(sample_prompts=PROMPTS, gpu="4080")) == [
        "unknown GPU '4080'. Did you mean 4090, a4000, a40? Known GPUs: 4090 (24 GB), 3090 (24 GB), a5000 (24 GB),"
        " l4 (24 GB), a6000 (48 GB), a40 (48 GB), 4000ada (20 GB), a4000 (16 GB)."
    ]


def test_a_gpu_alias_resolves_to_the_runpod_id() -> None:
    s, _ = check(spec(sample_prompts=PROMPTS, gpu="3090"))
    assert s.gpu == "NVIDIA GeForce RTX 3090"


def test_a_gpu_with_too_little_vram_for_the_family_is_refused() -> None:
    assert refused(spec(sample_prompts=PROMPTS, gpu="a4000")) == [
        "RTX A4000 has 16 GB of VRAM; sdxl LoRA training with this preset needs at least 20 GB (use a 24 GB card"
        " such as the RTX 4090)"
    ]
    s, _ = check(spec("sd15-character", sample_prompts=PROMPTS, gpu="a4000"))
    assert s.gpu == "NVIDIA RTX A4000"


def test_a_gpu_runpod_does_not_offer_in_the_secure_cloud_is_refused() -> None:
    """The GPU pod mounts the Network Volume, and RunPod mounts volumes only on Secure Cloud pods."""
    table = replace(TABLE, gpus=tuple(replace(g, hourly_micros={"secure": None}) for g in TABLE.gpus))
    with pytest.raises(PlanRefused) as err:
        apply_rules(spec(sample_prompts=PROMPTS), facts(), catalog=CATALOG, prices=table)
    assert err.value.reasons == [
        "RTX 4090 is not offered in RunPod's Secure Cloud, the only cloud whose pods can mount the Network Volume"
        " lorabot trains on; pick another GPU (e.g. 4090)"
    ]


def test_live_prices_with_no_secure_stock_warn_that_the_job_may_wait() -> None:
    table = replace(TABLE, gpus=tuple(replace(g, live=True, stock=None) for g in TABLE.gpus))
    checked = apply_rules(spec(sample_prompts=PROMPTS), facts(), catalog=CATALOG, prices=table)
    assert notice(list(checked.notices), "gpu-stock").text == (
        "RunPod has no RTX 4090 free in the Secure Cloud right now; the job may wait for a GPU"
    )


def test_a_config_that_asks_for_spot_is_told_runpod_no_longer_offers_it() -> None:
    assert refused(spec(sample_prompts=PROMPTS, extra_options={"spot": True})) == [
        "RunPod no longer offers spot (interruptible) pods; remove `spot` from the config"
    ]


def test_flux_gets_networks_lora_flux() -> None:
    s, notices = check(spec("flux-character", sample_prompts=PROMPTS, network_module="networks.lora"))
    assert s.network_module == "networks.lora_flux"
    assert notice(notices, "network-module").text == "network module networks.lora → networks.lora_flux for flux"


def test_flux_on_24_gb_gets_fp8_swapped_blocks_and_cached_text_encoders() -> None:
    s, notices = check(
        spec(
            "flux-character",
            sample_prompts=PROMPTS,
            fp8_base=False,
            blocks_to_swap=None,
            cache_text_encoder_outputs=False,
            attention="xformers",
        )
    )
    assert s.fp8_base and s.blocks_to_swap == 18 and s.cache_text_encoder_outputs and s.attention == "sdpa"
    assert notice(notices, "flux-24gb").text == (
        "Flux on a 24 GB card needs fp8_base=True, blocks_to_swap=18, cache_text_encoder_outputs=True, attention=sdpa"
    )


def test_flux_settings_left_unset_get_sd_scripts_recommendations() -> None:
    s, notices = check(
        spec(
            "flux-character",
            sample_prompts=PROMPTS,
            guidance_scale=None,
            timestep_sampling=None,
            model_prediction_type=None,
            sample_guidance=None,
        )
    )
    assert (s.guidance_scale, s.timestep_sampling, s.model_prediction_type, s.sample_guidance) == (
        1.0,
        "flux_shift",
        "raw",
        3.5,
    )
    assert notice(notices, "flux-settings").text == (
        "Flux settings the preset left unset: guidance_scale=1.0, timestep_sampling=flux_shift,"
        " model_prediction_type=raw, sample_guidance=3.5"
    )


# --- sizes, steps, hyper-parameters


def test_resolution_is_rounded_to_a_multiple_of_64() -> None:
    s, notices = check(spec(sample_prompts=PROMPTS, resolution=1000))
    assert s.resolution == 1024
    assert notice(notices, "resolution").text == "resolution 1000 → 1024: it must be a multiple of 64"


@pytest.mark.parametrize("resolution", [128, 4096])
def test_resolution_out_of_range_is_refused(resolution: int) -> None:
    assert refused(spec(sample_prompts=PROMPTS, resolution=resolution)) == [
        f"resolution must be between 256 and 2048 pixels, got {resolution}"
    ]


def test_bucket_steps_follow_each_scripts_assertion() -> None:
    s, _ = check(spec(sample_prompts=PROMPTS, bucket_reso_steps=32))
    assert s.bucket_reso_steps == 32  # SDXL accepts multiples of 32
    s, notices = check(spec("sd15-character", sample_prompts=PROMPTS, bucket_reso_steps=32))
    assert s.bucket_reso_steps == 64
    assert notice(notices, "bucket-steps").text == (
        "bucket_reso_steps 32 → 64: the sd15 script asserts a multiple of 64"
    )


def test_the_bucket_range_is_widened_to_hold_the_resolution() -> None:
    s, notices = check(spec("sd15-character", sample_prompts=PROMPTS, resolution=1536))
    assert (s.min_bucket_reso, s.max_bucket_reso) == (256, 1536)
    assert notice(notices, "bucket-range").text == (
        "bucket range 256-1024 → 256-1536 so it contains the resolution 1536 (sd-scripts asserts it)"
    )
    assert notice(notices, "sd15-resolution").level == "warn"


def test_sdxl_below_768_warns() -> None:
    _, notices = check(spec(sample_prompts=PROMPTS, resolution=512))
    assert notice(notices, "low-resolution").text == "sdxl works best at 1024 px; 512 px gives softer results"


def test_a_batch_larger_than_an_epoch_is_cut_down() -> None:
    s, notices = check(spec(sample_prompts=PROMPTS, batch_size=8, repeats=1), images=5)
    assert s.batch_size == 5
    assert notice(notices, "batch-size").text == "batch size 8 → 5: an epoch has only 5 images x repeats"


def test_batch_size_out_of_range_is_refused() -> None:
    assert refused(spec(sample_prompts=PROMPTS, batch_size=64)) == ["batch size must be between 1 and 16, got 64"]


def test_epochs_and_repeats_out_of_range_are_refused() -> None:
    assert refused(spec(sample_prompts=PROMPTS, epochs=0, repeats=1000)) == [
        "epochs must be between 1 and 100, got 0",
        "repeats must be between 1 and 100, got 1000",
    ]


def test_folders_without_repeats_use_the_preset_default_and_say_so() -> None:
    _, notices = check(spec(sample_prompts=PROMPTS, repeats=None), repeats=None)
    assert notice(notices, "repeats").text == (
        "folders without a '<repeats>_' prefix repeat 10x (preset default); set --repeats to change it"
    )


def test_steps_over_the_cap_lower_the_epochs() -> None:
    s, notices = check(spec(sample_prompts=PROMPTS, repeats=40, epochs=10), images=59)
    assert s.epochs == 8
    assert notice(notices, "steps-cap").text == ("epochs 10 → 8: 10 x 2,360 steps would pass the 20,000-step limit")


def test_one_epoch_over_the_cap_is_refused() -> None:
    assert refused(spec(sample_prompts=PROMPTS, repeats=100), images=300) == [
        "one epoch is already 30,000 steps (limit 20,000 for the whole run): lower --repeats or raise --batch-size"
    ]


def test_alpha_above_dim_warns() -> None:
    _, notices = check(spec(sample_prompts=PROMPTS, network_dim=8, network_alpha=16.0))
    assert notice(notices, "alpha-above-dim") == Notice(
        "warn",
        "alpha-above-dim",
        "network alpha 16 is above dim 8: updates are scaled up 2x; alpha ≤ dim is usual (seed 000: 8/16)",
    )


def test_dim_and_alpha_out_of_range_are_refused() -> None:
    assert refused(spec(sample_prompts=PROMPTS, network_dim=512, network_alpha=0.0)) == [
        "network dim must be between 1 and 256, got 512",
        "network alpha must be above 0 and at most 256, got 0",
    ]


def test_learning_rates_out_of_range_are_refused_and_high_ones_warn() -> None:
    assert refused(spec(sample_prompts=PROMPTS, unet_lr=0.5)) == [
        "U-Net learning rate must be above 0 and at most 0.01 with AdamW8bit, got 0.5"
    ]
    _, notices = check(spec(sample_prompts=PROMPTS, unet_lr=2e-3))
    assert notice(notices, "high-lr").text == (
        "U-Net learning rate 0.002 is high for AdamW8bit (usual ≤ 0.001); the LoRA may burn in after a few epochs"
    )


def test_a_text_encoder_rate_above_the_unet_rate_warns() -> None:
    _, notices = check(spec(sample_prompts=PROMPTS, te_lr=2e-4))
    assert notice(notices, "te-lr-above-unet").level == "warn"


def test_adaptive_optimizers_take_rates_near_one() -> None:
    _, notices = check(spec(sample_prompts=PROMPTS, optimizer="Prodigy", unet_lr=1.0, te_lr=1.0))
    assert [n.code for n in notices] == []


def test_unknown_optimizer_scheduler_and_precision_are_refused() -> None:
    assert refused(
        spec(
            sample_prompts=PROMPTS,
            optimizer="Adam9",
            lr_scheduler="zigzag",
            mixed_precision="fp8",
            save_precision="int4",
        )
    ) == [
        "unknown optimizer 'Adam9'; use one of AdamW8bit, AdamW, PagedAdamW8bit, Adafactor, Lion, Lion8bit,"
        " Prodigy, DAdaptAdam",
        "unknown learning-rate scheduler 'zigzag'; use one of constant, constant_with_warmup, linear, cosine,"
        " cosine_with_restarts, polynomial",
        "mixed precision must be one of no, fp16, bf16, got 'fp8'",
        "save precision must be one of float, fp16, bf16, got 'int4'",
    ]


def test_a_warmup_longer_than_the_run_is_shortened() -> None:
    s, notices = check(spec(sample_prompts=PROMPTS, repeats=1, epochs=2), images=20)
    assert s.lr_warmup_steps == 4
    assert notice(notices, "warmup").text == "lr warm-up 100 → 4 steps: the run has only 40"


def test_extra_options_are_allow_listed_and_typed() -> None:
    assert refused(spec(sample_prompts=PROMPTS, extra_options={"output_dir": "/etc", "noise_offset": "lots"})) == [
        "extra option 'output_dir' is not allowed; allowed: caption_dropout_rate, flip_aug, keep_tokens,"
        " max_grad_norm, min_snr_gamma, network_dropout, noise_offset, scale_weight_norms, shuffle_caption",
        "extra option noise_offset needs a float, got 'lots'",
    ]
    s, notices = check(spec(sample_prompts=PROMPTS, extra_options={"noise_offset": 0.05, "flip_aug": True}))
    assert s.extra_options == {"noise_offset": 0.05, "flip_aug": True} and notices == []


def test_every_refusal_is_reported_at_once_with_the_notices_so_far() -> None:
    with pytest.raises(PlanRefused) as err:
        apply_rules(spec(clip_skip=2, epochs=0, batch_size=0), facts(), catalog=CATALOG, prices=TABLE)
    assert len(err.value.reasons) == 2
    assert "clip-skip" in [n.code for n in err.value.notices]
    assert str(err.value).startswith("refused: epochs must be between 1 and 100, got 0 | ")
