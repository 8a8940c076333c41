"""Good zips in the layouts users send come out as one normalised sd-scripts dataset with an exact report."""

from __future__ import annotations

import io
import json
import os
import tracemalloc
from pathlib import Path

from PIL import Image

from jobs.dataset import Concept, IngestedDataset, ingest_zip, pack_dataset
from tests.jobs.dataset_corpus import image_bytes, make_zip

RED, GREEN, BLUE, GREY = (200, 30, 30), (30, 200, 30), (30, 30, 200), (90, 90, 90)


def tree(root: Path) -> dict[str, str]:
    """Relative path -> caption text (for .txt) or the file size (for images), to compare whole layouts."""
    return {
        path.relative_to(root).as_posix(): (path.read_text() if path.suffix == ".txt" else f"{path.stat().st_size}B")
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "report.json"
    }


def ingest(tmp_path: Path, files: dict[str, bytes], **options: object) -> IngestedDataset:
    zip_path = make_zip(tmp_path / "upload.zip", files)
    return ingest_zip(zip_path, tmp_path / "out" / "dataset", **options)  # type: ignore[arg-type]


def test_flat_folder_with_junk(tmp_path: Path) -> None:
    """A flat zip keeps its images in name order, writes one-line .txt captions, and lists the junk it skipped."""
    red, green = image_bytes(color=RED), image_bytes(40, 30, "JPEG", GREEN)
    dataset = ingest(
        tmp_path,
        {
            "b.jpg": green,
            "b.txt": b"  kana, girl,\n  smile  \n",
            "a.png": red,
            "a.txt": b"\xef\xbb\xbfkana, girl",  # a BOM from Windows Notepad
            "__MACOSX/._a.png": b"resource fork",
            ".DS_Store": b"x",
            "Thumbs.db": b"x",
            "desktop.ini": b"x",
            "notes.md": b"my notes",
        },
        trigger="kana",
    )

    assert dataset.root == tmp_path / "out" / "dataset"
    assert dataset.caption_extension == ".txt"
    assert dataset.concepts == [Concept(name="kana", repeats=None, folder="kana", image_count=2)]
    assert tree(dataset.root) == {
        "kana/0001.png": f"{len(red)}B",
        "kana/0001.txt": "kana, girl\n",
        "kana/0002.jpg": f"{len(green)}B",
        "kana/0002.txt": "kana, girl, smile\n",
    }
    assert (dataset.root / "kana/0001.png").read_bytes() == red, "images are copied byte for byte"
    assert dataset.report.skipped == [
        (".DS_Store", "system or hidden file"),
        ("Thumbs.db", "system or hidden file"),
        ("__MACOSX/._a.png", "system or hidden file"),
        ("desktop.ini", "system or hidden file"),
        ("notes.md", "not an image or a caption"),
    ]
    assert any("several lines, joined into one" in w and "'b.txt'" in w for w in dataset.report.warnings)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dataset"], "no temp sibling left"


def test_single_wrapper_folder_names_the_concept(tmp_path: Path) -> None:
    """Everything inside one plain folder: the folder is a wrapper, and its name becomes the concept's."""
    dataset = ingest(
        tmp_path,
        {  # what macOS Finder's "Compress" writes: the folder, plus resource forks beside it
            "My Set/": b"",
            "My Set/x.png": image_bytes(),
            "My Set/x.txt": b"kana",
            "__MACOSX/My Set/._x.png": b"fork",
            "My Set/.DS_Store": b"x",
        },
    )

    assert dataset.concepts == [Concept(name="My Set", repeats=None, folder="my-set", image_count=1)]
    assert set(tree(dataset.root)) == {"my-set/0001.png", "my-set/0001.txt"}
    assert [path for path, _ in dataset.report.skipped] == ["My Set/.DS_Store", "__MACOSX/My Set/._x.png"]


