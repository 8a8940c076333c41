"""The dataset report: numbers about an ingested dataset and the seeds' advice as warnings."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from jobs.dataset_limits import name_some
from jobs.usertext import shown

FEW_IMAGES = 10
MANY_IMAGES = 100
TOP_TAG_COUNT = 15


@dataclass
class Concept:
    """One training folder: `repeats` comes from sd-scripts' "{repeats}_{concept}" name (None for a flat zip)."""

    name: str
    repeats: int | None
    folder: str
    image_count: int


@dataclass(frozen=True)
class ImageRecord:
    """One image kept by the ingest, with what the report needs to know about it."""

    source: str
    output: str
    width: int
    height: int
    sha256: str
    caption: str
    had_caption: bool
    exif_rotated: bool = False


@dataclass
class DatasetReport:
    image_count: int
    concepts: list[Concept]
    short_side_min: int
    short_side_median: int
    short_side_max: int
    # Exact sizes, "WxH" -> image count, most common first.
    resolution_buckets: dict[str, int]
    share_under_512: float
    share_under_1024: float
    non_square_share: float
    # Share of images that came with a caption file (before any generated caption).
    caption_coverage: float
    generated_captions: int
    trigger: str | None
    # Share of images whose caption holds the trigger as a tag or word; None without a trigger.
    trigger_coverage: float | None
    top_tags: list[tuple[str, int]]
    duplicates: list[list[str]]
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Images written without a caption file (the `captions` option): tagged on the CPU pod, or class tokens only.
    uncaptioned: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["top_tags"] = [[tag, count] for tag, count in self.top_tags]
        data["skipped"] = [[path, reason] for path, reason in self.skipped]
        return data

    def render_text(self) -> str:
        """A short plain-text summary for the CLI and a Discord message (stays well under 2,000 characters)."""
        concepts = ", ".join(
            f"{c.name} ({c.image_count}" + (f" × {c.repeats} repeats)" if c.repeats else ")") for c in self.concepts
        )
        lines = [
            f"Dataset: {self.image_count} images in {len(self.concepts)} concept(s): {concepts}",
            f"Short side: min {self.short_side_min}, median {self.short_side_median}, max {self.short_side_max} px;"
            f" under 512: {self.share_under_512:.0%}, under 1024: {self.share_under_1024:.0%},"
            f" not square: {self.non_square_share:.0%}",
            f"Captions: {self.caption_coverage:.0%} provided, "
            + (
                f"{self.uncaptioned} without a caption file"
                if self.uncaptioned
                else f"{self.generated_captions} generated"
            )
            + (
                f"; trigger {shown(self.trigger)} in {self.trigger_coverage:.0%}"
                if self.trigger is not None and self.trigger_coverage is not None
                else ""
            ),
        ]
        if self.top_tags:
            lines.append("Top tags: " + ", ".join(f"{tag} ({count})" for tag, count in self.top_tags[:8]))
        if self.duplicates:
            lines.append(f"Duplicates: {len(self.duplicates)} group(s) of identical files")
        if self.skipped:
            lines.append(f"Skipped: {len(self.skipped)} file(s), e.g. {name_some([p for p, _ in self.skipped], 2)}")
        lines.extend(f"⚠ {warning}" for warning in self.warnings[:8])
        return "\n".join(lines)


def caption_tags(caption: str) -> list[str]:
    """Comma-separated tags, lower-cased, in order (the `TRIGGER, CLASS, …` style of seed 002)."""
    return [tag.strip().lower() for tag in caption.split(",") if tag.strip()]


