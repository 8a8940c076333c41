"""/try's answer: one grid per request, rows = prompts, columns = epochs (and, with compare, a leftmost "source"
column holding the training image closest to each prompt), each cell labelled, seed and settings written under it.

It is drawn by the contact sheet's page (jobs/contact_sheet.py) and fitted the same way: longest side ≤ 4096 px, the
attachment limit met by PNG, else WebP/JPEG at falling quality, else smaller cells down to the readable floor, else
split into several images by epochs (the source column repeated on each), never thumbnails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from jobs.compare import SourceMatch
from jobs.contact_sheet import (
    CELL_FLOOR,
    CELL_PREFERRED,
    DEFAULT_SIZE_LIMIT,
    GAP,
    MAX_SIDE,
    SHRINK,
    PageLayout,
    SheetJob,
    SheetTooLarge,
    draw_page,
    encode,
    footer_height,
    plan_pages,
)
from jobs.tryplan import TryJob, TrySpec, describe_epochs
from jobs.usertext import drawn

# The source column's number in a page's columns: epochs start at 1.
SOURCE_COLUMN = 0

# (epoch, prompt index) → the cell's PNG, or None when the request did not produce it.
CellLoader = Callable[[int, int], bytes | None]


@dataclass(frozen=True)
class GridImage:
    data: bytes
    filename: str
    format: str  # "png", "webp" or "jpeg"
    layout: PageLayout  # columns (SOURCE_COLUMN first with compare) and prompt rows, and where each cell sits


def settings_line(job: TryJob, spec: TrySpec) -> str:
    """What every image of the request shares, for the grid's footer and the thread's message."""
    parts = [
        f"seed {spec.seed}",
        f"strength {spec.strength:g}",
        f"{spec.steps} steps",
        f"{job.resolution} px",
        f"{job.script}",
    ]
    if job.family == "flux":
        parts.insert(3, f"guidance {job.sample_guidance or 3.5:g}")
    else:
        parts.insert(3, f"cfg {job.sample_cfg:g} · {job.sample_sampler}")
    return " · ".join(parts)


def _footer(job: TryJob, spec: TrySpec, sources: Sequence[SourceMatch | None] | None) -> list[str]:
    lines = [settings_line(job, spec)]
    if spec.negative:
        lines.append(f"negative: {drawn(spec.negative, 200)}")
    if sources is not None:
        for index, match in enumerate(sources):
            if match is None:
                lines.append(f"source {index + 1}: no training caption shares a tag with this prompt")
            else:
                shared = ", ".join(match.shared)
                lines.append(f"source {index + 1}: {drawn(match.image, 60)} (shares {drawn(shared, 120)})")
    return lines


def render_try_grid(
    job: TryJob,
    spec: TrySpec,
    load: CellLoader,
    *,
    sources: Sequence[SourceMatch | None] | None = None,
    size_limit: int = DEFAULT_SIZE_LIMIT,
    max_side: int = MAX_SIDE,
    name: str = "try",
) -> list[GridImage]:
    """The request's grid as one image, or several when one cannot fit `size_limit` at the readable floor.

    `sources`: per prompt, the training image beside its row (jobs.compare.best_sources), or None for no column."""
    if sources is not None and len(sources) != len(spec.prompts):
        raise ValueError(f"{len(sources)} sources for {len(spec.prompts)} prompts")
    footer = _footer(job, spec, sources)
    with_source = sources is not None
    title = f"{job.job_id} · /try · " + (
        f"epochs {describe_epochs(spec.epochs)}" if len(spec.epochs) > 1 else f"epoch {spec.epochs[0]}"
    )
    # Room kept for the footer under the rows and for the source column beside the epochs.
    side = max_side - footer_height(len(footer))
    side -= (min(CELL_PREFERRED, job.resolution) + GAP) if with_source else 0
    columns = ((SOURCE_COLUMN,) if with_source else ()) + spec.epochs
    sheet = SheetJob(
        title=title,
        prompts=spec.prompts,
        planned_epochs=columns,
        epochs=columns,
        seed=spec.seed,
        source_px=job.resolution,
    )

    def cell(column: int, row: int) -> bytes | None:
        if column == SOURCE_COLUMN:
            match = sources[row] if sources is not None else None
            return match.png if match is not None else None
        return load(column, row)

    def label(column: int) -> str:
        return "source" if column == SOURCE_COLUMN else f"epoch {column}"

    per_page: int | None = None
    while True:
        layouts = plan_pages(
            spec.epochs, len(spec.prompts), source_px=job.resolution, max_side=side, epochs_per_page=per_page
        )
        if with_source:
            layouts = [replace(layout, epochs=(SOURCE_COLUMN, *layout.epochs)) for layout in layouts]
        images: list[GridImage] = []
        for layout in layouts:
            page_title = title + (f" · image {layout.number}/{layout.count}" if layout.count > 1 else "")
            fitted = _fit_page(sheet, layout, cell, label, page_title, footer, size_limit, name)
            if fitted is None:
                break
            images.append(fitted)
        else:
            return images
        widest = max(len(layout.epochs) - (1 if with_source else 0) for layout in layouts)
        if widest <= 1:
            raise SheetTooLarge(
                f"one epoch of {len(spec.prompts)} prompt(s) does not fit {size_limit} bytes at {CELL_FLOOR} px cells"
            )
        per_page = max(widest // 2, 1)


def _fit_page(
    sheet: SheetJob,
    layout: PageLayout,
    cell: CellLoader,
    label: Callable[[int], str],
    title: str,
    footer: Sequence[str],
    size_limit: int,
    name: str,
) -> GridImage | None:
    """The page under `size_limit`: the first encoding that fits, else smaller cells down to the floor."""
    floor = min(CELL_FLOOR, layout.cell)
    side = layout.cell
    while True:
        attempt = replace(layout, cell=side)
        image = draw_page(sheet, attempt, cell, column_label=label, title=title, footer=footer, missing="no image")
        encoded = encode(image, size_limit)
        image.close()
        if encoded is not None:
            data, fmt, _quality = encoded
            suffix = "jpg" if fmt == "jpeg" else fmt
            numbered = f"-{layout.number}-of-{layout.count}" if layout.count > 1 else ""
            return GridImage(data=data, filename=f"{name}{numbered}.{suffix}", format=fmt, layout=attempt)
        if side <= floor:
            return None
        side = max(int(side * SHRINK), floor)
