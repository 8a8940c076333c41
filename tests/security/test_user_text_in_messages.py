"""User text inside lorabot's messages is shortened and escaped one way (`jobs.usertext.shown`), so the reason
always reaches the user whole, nothing in a name can garble a terminal or ping a server, and a refusal names the
thing that is actually wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from bot.actions import Refused
from bot.cogs.train import parse_extra_options
from jobs.dataset import ingest_zip
from jobs.dataset_limits import DatasetError
from jobs.rules import PlanRefused, apply_rules
from jobs.usertext import DEFAULT_LIMIT, shown
from tests.jobs.data.specs import CATALOG, PRICES, facts, spec
from tests.world.fixtures_bot import BotWorld
from tests.world.lorabot_world import dataset_zip

TABLE = PRICES.get_table()
PROMPTS = ("kanachan, 1girl, smile",)
HUGE = "k" * 60_000


def reasons(**changes: Any) -> list[str]:
    with pytest.raises(PlanRefused) as err:
        apply_rules(spec(**changes), facts(), catalog=CATALOG, prices=TABLE)
    return err.value.reasons


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("kana.png", "'kana.png'"),
        ("kana\nchan", "'kana\\nchan'"),
        ("bell\x07 esc\x1b[31m nul\x00", "'bell\\x07 esc\\x1b[31m nul\\x00'"),
        ("evil\u202egnp.exe", "'evil\\u202egnp.exe'"),  # a right-to-left override would show "exe.png"
        ("zero\u200dwidth", "'zero\\u200dwidth'"),
        ("@everyone look", "'@\u200beveryone look'"),
        ("`code` and it's", "'\\`code\\` and it\\'s'"),
        ("line\u2028sep", "'line\\u2028sep'"),
    ],
)
def test_shown_quotes_and_escapes_what_would_garble_a_terminal_or_a_thread(value: str, expected: str) -> None:
    assert shown(value) == expected


def test_shown_keeps_the_start_and_the_end_of_a_long_name_within_the_limit() -> None:
    name = "x" * 5_000 + ".webp"
    quoted = shown(name)
    assert len(quoted) == DEFAULT_LIMIT + 2
    assert quoted.startswith("'xxxx") and quoted.endswith(".webp'") and "…" in quoted


@pytest.mark.parametrize(
    "changes",
    [
        {"extra_options": {HUGE: 1}},
        {"trigger": HUGE},
        {"class_word": HUGE},
        {"optimizer": HUGE},
        {"lr_scheduler": HUGE},
        {"mixed_precision": HUGE},
    ],
    ids=["option key", "trigger", "class word", "optimizer", "scheduler", "precision"],
)
def test_a_huge_user_value_makes_a_short_refusal_that_still_says_why(changes: dict[str, Any]) -> None:
    said = reasons(sample_prompts=PROMPTS, **changes)
    assert said, "refused"
    for reason in said:
        assert len(reason) < 400, reason[:200]
    assert any("…" in reason for reason in said)


def test_a_config_key_that_is_a_table_is_refused_with_the_key_shortened() -> None:
    with pytest.raises(Refused) as err:
        parse_extra_options(f'["{HUGE}"]\na = 1\n')
    assert len(str(err.value)) < 300 and "must be a single value" in str(err.value)


@pytest.mark.parametrize("word", ["n girl", "w 99999", "S 5", "l x", "cn pose"])
def test_a_trigger_sd_scripts_would_read_as_a_prompt_option_is_refused_as_the_trigger(word: str) -> None:
    said = reasons(trigger=word)
    assert len(said) == 1 and said[0].startswith(f"trigger {shown(word)} starts with {shown(word.split(' ')[0])}")
    assert "sample prompt" not in said[0]


def test_a_class_word_sd_scripts_would_read_as_a_prompt_option_is_refused_as_the_class_word() -> None:
    said = reasons(class_word="d 20", sample_prompts=("d 20 standing, kanachan",))
    assert [r.split(" starts with")[0] for r in said] == ["class word 'd 20'"]


def test_a_users_own_prompt_that_starts_with_an_option_letter_is_still_refused_as_the_prompt() -> None:
    said = reasons(sample_prompts=("n kanachan smiling",))
    assert said == [
        "sample prompt 1 starts with 'n' and a space, which sd-scripts reads as an option letter: start it with the"
        " trigger word instead"
    ]


async def test_a_refusal_in_discord_keeps_its_reason_and_pings_nobody(bot_world: BotWorld) -> None:
    config = f'"@everyone {HUGE}" = 1\n'.encode()
    reply = await bot_world.train(
        dataset_zip(2, size=64), name="x", config=("extra.toml", config), trigger="kana", class_word="1girl"
    )
    assert "is not allowed; allowed:" in reply.content, reply.content[:300]
    assert len(reply.content) < 2000
    assert reply.payload["mention_everyone"] is False
    assert "@everyone" not in reply.content  # the name's @ is disarmed
    # and, for any message that quotes user text raw, Discord is told to ping only the users lorabot names itself
    assert bot_world.bot.allowed_mentions is not None
    assert bot_world.bot.allowed_mentions.to_dict()["parse"] == ["users"]


def _zip_with(names: list[str], tmp_path: Path) -> Path:
    path = tmp_path / "hostile.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, b"not an image")
    return path


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        (["../" + "a" * 60_000 + ".png"], "climbs out of the dataset"),
        (["/" + "b" * 60_000 + ".png"], "is an absolute path"),
        (["c" * 60_000 + ".png"], "have no caption file"),
        (["folder\\" + "d" * 60_000 + ".png"], "uses backslashes"),
    ],
    ids=["escape", "absolute", "not an image", "backslash"],
)
def test_a_huge_entry_name_makes_a_short_refusal_that_still_says_why(
    names: list[str], reason: str, tmp_path: Path
) -> None:
    with pytest.raises(DatasetError) as err:
        ingest_zip(_zip_with(names, tmp_path), tmp_path / "out")
    message = str(err.value)
    assert reason in message and len(message) < 400, message[:300]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("word", ["kana\u202echan", "ka\x85na", "kana\nchan", "ka\x00na", "kana\u2066"])
def test_a_trigger_for_generated_captions_with_a_control_character_is_refused(word: str, tmp_path: Path) -> None:
    upload = tmp_path / "ok.zip"
    upload.write_bytes(dataset_zip(2, size=64))
    with pytest.raises(DatasetError) as err:
        ingest_zip(upload, tmp_path / "out", trigger=word)
    assert err.value.code == "bad_option"
    assert "The trigger" in str(err.value) and word not in str(err.value)
