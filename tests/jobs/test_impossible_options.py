"""Options sd-scripts would accept but train nonsense with are refused before anything is rented, naming the option
and the values it takes, whichever way they arrive: `--extra`, `/train config:`'s TOML, or the typed options."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bot.cli import _extra, main
from bot.cogs.train import parse_extra_options
from jobs.rules import EXTRA_OPTION_RANGES, MAX_SEED, PlanRefused, apply_rules
from jobs.spec import ExtraValue
from tests.jobs.data.character_zip import write_character_zip
from tests.jobs.data.specs import CATALOG, PRICES, facts, spec

PROMPTS = ("kanachan, 1girl, smile",)
TABLE = PRICES.get_table()

IMPOSSIBLE: list[tuple[str, ExtraValue]] = [
    ("noise_offset", math.nan),
    ("noise_offset", math.inf),
    ("noise_offset", -0.05),
    ("noise_offset", 3.0),
    ("caption_dropout_rate", 5),
    ("caption_dropout_rate", -0.1),
    ("network_dropout", 7.5),
    ("network_dropout", 1.0),  # "1 would drop all neurons"
    ("network_dropout", -math.inf),
    ("keep_tokens", -1_000_000),
    ("keep_tokens", 10**12),
    ("max_grad_norm", -1),
    ("max_grad_norm", math.nan),
    ("min_snr_gamma", -5),
    ("min_snr_gamma", math.inf),
    ("scale_weight_norms", math.nan),
    ("scale_weight_norms", -2),
]


def refused_with(extra: dict[str, ExtraValue]) -> list[str]:
    # sdxl-style caches text-encoder outputs; caption dropout needs them uncached, so the character preset is used.
    with pytest.raises(PlanRefused) as err:
        apply_rules(
            spec("sdxl-character", sample_prompts=PROMPTS, extra_options=extra), facts(), catalog=CATALOG, prices=TABLE
        )
    return err.value.reasons


@pytest.mark.parametrize(("key", "value"), IMPOSSIBLE, ids=[f"{k}={v}" for k, v in IMPOSSIBLE])
def test_an_impossible_extra_option_is_refused_naming_the_option_and_its_range(key: str, value: ExtraValue) -> None:
    allowed = EXTRA_OPTION_RANGES[key]
    assert refused_with({key: value}) == [
        f"extra option {key} must be {allowed.describe()} ({allowed.meaning}), got {value!r}"
    ]


def test_every_number_option_has_a_range_and_the_usual_values_pass() -> None:
    usual: dict[str, ExtraValue] = {
        "noise_offset": 0.0357,
        "min_snr_gamma": 5,
        "max_grad_norm": 1.0,
        "scale_weight_norms": 1.0,
        "network_dropout": 0.1,
        "keep_tokens": 1,
        "caption_dropout_rate": 0.05,
    }
    assert set(usual) == set(EXTRA_OPTION_RANGES)
    checked = apply_rules(
        spec("sdxl-character", sample_prompts=PROMPTS, extra_options=usual), facts(), catalog=CATALOG, prices=TABLE
    )
    assert dict(checked.spec.extra_options) == usual
    # 0 switches each feature off in sd-scripts, so it is a value, not a refusal.
    zeros: dict[str, ExtraValue] = {key: 0 for key in usual}
    apply_rules(
        spec("sdxl-character", sample_prompts=PROMPTS, extra_options=zeros), facts(), catalog=CATALOG, prices=TABLE
    )


def test_every_impossible_option_in_one_config_is_named_at_once() -> None:
    extra = parse_extra_options("noise_offset = nan\nmin_snr_gamma = -inf\nkeep_tokens = -1_000_000\n")
    reasons = refused_with(extra)
    assert [r.split(" must be")[0] for r in reasons] == [
        "extra option noise_offset",
        "extra option min_snr_gamma",
        "extra option keep_tokens",
    ]


@pytest.mark.parametrize("text", ["noise_offset=nan", "noise_offset=inf", "noise_offset=-inf", "noise_offset=1e999"])
def test_a_non_finite_number_from_the_command_line_is_refused_by_the_plan(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, value = _extra(text)
    assert isinstance(value, float) and not math.isfinite(value)
    dataset = write_character_zip(tmp_path / "kana.zip")
    code = main(["plan", str(dataset), "--trigger", "kanachan", "--class-word", "1girl", "--extra", text])
    err = capsys.readouterr().err
    assert code == 2
    assert "extra option noise_offset must be from 0 to 1" in err and "Traceback" not in err


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**70])
def test_a_seed_the_trainers_generators_cannot_take_is_refused(seed: int) -> None:
    with pytest.raises(PlanRefused) as err:
        apply_rules(spec(sample_prompts=PROMPTS, seed=seed), facts(), catalog=CATALOG, prices=TABLE)
    assert err.value.reasons == [
        f"seed must be between 0 and {MAX_SEED} (what the trainer's random generators take), got {seed}"
    ]


@pytest.mark.parametrize("every", [-3, 10**9])
def test_a_sample_cadence_out_of_range_is_refused(every: int) -> None:
    with pytest.raises(PlanRefused) as err:
        apply_rules(spec(sample_prompts=PROMPTS, sample_every_n_epochs=every), facts(), catalog=CATALOG, prices=TABLE)
    assert err.value.reasons == [f"samples every N epochs must be between 1 and 100, got {every}"]


def test_the_readme_lists_every_allowed_option_with_its_range() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for key, allowed in EXTRA_OPTION_RANGES.items():
        assert f"| `{key}` | " in readme and f" | {allowed.describe()} | {allowed.meaning} |" in readme, key
