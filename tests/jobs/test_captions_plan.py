"""The `captions` option: what ingest keeps, what the plan says it will tag and what that adds to the CPU stage."""

import zipfile
from pathlib import Path

import pytest

from jobs.captions import TAG_SECONDS_PER_IMAGE, WD14_REPO
from jobs.dataset import DatasetError, ingest_zip
from jobs.planning import make_plan
from jobs.spec import CaptionMode, UserOptions
from tests.jobs.data.character_zip import write_character_zip
from tests.jobs.data.specs import CATALOG, PRESETS, PRICES


def _half_captioned_zip(tmp_path: Path, count: int = 8) -> Path:
    """`count` images, the first half with captions, the second half without."""
    full = write_character_zip(tmp_path / "full.zip", count=count, trigger="kana")
    out = tmp_path / "half.zip"
    with zipfile.ZipFile(full) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            index = int(info.filename.split("_")[1].split(".")[0])
            if info.filename.endswith(".txt") and index >= count // 2:
                continue
            target.writestr(info, source.read(info))
    return out


def _plan(tmp_path: Path, mode: CaptionMode | None, *, preset: str | None = None):
    dataset = ingest_zip(_half_captioned_zip(tmp_path), tmp_path / "ds", trigger="kana", captions=mode or "keep")
    options = UserOptions(trigger="kana", class_word="girl", captions=mode, preset=preset)
    return dataset, make_plan(dataset, options, presets=PRESETS, catalog=CATALOG, prices=PRICES)


def test_without_a_caption_mode_a_missing_caption_is_still_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as refused:
        ingest_zip(_half_captioned_zip(tmp_path), tmp_path / "ds", trigger="kana")
    assert refused.value.code == "missing_captions"


def test_keep_tags_only_the_uncaptioned_half_and_the_cpu_stage_grows(tmp_path: Path) -> None:
    dataset, plan = _plan(tmp_path, None)
    captions = sorted(p.name for p in dataset.root.rglob("*.txt"))
    assert len(captions) == 4  # the user's four; the other four are left for the tagger
    assert plan.captions is not None and (plan.captions.mode, plan.captions.to_tag) == ("keep", 4)
    assert plan.estimate.tagging_s == plan.captions.tagging_seconds > int(TAG_SECONDS_PER_IMAGE * 4)
    text = plan.render_text()
    assert "4 images will be tagged on the CPU pod" in text and WD14_REPO in text
    assert "of which auto-captioning" in text
    assert "undesired tags removed: 1girl, 1boy, solo, nose, lips" in text


def test_auto_drops_the_users_captions_and_tags_every_image(tmp_path: Path) -> None:
    dataset, plan = _plan(tmp_path, "auto")
    assert not list(dataset.root.rglob("*.txt"))
    assert plan.captions is not None and plan.captions.to_tag == 8
    assert "replaced by generated ones" in plan.dataset_report


def test_off_tags_nothing_and_says_the_rest_train_on_class_tokens(tmp_path: Path) -> None:
    _, plan = _plan(tmp_path, "off")
    assert plan.captions is not None and plan.captions.to_tag == 0 and plan.estimate.tagging_s == 0
    assert "train on the class tokens" in plan.render_text()
    assert any(n.code == "captions-off" and "'kana girl'" in n.text for n in plan.notices)


def test_flux_warns_that_tags_are_a_weak_fit_and_says_what_to_do(tmp_path: Path) -> None:
    _, plan = _plan(tmp_path, "auto", preset="flux-character")
    [warning] = [n for n in plan.notices if n.code == "captions-flux"]
    assert warning.level == "warn" and "natural-language" in warning.text and "captions: off" in warning.text
