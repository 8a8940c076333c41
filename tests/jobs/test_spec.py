"""TrainSpec is an immutable value; a Notice renders as one line with its level and code."""

import dataclasses

import pytest

from jobs.spec import SPEC_FIELDS, Notice, UserOptions
from tests.jobs.data.specs import spec


def test_notice_renders_level_code_and_text() -> None:
    assert Notice("fix", "clip-skip", "dropped it").render() == "[fix] clip-skip: dropped it"


def test_train_spec_is_frozen_and_changed_by_copy() -> None:
    original = spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        original.epochs = 3  # type: ignore[misc]
    assert dataclasses.replace(original, epochs=3).epochs == 3
    assert original.epochs == 10


def test_user_options_are_all_optional() -> None:
    options = UserOptions()
    assert all(getattr(options, f.name) in (None, (), {}) for f in dataclasses.fields(UserOptions))


def test_every_user_option_that_is_a_spec_setting_has_the_same_name() -> None:
    # preset picks the defaults; captions decides what the ingest and the CPU pod do: neither is a trainer setting.
    shared = {f.name for f in dataclasses.fields(UserOptions)} - {"preset", "captions"}
    assert shared <= SPEC_FIELDS
