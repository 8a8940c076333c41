"""Contact sheets: the planner keeps cells readable and splits by epochs; each sheet fits Discord's limits; each cell
is the sample of its row and column."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image, ImageChops, ImageStat

from jobs.contact_sheet import (
    CELL_FLOOR,
    MAX_SIDE,
    MIB,
    SheetJob,
    SheetTooLarge,
    fit_cell,
    plan_pages,
    render_sheets,
)
from jobs.sandbox.sdscripts._standin_files import png_bytes
from jobs.usertext import drawn


class Samples:
    """Deterministic synthetic samples, drawn on first use (like the stand-in trainer's)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.cache: dict[tuple[int, int], bytes] = {}
        self.loads = 0

    def __call__(self, epoch: int, row: int) -> bytes | None:
        self.loads += 1
        key = (epoch, row)
        if key not in self.cache:
            self.cache[key] = _noisy_png(self.size, epoch * 1000 + row)
        return self.cache[key]


def _noisy_png(size: int, seed: int) -> bytes:
    """A gradient of a colour chosen by `seed`, with noise (photo-like: PNG cannot shrink it much)."""
    tint = ((seed * 73) % 256, (seed * 151) % 256, (seed * 199) % 256)
    gradient = Image.linear_gradient("L").resize((size, size))
    noise = Image.frombytes("L", (size, size), random.Random(seed).randbytes(size * size)).point(lambda v: v // 4)
    image = Image.merge("RGB", [ImageChops.add(gradient.point(lambda v, t=t: (v + t) // 2), noise) for t in tint])
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _job(epochs: int, prompts: int, *, source_px: int = 512, present: int | None = None) -> SheetJob:
    planned = tuple(range(1, epochs + 1))
    return SheetJob(
        title="j7 · kana",
        prompts=tuple(f"kana, 1girl, prompt number {i}, smiling, upper body" for i in range(prompts)),
        planned_epochs=planned,
        epochs=planned[: present if present is not None else epochs],
        seed=42,
        source_px=source_px,
    )


def _mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def test_a_few_epochs_fit_one_sheet_at_the_preferred_cell_size() -> None:
    pages = plan_pages(range(1, 4), 2, source_px=512)
    assert [(p.epochs, p.rows, p.cell) for p in pages] == [((1, 2, 3), (0, 1), 384)]


def test_cells_never_exceed_their_source() -> None:
    assert plan_pages(range(1, 4), 2, source_px=128)[0].cell == 128


@pytest.mark.parametrize(("epochs", "prompts"), [(30, 4), (30, 6), (60, 6), (10, 16)])
def test_many_epochs_or_prompts_split_into_readable_sheets(epochs: int, prompts: int) -> None:
    """No cell under the floor, no side over 4096 px, every (epoch, prompt) on exactly one sheet, even pages."""
    pages = plan_pages(range(1, epochs + 1), prompts, source_px=1024)
    assert len(pages) > 1
    placed = [(e, r) for p in pages for e in p.epochs for r in p.rows]
    assert sorted(placed) == [(e, r) for e in range(1, epochs + 1) for r in range(prompts)]
    for page in pages:
        assert page.cell >= CELL_FLOOR
        assert page.width <= MAX_SIDE and page.height <= MAX_SIDE
    widths = {len(p.epochs) for p in pages}
    assert max(widths) - min(widths) <= 1


def test_pages_are_planned_from_the_planned_epochs_so_a_refresh_only_grows() -> None:
    """Epoch 12 of 30 sits on the same sheet after epoch 12 as after epoch 30."""
    early = render_sheets(_job(30, 2, present=12), Samples(256))
    done = render_sheets(_job(30, 2), Samples(256))
    assert len(early) == 1 and len(done) == 2
    assert early[0].layout.epochs == tuple(range(1, 13))
    assert done[0].layout.epochs[:12] == early[0].layout.epochs and done[0].layout.cell == early[0].layout.cell


def test_each_cell_is_its_epochs_sample_for_its_prompt() -> None:
    samples = Samples(512)
    [sheet] = render_sheets(_job(3, 2), samples)
    assert sheet.format == "png" and sheet.filename == "contact-sheet-1-of-1.png"
    image = Image.open(io.BytesIO(sheet.data))
    assert image.size == (sheet.layout.width, sheet.layout.height)
    for epoch in (1, 2, 3):
        for row in (0, 1):
            cell = image.crop(sheet.layout.cell_box(epoch, row))
            expected = fit_cell(Image.open(io.BytesIO(samples.cache[(epoch, row)])), sheet.layout.cell)
            assert _mean_difference(cell, expected) == 0, (epoch, row)
            other = fit_cell(Image.open(io.BytesIO(samples.cache[(epoch % 3 + 1, row)])), sheet.layout.cell)
            assert _mean_difference(cell, other) > 5  # the check would see a cell in the wrong place


def test_thirty_epochs_at_1024_px_make_several_sheets_each_under_the_limit() -> None:
    """A tight limit forces lossy encodings; every sheet still fits and keeps readable cells."""
    limit = 2 * MIB
    samples = Samples(1024)
    sheets = render_sheets(_job(30, 4, source_px=1024), samples, size_limit=limit)
    assert len(sheets) >= 2
    assert sorted(e for s in sheets for e in s.layout.epochs) == list(range(1, 31))
    for sheet in sheets:
        assert len(sheet.data) <= limit
        assert sheet.layout.cell >= CELL_FLOOR
        image = Image.open(io.BytesIO(sheet.data))
        assert max(image.size) <= MAX_SIDE
        assert image.format in ("PNG", "WEBP", "JPEG")
        # Lossy or not, each cell still shows its own sample.
        epoch = sheet.layout.epochs[-1]
        cell = image.crop(sheet.layout.cell_box(epoch, 3))
        expected = fit_cell(Image.open(io.BytesIO(samples.cache[(epoch, 3)])), sheet.layout.cell)
        assert _mean_difference(cell, expected) < 12


def test_a_limit_too_small_splits_further_and_then_refuses() -> None:
    sheets = render_sheets(_job(6, 2, source_px=512), Samples(512), size_limit=300_000)
    assert all(len(s.data) <= 300_000 for s in sheets)
    assert all(s.layout.cell >= CELL_FLOOR for s in sheets)
    with pytest.raises(SheetTooLarge):
        render_sheets(_job(2, 2, source_px=512), Samples(512), size_limit=2_000)


def test_missing_samples_leave_a_marked_cell() -> None:
    def load(epoch: int, row: int) -> bytes | None:
        return None if (epoch, row) == (2, 1) else png_bytes(256, 256, epoch)

    [sheet] = render_sheets(_job(3, 2, source_px=256), load)
    image = Image.open(io.BytesIO(sheet.data)).convert("RGB")
    box = sheet.layout.cell_box(2, 1)
    assert image.getpixel((box[2] - 5, box[3] - 5)) == (60, 60, 68)


def test_prompt_labels_are_user_text_shortened_and_escaped() -> None:
    """Control and bidi characters are drawn as escapes; a long prompt keeps its start and end."""
    assert drawn("kana\u202e, 1girl\n", 60) == "kana\\u202e, 1girl\\x0a"
    long = drawn("a" * 100 + "END", 30)
    assert len(long) == 30 and long.endswith("END") and "…" in long
