"""make_plan: a real ingested dataset + options → spec, notices, command, files, steps and estimate, or a refusal."""

from pathlib import Path

import pytest

from jobs.dataset import ingest_zip
from jobs.planning import make_plan
from jobs.rules import PlanRefused
from jobs.spec import UserOptions
from tests.jobs.data.character_zip import write_character_zip
from tests.jobs.data.specs import CATALOG, PRESETS, PRICES, FakeDataset, seed_dataset


def _plan(dataset, **options):
    return make_plan(dataset, UserOptions(**options), presets=PRESETS, catalog=CATALOG, prices=PRICES)


def test_seed_000_dataset_from_a_real_zip_plans_5900_steps(tmp_path: Path) -> None:
    dataset = ingest_zip(write_character_zip(tmp_path / "kana.zip"), tmp_path / "data", trigger="kanachan")
    plan = _plan(dataset, trigger="kanachan", class_word="1girl", repeats=10, epochs=10)
    assert plan.steps.total == 5900
    assert plan.script == "sdxl_train_network.py"
    assert "--caption_extension=.txt" in plan.args
    assert f'image_dir = "{{data_dir}}/{dataset.concepts[0].folder}"' in plan.dataset_toml
    assert plan.sample_prompts_text.count("\n") == 2
    assert "Dataset: 59 images" in plan.render_text()


def test_repeats_come_from_the_folder_prefix_when_not_given(tmp_path: Path) -> None:
    dataset = ingest_zip(write_character_zip(tmp_path / "k.zip", count=12, folder="5_kanachan"), tmp_path / "data")
    plan = _plan(dataset)
    assert plan.spec.trigger == "kanachan"
    assert plan.steps.total == 12 * 5 * 10
    assert plan.notices[0].text == "no trigger given: using 'kanachan' (the dataset's first concept)"


def test_render_text_has_every_section_the_cli_prints() -> None:
    text = _plan(seed_dataset(), trigger="kanachan", repeats=10).render_text()
    for heading in ("== Dataset", "== Plan", "== Notices", "== Command", "== Estimate"):
        assert heading in text
    assert "accelerate launch --num_cpu_threads_per_process 1 sdxl_train_network.py" in text


def test_an_unknown_preset_is_a_refusal_listing_presets() -> None:
    with pytest.raises(PlanRefused) as err:
        _plan(seed_dataset(), preset="anime")
    assert err.value.reasons == [
        "unknown preset 'anime'; known presets: flux-character, sd15-character, sdxl-character, sdxl-face, sdxl-style"
    ]


def test_an_empty_dataset_is_refused() -> None:
    with pytest.raises(PlanRefused, match="the dataset has no images"):
        _plan(FakeDataset([]))


def test_warm_cache_makes_the_cpu_stage_short_and_the_job_cheaper() -> None:
    cold = _plan(seed_dataset(), trigger="kanachan", repeats=10).estimate
    warm = make_plan(
        seed_dataset(),
        UserOptions(trigger="kanachan", repeats=10),
        presets=PRESETS,
        catalog=CATALOG,
        prices=PRICES,
        warm=True,
    ).estimate
    assert warm.durations.cpu_stage_s < cold.durations.cpu_stage_s
    assert warm.cost("secure").total_micros < cold.cost("secure").total_micros
