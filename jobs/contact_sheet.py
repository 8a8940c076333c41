"""Contact sheets: a job's sample images in one picture, rows = sample prompts, columns = epochs (same seed).

Seed 000's author lined up every epoch's image of one prompt by hand to find the sweet spot; a sheet does that for
every prompt at once. Pure Pillow, no Discord: the bot's notifier posts the sheets and `lorabot demo` writes them.

Rules a sheet keeps:
- Discord's limits: the longest side is at most 4096 px and the encoded file fits the attachment limit it is given
  (PNG, else WebP then JPEG at falling quality, else smaller cells, never under the readable floor).
- Readable: a cell is never smaller than `CELL_FLOOR` px. A job with too many epochs (or prompts) for one sheet gets
  several, split by epochs (then by prompts), instead of thumbnails.
- Stable while epochs arrive: pages are planned from the epochs the job *will* sample, so epoch 12 always lands on
  the same sheet and a refreshed sheet only grows.
- Bounded memory: one page canvas at a time, each sample decoded, scaled to its cell and dropped.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from jobs.usertext import drawn

MIB = 1024 * 1024
# What Discord accepts when nobody told us the guild's limit (a server without boosts).
DEFAULT_SIZE_LIMIT = 10 * MIB
# Discord shows images up to 4096 px on a side in full; a larger one is scaled down in the client anyway.
MAX_SIDE = 4096
# Cell sides in px: the preferred one, and the floor under which a face's details (seed 000's sweat drops) vanish.
CELL_PREFERRED = 384
CELL_FLOOR = 256
MARGIN = 12
GAP = 6
TITLE_H = 40
ROW_LABEL_H = 30
CAPTION_H = 24
TITLE_FONT_PX = 22
LABEL_FONT_PX = 18
CAPTION_FONT_PX = 15
FOOTER_LINE_H = 26
# Encodings tried in order; the first that fits the limit wins (PNG is exact, the others trade detail for size).
QUALITIES = (90, 80, 70, 60)
BACKGROUND = (24, 24, 28)
STRIP = (40, 40, 48)
TEXT = (235, 235, 240)
MUTED = (150, 150, 160)
MISSING = (60, 60, 68)
# Each downscale step when no encoding fits: cells shrink by this factor until the floor.
SHRINK = 0.85

# (epoch, prompt row) → the sample's bytes, or None when that sample is missing (lost with a pod, or expired).
SampleLoader = Callable[[int, int], bytes | None]


class SheetTooLarge(Exception):
    """Not even one epoch of the job fits the attachment limit at the readable floor."""


@dataclass(frozen=True)
class SheetJob:
    """What a job's sheets show."""

    title: str
    prompts: tuple[str, ...]
    # Every epoch that will have samples when the job is done (pages are planned from these).
    planned_epochs: tuple[int, ...]
    # The epochs whose samples exist now (a subset of planned_epochs while training runs).
    epochs: tuple[int, ...]
    seed: int | None = None
    # The samples' side in px (the training resolution): cells are never drawn larger than their source.
    source_px: int = 1024