def test_repeats_folders_become_concepts(tmp_path: Path) -> None:
    """sd-scripts' `{repeats}_{concept}` folders (even under a wrapper) keep their repeats, in the folder name too."""
    dataset = ingest(
        tmp_path,
        {
            "train/10_kanachan/smile.png": image_bytes(color=RED),
            "train/10_kanachan/smile.txt": b"kanachan, girl, smile",
            "train/10_kanachan/angry.png": image_bytes(color=GREEN),
            "train/10_kanachan/angry.txt": b"kanachan, girl, angry",
            "train/5_kanachan maid/maid.webp": image_bytes(fmt="WEBP", color=BLUE),
            "train/5_kanachan maid/maid.txt": b"kanachan, girl, maid dress",
            "train/README.txt": b"captions are tags",
        },
    )

    assert dataset.concepts == [
        Concept(name="kanachan", repeats=10, folder="10_kanachan", image_count=2),
        Concept(name="kanachan maid", repeats=5, folder="5_kanachan-maid", image_count=1),
    ]
    files = tree(dataset.root)
    assert files == {
        "5_kanachan-maid/0001.txt": "kanachan, girl, maid dress\n",
        "5_kanachan-maid/0001.webp": files["5_kanachan-maid/0001.webp"],
        "10_kanachan/0001.png": files["10_kanachan/0001.png"],
        "10_kanachan/0001.txt": "kanachan, girl, angry\n",  # angry sorts before smile
        "10_kanachan/0002.png": files["10_kanachan/0002.png"],
        "10_kanachan/0002.txt": "kanachan, girl, smile\n",
    }
    assert dataset.report.skipped == [("train/README.txt", "caption without a matching image")]


def test_mixed_caption_extensions_are_normalised_to_txt(tmp_path: Path) -> None:
    """.txt, .caption and the user's own extension all pair with their image and come out as .txt."""
    dataset = ingest(
        tmp_path,
        {
            "a.png": image_bytes(color=RED),
            "a.txt": b"kana, one",
            "b.png": image_bytes(color=GREEN),
            "b.caption": b"kana, two",
            "c.png": image_bytes(color=BLUE),
            "c.CAP": b"kana, three",
            "d.png": image_bytes(color=GREY),
            "d.txt": b"kana, four",
            "d.caption": b"kana, four",  # two files that agree are fine
        },
        caption_extension="cap",
    )

    captions = {k: v for k, v in tree(dataset.root).items() if k.endswith(".txt")}
    assert captions == {
        "images/0001.txt": "kana, one\n",
        "images/0002.txt": "kana, two\n",
        "images/0003.txt": "kana, three\n",
        "images/0004.txt": "kana, four\n",
    }
    assert dataset.report.caption_coverage == 1.0


def test_images_are_recognised_by_content_not_name(tmp_path: Path) -> None:
    """A JPEG named .png and a PNG with no extension are kept, under the extension of what they really are."""
    dataset = ingest(
        tmp_path,
        {
            "liar.png": image_bytes(fmt="JPEG", color=RED),
            "liar.txt": b"kana",
            "IMG_0001": image_bytes(color=GREEN),
            "IMG_0001.txt": b"kana",
        },
    )

    assert set(tree(dataset.root)) == {"images/0001.png", "images/0001.txt", "images/0002.jpg", "images/0002.txt"}


def test_missing_captions_are_generated_only_when_asked(tmp_path: Path) -> None:
    """With generate_captions, an image without a caption gets 'TRIGGER, CLASS'; the report counts it."""
    dataset = ingest(
        tmp_path,
        {"a.png": image_bytes(color=RED), "a.txt": b"kana, woman, smile", "b.png": image_bytes(color=GREEN)},
        trigger="kana",
        class_word="woman",
        generate_captions=True,
    )

    assert (dataset.root / "kana/0002.txt").read_text() == "kana, woman\n"
    assert dataset.report.generated_captions == 1
    assert dataset.report.caption_coverage == 0.5
    assert "1 missing caption(s) were generated from the trigger and class." in dataset.report.warnings


