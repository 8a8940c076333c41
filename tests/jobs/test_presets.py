"""Presets: operator-editable TOML, seed 000's run as the default, checked at load, user options on top."""

from pathlib import Path

import pytest

from jobs.presets import DEFAULT_PRESETS_DIR, PresetError, load_presets, merge
from jobs.spec import UserOptions
from tests.jobs.data.specs import PRESETS


def test_shipped_presets_load_and_sdxl_character_is_the_default() -> None:
    assert PRESETS.names == ["flux-character", "sd15-character", "sdxl-character", "sdxl-face", "sdxl-style"]
    assert PRESETS.get(None).name == "sdxl-character"


def test_default_preset_is_seed_000s_illustrious_run() -> None:
    s = merge(PRESETS.get(None), UserOptions(trigger="kanachan"))
    assert (s.family, s.base_model) == ("sdxl", "illustrious-xl-v0.1")
    assert (s.network_dim, s.network_alpha, s.unet_lr, s.te_lr) == (16, 8.0, 1e-4, 5e-5)
    assert (s.optimizer, s.lr_scheduler, s.mixed_precision, s.save_precision) == (
        "AdamW8bit",
        "cosine_with_restarts",
        "bf16",
        "bf16",
    )
    assert (s.epochs, s.sample_every_n_epochs, s.seed, s.caption_extension) == (10, 1, 42, ".txt")
    assert not s.cache_text_encoder_outputs and not s.network_train_unet_only


def test_flux_preset_carries_the_24_gb_settings() -> None:
    s = merge(PRESETS.get("flux-character"), UserOptions())
    assert s.network_module == "networks.lora_flux"
    assert s.fp8_base and s.blocks_to_swap == 18 and s.cache_text_encoder_outputs and s.network_train_unet_only
    assert (s.guidance_scale, s.timestep_sampling, s.model_prediction_type) == (1.0, "flux_shift", "raw")


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(PresetError) as err:
        PRESETS.get("sdxl-charcter")
    assert str(err.value) == (
        "unknown preset 'sdxl-charcter'; known presets: flux-character, sd15-character, sdxl-character,"
        " sdxl-face, sdxl-style"
    )


def test_user_options_override_the_preset_and_none_keeps_it() -> None:
    s = merge(PRESETS.get(None), UserOptions(trigger="kana", epochs=6, network_dim=32, gpu="3090"))
    assert (s.epochs, s.network_dim, s.gpu, s.network_alpha) == (6, 32, "3090", 8.0)
    assert s.output_name == "kana"


def test_text_encoder_rate_zero_means_unet_only() -> None:
    s = merge(PRESETS.get(None), UserOptions(te_lr=0.0))
    assert s.te_lr is None and s.network_train_unet_only


def test_a_text_encoder_rate_on_a_unet_only_preset_asks_for_te_training() -> None:
    s = merge(PRESETS.get("sdxl-style"), UserOptions(te_lr=2e-5))
    assert s.te_lr == 2e-5 and not s.network_train_unet_only


def test_the_trigger_falls_back_to_the_given_word() -> None:
    assert merge(PRESETS.get(None), UserOptions(), fallback_trigger="kanachan").trigger == "kanachan"


def test_no_preset_negative_prompt_could_inject_sample_options() -> None:
    for name in PRESETS.names:
        assert " --" not in PRESETS.get(name).values["sample_negative"]


def _copy_presets(tmp_path: Path) -> Path:
    for path in DEFAULT_PRESETS_DIR.glob("*.toml"):
        (tmp_path / path.name).write_text(path.read_text())
    return tmp_path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("\nbogus = 1\n", "[spec] key 'bogus' is not a preset setting"),
        ('\nseed = "forty-two"\n', "[spec] seed = 'forty-two' is not a valid int"),
        ('\nattention = "flash"\n', "[spec] attention = 'flash' is not a valid Literal['xformers', 'sdpa']"),
        ('\ntrigger = "x"\n', "[spec] key 'trigger' is not a preset setting"),
    ],
)
def test_a_broken_preset_fails_at_load_naming_file_and_key(tmp_path: Path, edit: str, message: str) -> None:
    folder = _copy_presets(tmp_path)
    target = folder / "sdxl-face.toml"
    target.write_text(target.read_text() + edit)
    with pytest.raises(PresetError) as err:
        load_presets(folder)
    assert str(err.value) == f"{target}: {message}"


@pytest.mark.parametrize("name", ["_defaults.toml", "sdxl-face.toml"])
def test_a_preset_that_still_asks_for_spot_is_told_runpod_no_longer_offers_it(tmp_path: Path, name: str) -> None:
    folder = _copy_presets(tmp_path)
    target = folder / name
    target.write_text(target.read_text().replace("[spec]\n", "[spec]\nspot = true\n"))
    with pytest.raises(PresetError) as err:
        load_presets(folder)
    assert str(err.value) == (
        f"{target}: [spec] spot: RunPod no longer offers spot (interruptible) pods; remove `spot`"
        " (GPU pods are on-demand Secure Cloud)"
    )


def test_exactly_one_preset_must_be_the_default(tmp_path: Path) -> None:
    folder = _copy_presets(tmp_path)
    face = folder / "sdxl-face.toml"
    face.write_text(face.read_text().replace('base_model = "sdxl-1.0"', 'base_model = "sdxl-1.0"\ndefault = true'))
    with pytest.raises(PresetError, match=r"must say `default = true`, found 2 \(sdxl-character, sdxl-face\)"):
        load_presets(folder)


def test_a_preset_name_must_match_its_file(tmp_path: Path) -> None:
    folder = _copy_presets(tmp_path)
    (folder / "sdxl-face.toml").rename(folder / "face.toml")
    with pytest.raises(PresetError, match=r"name must be the file name without \.toml \('face'\)"):
        load_presets(folder)
