"""Builders for planning tests: a dataset stand-in with the shape of jobs.dataset.IngestedDataset, and specs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from jobs.catalog import load_catalog
from jobs.presets import load_presets, merge
from jobs.prices import StaticPriceProvider
from jobs.rules import ConceptFacts, DatasetFacts
from jobs.spec import TrainSpec, UserOptions

CATALOG = load_catalog()
PRESETS = load_presets()
PRICES = StaticPriceProvider()


@dataclass(frozen=True)
class FakeConcept:
    name: str
    repeats: int | None
    folder: str
    image_count: int


@dataclass(frozen=True)
class FakeReport:
    text: str = "Dataset: stand-in report"
    uncaptioned: int = 0

    def render_text(self) -> str:
        return self.text


@dataclass(frozen=True)
class FakeDataset:
    concepts: list[FakeConcept]
    caption_extension: str = ".txt"
    report: FakeReport = field(default_factory=FakeReport)


def seed_dataset(images: int = 59, repeats: int | None = None) -> FakeDataset:
    return FakeDataset([FakeConcept("kanachan", repeats, "kanachan", images)])


def facts(images: int = 59, repeats: int | None = 10, extension: str = ".txt") -> DatasetFacts:
    return DatasetFacts((ConceptFacts("kanachan", "kanachan", images, repeats),), extension)


def spec(preset: str | None = None, **changes: Any) -> TrainSpec:
    """The preset merged with a trigger and class (seed 000's), then any field changed directly."""
    merged = merge(PRESETS.get(preset), UserOptions(trigger="kanachan", class_word="1girl"))
    return replace(merged, **changes)