def test_report_numbers_are_exact(tmp_path: Path) -> None:
    """Resolutions, shares, coverage, tags, duplicates and the seeds' warnings, on a crafted five-image set."""
    square = image_bytes(1024, 1024, color=RED)
    dataset = ingest(
        tmp_path,
        {
            "a.png": square,
            "a.txt": b"kana, girl, smile",
            "b.png": square,  # same bytes as a.png
            "b.txt": b"kana, girl, smile",
            "c.png": image_bytes(512, 768, color=GREEN),
            "c.txt": b"girl, kana, hat",
            "d.png": image_bytes(400, 400, color=BLUE),
            "d.txt": b"kana, girl",
            "e.png": image_bytes(1536, 1024, color=GREY),
        },
        trigger="kana",
        class_word="girl",
        generate_captions=True,
    )
    report = dataset.report

    assert report.image_count == 5
    assert (report.short_side_min, report.short_side_median, report.short_side_max) == (400, 1024, 1024)
    assert report.resolution_buckets == {"1024x1024": 2, "1536x1024": 1, "400x400": 1, "512x768": 1}
    assert (report.share_under_512, report.share_under_1024, report.non_square_share) == (0.2, 0.4, 0.4)
    assert (report.caption_coverage, report.generated_captions, report.trigger_coverage) == (0.8, 1, 1.0)
    assert report.top_tags == [("girl", 5), ("kana", 5), ("smile", 2), ("hat", 1)]
    assert report.duplicates == [["a.png", "b.png"]]
    assert report.warnings == [
        "Only 5 images: 10-100 are advised for a character or face LoRA.",
        "1 of 5 images are under 512 px on the short side: they will train blurry.",
        "1 of 5 images are between 512 and 1023 px on the short side; SDXL trains at 1024x1024,"
        " so 1024 px or larger is advised.",
        "2 of 5 images are not square; 1:1 crops are advised.",
        "1 of 5 captions do not start with the trigger 'kana' (advised: 'kana, CLASS, …'), e.g. 'c.png'.",
        "1 duplicate image(s) (same bytes): 'a.png = b.png'; each copy trains as extra weight.",
        "1 missing caption(s) were generated from the trigger and class.",
    ]
    assert json.loads((dataset.root / "report.json").read_text()) == json.loads(json.dumps(report.to_dict()))
    text = report.render_text()
    assert "Dataset: 5 images in 1 concept(s): kana (5)" in text
    assert "Short side: min 400, median 1024, max 1024 px; under 512: 20%, under 1024: 40%, not square: 40%" in text
    assert "Captions: 80% provided, 1 generated; trigger 'kana' in 100%" in text
    assert "Top tags: girl (5), kana (5), smile (2), hat (1)" in text
    assert len(text) < 2000


def test_many_images_warn_and_without_trigger_coverage_is_unknown(tmp_path: Path) -> None:
    """Over 100 images is a warning, and with no trigger the report leaves trigger coverage at None."""
    files: dict[str, bytes] = {}
    for i in range(101):
        files[f"{i:03d}.png"] = image_bytes(8, 8, color=(i, 0, 0))
        files[f"{i:03d}.txt"] = b"x"
    dataset = ingest(tmp_path, files)

    assert dataset.report.image_count == 101
    assert "101 images: more than 100 rarely helps a character LoRA and costs more steps." in dataset.report.warnings
    assert dataset.report.trigger_coverage is None
    assert dataset.report.to_dict()["trigger_coverage"] is None


def test_a_large_image_is_streamed_not_loaded(tmp_path: Path) -> None:
    """An 8 MiB entry goes through in chunks: Python's allocations peak far below the entry's size."""
    noise = Image.frombytes("RGB", (1700, 1700), os.urandom(1700 * 1700 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG", compress_level=0)
    big = buffer.getvalue()
    assert len(big) > 8 * 1024**2
    zip_path = make_zip(tmp_path / "big.zip", {"big.png": big, "big.txt": b"kana"})

    tracemalloc.start()
    try:
        dataset = ingest_zip(zip_path, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (dataset.root / "images/0001.png").stat().st_size == len(big)
    assert peak < 2 * 1024**2, f"peak {peak / 1024**2:.1f} MiB"


def test_exif_rotated_photos_are_named_in_a_warning(tmp_path: Path) -> None:
    """sd-scripts ignores EXIF orientation, so a phone photo marked 'rotate 90°' gets a warning naming it."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), RED).save(buffer, format="JPEG", exif=exif.tobytes())
    dataset = ingest(
        tmp_path,
        {"phone.jpg": buffer.getvalue(), "phone.txt": b"kana", "flat.png": image_bytes(), "flat.txt": b"kana"},
    )

    assert (
        "1 image(s) carry an EXIF rotation that sd-scripts ignores, so they would train sideways or upside down:"
        " 'phone.jpg'. Save them with the rotation applied." in dataset.report.warnings
    )


def test_a_packed_dataset_ingests_again_to_the_same_concepts(tmp_path: Path) -> None:
    """dataset_from and the upload page plan from the packed zip: its repeats and concepts must survive."""
    upload = make_zip(
        tmp_path / "in.zip",
        {
            "10_kanachan/a.png": image_bytes(color=RED),
            "10_kanachan/a.txt": b"kanachan, girl",
            "5_kanachan maid/b.png": image_bytes(color=BLUE),
            "5_kanachan maid/b.txt": b"kanachan, girl, maid",
        },
    )
    first = ingest_zip(upload, tmp_path / "first")
    packed = tmp_path / "packed.zip"
    pack_dataset(first.root, packed)
    again = ingest_zip(packed, tmp_path / "again")
    assert [(c.repeats, c.folder, c.image_count) for c in again.concepts] == [
        (c.repeats, c.folder, c.image_count) for c in first.concepts
    ]
    assert pack_dataset(again.root, tmp_path / "packed-again.zip")[0] == pack_dataset(first.root, tmp_path / "p.zip")[0]