def build_report(
    records: list[ImageRecord],
    concepts: list[Concept],
    skipped: list[tuple[str, str]],
    *,
    trigger: str | None,
    class_word: str | None,
    notes: list[str],
) -> DatasetReport:
    """Numbers and warnings for the kept images; `notes` are warnings the ingest itself raised."""
    count = len(records)
    short_sides = sorted(min(r.width, r.height) for r in records)
    sizes = Counter(f"{r.width}x{r.height}" for r in records)
    under_512 = sum(1 for side in short_sides if side < 512)
    under_1024 = sum(1 for side in short_sides if side < 1024)
    non_square = sum(1 for r in records if r.width != r.height)
    captioned = sum(1 for r in records if r.had_caption)
    uncaptioned = sum(1 for r in records if r.caption == "")
    tag_counts = Counter(tag for r in records for tag in dict.fromkeys(caption_tags(r.caption)))
    with_trigger = [r for r in records if trigger is not None and _mentions(r.caption, trigger)]
    duplicates = _duplicate_groups(records)
    report = DatasetReport(
        image_count=count,
        concepts=concepts,
        short_side_min=short_sides[0],
        short_side_median=int(statistics.median_low(short_sides)),
        short_side_max=short_sides[-1],
        resolution_buckets=dict(sorted(sizes.items(), key=lambda item: (-item[1], item[0]))),
        share_under_512=_share(under_512, count),
        share_under_1024=_share(under_1024, count),
        non_square_share=_share(non_square, count),
        caption_coverage=_share(captioned, count),
        generated_captions=sum(1 for r in records if not r.had_caption),
        trigger=trigger,
        trigger_coverage=_share(len(with_trigger), count) if trigger is not None else None,
        top_tags=sorted(tag_counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_TAG_COUNT],
        duplicates=duplicates,
        skipped=skipped,
        uncaptioned=uncaptioned,
    )
    report.warnings = _warnings(records, report, under_512, under_1024, non_square, trigger, class_word) + notes
    return report


def _warnings(
    records: list[ImageRecord],
    report: DatasetReport,
    under_512: int,
    under_1024: int,
    non_square: int,
    trigger: str | None,
    class_word: str | None,
) -> list[str]:
    count = len(records)
    found: list[str] = []
    if count < FEW_IMAGES:
        found.append(f"Only {count} images: {FEW_IMAGES}-{MANY_IMAGES} are advised for a character or face LoRA.")
    if count > MANY_IMAGES:
        found.append(f"{count} images: more than {MANY_IMAGES} rarely helps a character LoRA and costs more steps.")
    if under_512:
        found.append(f"{under_512} of {count} images are under 512 px on the short side: they will train blurry.")
    if under_1024 > under_512:
        found.append(
            f"{under_1024 - under_512} of {count} images are between 512 and 1023 px on the short side;"
            " SDXL trains at 1024x1024, so 1024 px or larger is advised."
        )
    if non_square:
        found.append(f"{non_square} of {count} images are not square; 1:1 crops are advised.")
    if trigger is not None:
        # An image without a caption file is captioned later (tagged on the CPU pod, or class tokens only).
        not_first = [r.source for r in records if r.caption and caption_tags(r.caption)[:1] != [trigger.lower()]]
        if not_first:
            found.append(
                f"{len(not_first)} of {count} captions do not start with the trigger {shown(trigger)}"
                f" (advised: '{trigger}, CLASS, …'), e.g. {name_some(not_first)}."
            )
    if class_word is not None:
        no_class = [r.source for r in records if r.caption and not _mentions(r.caption, class_word)]
        if no_class:
            found.append(
                f"{len(no_class)} of {count} captions do not mention the class {shown(class_word)},"
                f" e.g. {name_some(no_class)}."
            )
    rotated = [r.source for r in records if r.exif_rotated]
    if rotated:
        found.append(
            f"{len(rotated)} image(s) carry an EXIF rotation that sd-scripts ignores, so they would train sideways"
            f" or upside down: {name_some(rotated)}. Save them with the rotation applied."
        )
    if report.duplicates:
        copies = sum(len(group) - 1 for group in report.duplicates)
        examples = name_some([" = ".join(group) for group in report.duplicates], 2)
        found.append(f"{copies} duplicate image(s) (same bytes): {examples}; each copy trains as extra weight.")
    if report.generated_captions > report.uncaptioned:
        found.append(
            f"{report.generated_captions - report.uncaptioned} missing caption(s) were generated from the trigger"
            " and class."
        )
    return found


def _mentions(caption: str, word: str) -> bool:
    word = word.lower()
    return word in caption_tags(caption) or word in caption.lower().replace(",", " ").split()


def _duplicate_groups(records: list[ImageRecord]) -> list[list[str]]:
    by_hash: dict[str, list[str]] = {}
    for record in records:
        by_hash.setdefault(record.sha256, []).append(record.source)
    return sorted(sorted(group) for group in by_hash.values() if len(group) > 1)


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
