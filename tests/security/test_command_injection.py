"""Prompts, triggers and names with control characters, newlines and sd-scripts option syntax cannot change the
trainer's command: `make_plan` refuses them or they stay inside a value; the argument list never gains a flag."""

from __future__ import annotations

import zipfile
from typing import Any

import pytest

from jobs.catalog import load_catalog
from jobs.dataset import IngestedDataset, ingest_zip
from jobs.errors import UserFacingError
from jobs.planning import Plan, make_plan
from jobs.presets import load_presets
from jobs.prices import StaticPriceProvider
from jobs.rules import PlanRefused
from jobs.spec import UserOptions
from tests.world.lorabot_world import dataset_zip

HOSTILE = [
    "kana --network_module=evil.module",
    "kana\n--output_dir=/etc",
    "kana\r\n--sample_prompts=/etc/passwd",
    "kana\x00--seed=1",
    "kana\x1b[2J",
    "--highvram",
    "kana'; rm -rf / #",
    "kana $(touch /tmp/pwned)",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> IngestedDataset:
    root = tmp_path_factory.mktemp("ds")
    upload = root / "upload.zip"
    upload.write_bytes(dataset_zip(3, size=512))
    assert zipfile.is_zipfile(upload)
    return ingest_zip(upload, root / "dataset", trigger="kana", class_word="1girl")


def baseline_flags(dataset: IngestedDataset) -> set[str]:
    plan = plan_for(dataset, UserOptions(trigger="kana", class_word="1girl", epochs=2))
    return _flags(plan.args)


def plan_for(dataset: IngestedDataset, options: UserOptions) -> Plan:
    return make_plan(dataset, options, presets=load_presets(), catalog=load_catalog(), prices=StaticPriceProvider())


def _flags(args: tuple[str, ...]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def _plan_or_refusal(dataset: IngestedDataset, **options: Any) -> Plan | None:
    try:
        return plan_for(dataset, UserOptions(trigger="kana", class_word="1girl", epochs=2, **options))
    except (UserFacingError, PlanRefused, ValueError) as refused:
        assert str(refused).strip(), "a refusal must say why"
        return None


@pytest.mark.parametrize("field", ["output_name", "sample_prompts"])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_text_is_refused_or_stays_a_value(dataset: IngestedDataset, field: str, value: str) -> None:
    options = {field: (value,) if field == "sample_prompts" else value}
    plan = _plan_or_refusal(dataset, **options)
    if plan is None:
        return  # refused with a message
    assert _flags(plan.args) == baseline_flags(dataset), "a user value became a flag"
    for arg in plan.args:
        assert "\n" not in arg and "\r" not in arg and "\x00" not in arg, repr(arg)
        if arg.startswith("--"):
            continue
        assert not arg.startswith("-"), f"a bare argument looks like an option: {arg!r}"
    # The prompt file is one prompt per line: a newline must not add a prompt line carrying options.
    prompts = plan.sample_prompts_text
    for line in prompts.splitlines():
        assert "--network_module" not in line and "--output_dir" not in line, line


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_trigger_and_class_word_never_become_flags(dataset: IngestedDataset, value: str) -> None:
    for options in ({"trigger": value}, {"class_word": value}):
        try:
            words = {"trigger": "kana", "class_word": "1girl", **options}
            plan = plan_for(dataset, UserOptions(trigger=words["trigger"], class_word=words["class_word"]))
        except (UserFacingError, PlanRefused, ValueError) as refused:
            assert str(refused).strip()
            continue
        assert _flags(plan.args) == baseline_flags(dataset), (options, plan.args)
