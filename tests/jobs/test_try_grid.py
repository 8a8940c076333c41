"""/try's grid: each cell is the image of its row (prompt) and column (epoch, or the training source with compare),
every image fits the upload limit and 4096 px, and a grid too big for one image is split, never shrunk to thumbnails.
/try compare: the training image whose caption shares the most tags with each prompt, ties broken the same way
every time."""

from __future__ import annotations

import io
import random
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from jobs.compare import SourceMatch, best_sources, tags
from jobs.contact_sheet import CELL_FLOOR, MAX_SIDE, MISSING
from jobs.try_grid import SOURCE_COLUMN, render_try_grid, settings_line
from jobs.tryplan import TryJob, parse_try
from tests.jobs.data.specs import spec


def solid(colour: tuple[int, int, int], size: int = 256) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "PNG")
    return out.getvalue()


def colour_of(epoch: int, prompt: int) -> tuple[int, int, int]:
    return (30 + epoch * 20, 40 + prompt * 60, 90 + (epoch * 7 + prompt * 13) % 120)


def noisy(size: int, seed: int) -> bytes:
    """Noise in 4 px blocks: it survives the scaling into a cell and compresses badly in every format."""
    rng = random.Random(seed)
    grain = size // 4
    image = Image.frombytes("RGB", (grain, grain), rng.randbytes(grain * grain * 3))
    out = io.BytesIO()
    image.resize((size, size), Image.Resampling.NEAREST).save(out, "PNG")
    return out.getvalue()


def job(resolution: int = 256, epochs: int = 10) -> TryJob:
    base = TryJob.from_spec(spec("sdxl-character"), job_id="j7", epochs_available=range(1, epochs + 1))
    return replace(base, resolution=resolution)


def centre(image: Image.Image, box: tuple[int, int, int, int]) -> tuple[int, ...]:
    left, top, right, bottom = box
    return image.getpixel(((left + right) // 2, (top + bottom) // 2))  # type: ignore[return-value]


def test_each_cell_is_the_image_of_its_prompt_and_epoch_and_the_source_sits_on_the_left() -> None:
    target = job()
    wanted = parse_try(target, prompt="kanachan smiling|kanachan angry|kanachan waving", epochs="2-4,7")
    sources = [
        SourceMatch("img/a.png", "kanachan, smiling", ("smiling",), solid((250, 10, 10), 128)),
        None,
        SourceMatch("img/c.png", "kanachan, waving", ("waving",), solid((10, 250, 10), 128)),
    ]
    loads: list[tuple[int, int]] = []

    def load(epoch: int, row: int) -> bytes | None:
        loads.append((epoch, row))
        return None if (epoch, row) == (7, 1) else solid(colour_of(epoch, row))

    (grid,) = render_try_grid(target, wanted, load, sources=sources)
    assert grid.format == "png" and grid.filename == "try.png"
    assert grid.layout.epochs == (SOURCE_COLUMN, 2, 3, 4, 7) and grid.layout.rows == (0, 1, 2)
    with Image.open(io.BytesIO(grid.data)) as opened:
        image = opened.convert("RGB")
    for epoch in (2, 3, 4, 7):
        for row in range(3):
            expected = MISSING if (epoch, row) == (7, 1) else colour_of(epoch, row)
            assert centre(image, grid.layout.cell_box(epoch, row)) == expected, (epoch, row)
    assert centre(image, grid.layout.cell_box(SOURCE_COLUMN, 0)) == (250, 10, 10)
    assert centre(image, grid.layout.cell_box(SOURCE_COLUMN, 1)) == MISSING
    assert centre(image, grid.layout.cell_box(SOURCE_COLUMN, 2)) == (10, 250, 10)
    assert sorted(loads) == sorted((e, r) for e in (2, 3, 4, 7) for r in range(3))
    # The footer under the rows: the drawn page is taller than the rows alone.
    assert image.height > grid.layout.height


def test_a_grid_too_big_for_the_limit_is_split_by_epochs_each_part_fitting() -> None:
    target = job(resolution=512)
    wanted = parse_try(target, prompt="a|b", epochs="1-4")
    limit = 150 * 1024
    images = render_try_grid(target, wanted, lambda e, r: noisy(512, e * 10 + r), sources=[None] * 2, size_limit=limit)
    assert len(images) > 1
    seen = []
    for grid in images:
        assert len(grid.data) <= limit
        assert grid.layout.cell >= CELL_FLOOR
        with Image.open(io.BytesIO(grid.data)) as opened:
            assert max(opened.size) <= MAX_SIDE
        assert grid.layout.epochs[0] == SOURCE_COLUMN  # the source column is on every part
        seen += [e for e in grid.layout.epochs if e != SOURCE_COLUMN]
        assert grid.filename.startswith("try-") and "-of-" in grid.filename
    assert sorted(seen) == [1, 2, 3, 4]


def test_settings_line_names_what_every_image_shares() -> None:
    target = job()
    wanted = parse_try(target, prompt="kanachan", epochs="1", seed=99, strength=0.7, steps=12)
    assert settings_line(target, wanted) == (
        "seed 99 · strength 0.7 · 12 steps · cfg 7 · euler_a · 256 px · gen_img.py"
    )


def dataset(tmp_path: Path, captions: dict[str, str]) -> Path:
    path = tmp_path / "dataset.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for index, (name, caption) in enumerate(captions.items()):
            archive.writestr(f"10_kana/{name}.png", solid((index * 30 % 256, 100, 100), 800))
            archive.writestr(f"10_kana/{name}.txt", caption)
        archive.writestr("10_kana/uncaptioned.png", solid((0, 0, 0), 64))
    return path


def test_compare_picks_the_caption_sharing_most_tags_with_deterministic_ties(tmp_path: Path) -> None:
    zip_path = dataset(
        tmp_path,
        {
            "b_sweat": "kana, girl, smile, sweatdrop, school uniform",
            "a_sweat": "kana, girl, smile, sweatdrop, school_uniform, outdoors",
            "c_angry": "kana, girl, angry, school uniform",
            "d_tie": "kana, girl, angry, school uniform",
        },
    )
    prompts = ["kana, smile, school uniform, sweatdrop", "kana, angry", "kana, girl, ocean"]
    first, second, third = best_sources(zip_path, prompts, ignore=["kana", "girl"], thumb_px=128)
    # Both sweat images share 3 tags; the one with fewer caption tags (more specific) wins.
    assert first is not None and first.image == "10_kana/b_sweat.png"
    assert first.shared == ("smile", "school uniform", "sweatdrop")
    # An exact tie (same tags, same count): the first path in sorted order, every time.
    assert second is not None and second.image == "10_kana/c_angry.png" and second.shared == ("angry",)
    # Only the ignored trigger/class would match: no source.
    assert third is None
    with Image.open(io.BytesIO(first.png)) as thumb:
        assert max(thumb.size) == 128


def test_tags_are_compared_like_the_tagger_writes_them() -> None:
    assert tags("Kana,  School_Uniform , smile,smile", ignore=["KANA"]) == ["school uniform", "smile"]


@pytest.mark.parametrize("count", [0, 2])
def test_sources_must_match_the_prompts(count: int) -> None:
    target = job()
    wanted = parse_try(target, prompt="a|b|c", epochs="1")
    with pytest.raises(ValueError, match="sources for 3 prompts"):
        render_try_grid(target, wanted, lambda e, r: None, sources=[None] * count)