@dataclass(frozen=True)
class PageLayout:
    """One sheet: which epochs (columns) and prompt rows it shows, and where each cell's image sits."""

    number: int
    count: int
    epochs: tuple[int, ...]
    rows: tuple[int, ...]
    cell: int

    @property
    def width(self) -> int:
        return 2 * MARGIN + len(self.epochs) * self.cell + max(len(self.epochs) - 1, 0) * GAP

    @property
    def height(self) -> int:
        return MARGIN + TITLE_H + len(self.rows) * _row_height(self.cell) + MARGIN

    def cell_box(self, epoch: int, row: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the square that holds sample (epoch, row) on this page."""
        column = self.epochs.index(epoch)
        line = self.rows.index(row)
        left = MARGIN + column * (self.cell + GAP)
        top = MARGIN + TITLE_H + line * _row_height(self.cell) + ROW_LABEL_H
        return left, top, left + self.cell, top + self.cell


@dataclass(frozen=True)
class Sheet:
    layout: PageLayout
    data: bytes
    format: str  # "png", "webp" or "jpeg"
    quality: int | None

    @property
    def filename(self) -> str:
        suffix = "jpg" if self.format == "jpeg" else self.format
        return f"contact-sheet-{self.layout.number}-of-{self.layout.count}.{suffix}"


def _row_height(cell: int) -> int:
    return ROW_LABEL_H + cell + CAPTION_H + GAP


def _columns_that_fit(cell: int, max_side: int) -> int:
    return max((max_side - 2 * MARGIN + GAP) // (cell + GAP), 1)


def _rows_that_fit(cell: int, max_side: int) -> int:
    return max((max_side - 2 * MARGIN - TITLE_H) // _row_height(cell), 1)


def choose_cell(columns: int, rows: int, *, source_px: int, max_side: int = MAX_SIDE) -> int:
    """The cell side: the preferred one (never above the source), shrunk to fit every column and row on one page,
    but not under the floor (then the sheet is split instead)."""
    cell = min(CELL_PREFERRED, max(source_px, 1))
    floor = min(CELL_FLOOR, cell)
    wide = (max_side - 2 * MARGIN - (columns - 1) * GAP) // max(columns, 1)
    tall = (max_side - 2 * MARGIN - TITLE_H) // max(rows, 1) - ROW_LABEL_H - CAPTION_H - GAP
    return max(min(cell, wide, tall), floor)


def plan_pages(
    planned_epochs: Sequence[int],
    prompt_count: int,
    *,
    source_px: int,
    max_side: int = MAX_SIDE,
    epochs_per_page: int | None = None,
) -> list[PageLayout]:
    """Pages for every planned epoch: as few as the readable floor allows, the epochs spread evenly over them."""
    planned = tuple(sorted(set(planned_epochs)))
    if not planned or prompt_count <= 0:
        return []
    cell = choose_cell(len(planned), prompt_count, source_px=source_px, max_side=max_side)
    per_page = min(_columns_that_fit(cell, max_side), len(planned))
    if epochs_per_page is not None:
        per_page = max(min(per_page, epochs_per_page), 1)
    # Even pages (30 epochs at 15 a page, not 16 + 14) so no sheet is a stub.
    epoch_pages = math.ceil(len(planned) / per_page)
    per_page = math.ceil(len(planned) / epoch_pages)
    rows_per_page = min(_rows_that_fit(cell, max_side), prompt_count)
    row_pages = math.ceil(prompt_count / rows_per_page)
    rows_per_page = math.ceil(prompt_count / row_pages)
    chunks = [
        (planned[e : e + per_page], tuple(range(r, min(r + rows_per_page, prompt_count))))
        for e in range(0, len(planned), per_page)
        for r in range(0, prompt_count, rows_per_page)
    ]
    return [
        PageLayout(number=i + 1, count=len(chunks), epochs=epochs, rows=rows, cell=cell)
        for i, (epochs, rows) in enumerate(chunks)
    ]


def fit_cell(image: Image.Image, cell: int) -> Image.Image:
    """A sample scaled (never enlarged) to fit a cell×cell square, aspect kept, centred on the background.

    Tests scale a sample with this same function to compare it with the cell on a sheet."""
    rgb = image.convert("RGB")
    scale = min(cell / rgb.width, cell / rgb.height, 1.0)
    size = (max(round(rgb.width * scale), 1), max(round(rgb.height * scale), 1))
    if size != rgb.size:
        # reducing_gap: a cheap box reduction first, then Lanczos over the last factor of 3 (4× faster at 1024 px).
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = Image.new("RGB", (cell, cell), BACKGROUND)
    out.paste(rgb, ((cell - size[0]) // 2, (cell - size[1]) // 2))
    return out


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font (Latin only; other scripts draw as boxes, which the escapes keep readable).
    return ImageFont.load_default(size=px)


def _fitted(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int
) -> str:
    """User text shortened (start … end, like messages) until it fits `width` px."""
    limit = len(text)
    candidate = drawn(text, limit)
    while limit > 4 and draw.textlength(candidate, font=font) > width:
        limit = max(int(limit * width / max(draw.textlength(candidate, font=font), 1)) - 1, 4)
        candidate = drawn(text, limit)
    return candidate


def draw_page(
    job: SheetJob,
    layout: PageLayout,
    load: SampleLoader,
    *,
    column_label: Callable[[int], str] | None = None,
    title: str | None = None,
    footer: Sequence[str] = (),
    missing: str = "no sample",
) -> Image.Image:
    """One page with the epochs of `job.epochs` that fall on it (columns of missing epochs are left out).

    /try's grid (jobs/try_grid.py) draws with the same page: `column_label` names a column in its cells' captions
    (default "epoch N"), `title` replaces the sheet's title, `footer` lines are written under the rows (the page
    grows by `footer_height`), `missing` is what an absent image's cell says."""
    shown_epochs = tuple(e for e in layout.epochs if e in set(job.epochs))
    page = replace(layout, epochs=shown_epochs)
    canvas = Image.new("RGB", (page.width, page.height + footer_height(len(footer))), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    title_font, label_font, caption_font = _font(TITLE_FONT_PX), _font(LABEL_FONT_PX), _font(CAPTION_FONT_PX)
    if title is None:
        span = f"epochs {shown_epochs[0]}-{shown_epochs[-1]}" if len(shown_epochs) > 1 else f"epoch {shown_epochs[0]}"
        seed = f" · seed {job.seed}" if job.seed is not None else ""
        sheet_no = f" · sheet {page.number}/{page.count}" if page.count > 1 else ""
        title = f"{job.title} · {span}{seed}{sheet_no}"
    draw.text(
        (MARGIN, MARGIN + 6), _fitted(draw, title, title_font, page.width - 2 * MARGIN), fill=TEXT, font=title_font
    )
    inner = page.width - 2 * MARGIN
    for row in page.rows:
        prompt = job.prompts[row] if row < len(job.prompts) else ""
        left, top, _, _ = page.cell_box(shown_epochs[0], row)
        strip_top = top - ROW_LABEL_H
        draw.rectangle((MARGIN, strip_top, MARGIN + inner, strip_top + ROW_LABEL_H - 4), fill=STRIP)
        label = _fitted(draw, f"{row + 1}. {prompt}", label_font, inner - 12)
        draw.text((MARGIN + 6, strip_top + 4), label, fill=TEXT, font=label_font)
        for epoch in shown_epochs:
            left, top, right, bottom = page.cell_box(epoch, row)
            data = load(epoch, row)
            if data is None:
                draw.rectangle((left, top, right - 1, bottom - 1), fill=MISSING)
                draw.text((left + 8, top + 8), missing, fill=MUTED, font=caption_font)
            else:
                with Image.open(io.BytesIO(data)) as source:
                    source.draft("RGB", (page.cell, page.cell))  # JPEG: decode at a fraction of the size
                    canvas.paste(fit_cell(source, page.cell), (left, top))
            label = column_label(epoch) if column_label is not None else f"epoch {epoch}"
            caption = _fitted(draw, f"{label} · {prompt}", caption_font, page.cell - 4)
            draw.text((left + 2, bottom + 4), caption, fill=MUTED, font=caption_font)
    for number, line in enumerate(footer):
        top = page.height + number * FOOTER_LINE_H
        draw.text((MARGIN, top), _fitted(draw, line, label_font, inner), fill=TEXT, font=label_font)
    return canvas


def footer_height(lines: int) -> int:
    """What `footer` lines add to a page's height (nothing without any)."""
    return lines * FOOTER_LINE_H + (MARGIN if lines else 0)


def encode(image: Image.Image, size_limit: int) -> tuple[bytes, str, int | None] | None:
    """The first encoding that fits `size_limit` bytes: PNG, then WebP and JPEG at falling quality; None if none."""
    attempts: list[tuple[str, int | None]] = [("png", None)]
    attempts += [(fmt, q) for q in QUALITIES for fmt in ("webp", "jpeg")]
    for fmt, quality in attempts:
        buffer = _CappedBuffer(size_limit)
        try:
            if fmt == "png":
                image.save(buffer, "PNG", compress_level=6)
            elif fmt == "webp":
                image.save(buffer, "WEBP", quality=quality, method=4)
            else:
                image.save(buffer, "JPEG", quality=quality, optimize=True)
        except _OverLimit:
            continue
        if buffer.tell() <= size_limit:
            return buffer.getvalue(), fmt, quality
    return None


class _OverLimit(Exception):
    pass


class _CappedBuffer(io.BytesIO):
    """Stops an encoder as soon as its output passes the limit: a photo-like 4096 px PNG that cannot fit is given
    up after `limit` bytes instead of being compressed whole."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.limit:
            raise _OverLimit
        return super().write(data)


def render_sheets(
    job: SheetJob, load: SampleLoader, *, size_limit: int = DEFAULT_SIZE_LIMIT, max_side: int = MAX_SIDE
) -> list[Sheet]:
    """Every page that has at least one epoch, each encoded under `size_limit` (blocking: run it in a thread).

    A page that no encoding fits is drawn again with smaller cells (down to the floor); past that the job's pages
    are planned again with half as many epochs each, so a sheet is never a thumbnail."""
    per_page: int | None = None
    while True:
        layouts = plan_pages(
            job.planned_epochs, len(job.prompts), source_px=job.source_px, max_side=max_side, epochs_per_page=per_page
        )
        sheets: list[Sheet] = []
        for layout in layouts:
            if not set(layout.epochs) & set(job.epochs):
                continue
            sheet = _render_page(job, layout, load, size_limit)
            if sheet is None:
                break
            sheets.append(sheet)
        else:
            return sheets
        widest = max(len(layout.epochs) for layout in layouts)
        if widest <= 1:
            raise SheetTooLarge(
                f"one epoch of {len(job.prompts)} prompt(s) does not fit {size_limit} bytes at {CELL_FLOOR} px cells"
            )
        per_page = max(widest // 2, 1)


def _render_page(job: SheetJob, layout: PageLayout, load: SampleLoader, size_limit: int) -> Sheet | None:
    floor = min(CELL_FLOOR, layout.cell)
    cell = layout.cell
    while True:
        attempt = replace(layout, cell=cell)
        image = draw_page(job, attempt, load)
        encoded = encode(image, size_limit)
        image.close()
        if encoded is not None:
            data, fmt, quality = encoded
            shown_epochs = tuple(e for e in attempt.epochs if e in set(job.epochs))
            return Sheet(layout=replace(attempt, epochs=shown_epochs), data=data, format=fmt, quality=quality)
        if cell <= floor:
            return None
        cell = max(int(cell * SHRINK), floor)


__all__ = [
    "CELL_FLOOR",
    "DEFAULT_SIZE_LIMIT",
    "MAX_SIDE",
    "PageLayout",
    "Sheet",
    "SheetJob",
    "SheetTooLarge",
    "fit_cell",
    "plan_pages",
    "render_sheets",
]
