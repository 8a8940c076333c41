"""pack_dataset gives the same bytes for the same content, so a dataset can be stored once under its hash."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

from jobs.dataset import ingest_zip, pack_dataset
from tests.jobs.dataset_corpus import image_bytes, make_zip

FILES = {
    "10_kana/b.png": image_bytes(color=(1, 2, 3)),
    "10_kana/b.txt": b"kana, girl, b",
    "10_kana/a.jpg": image_bytes(fmt="JPEG", color=(9, 8, 7)),
    "10_kana/a.txt": b"kana, girl, a",
}


def test_same_content_packs_to_the_same_bytes(tmp_path: Path) -> None:
    """Two uploads of the same files (other order, other zip timestamps, other disk mtimes) pack identically."""
    first = ingest_zip(make_zip(tmp_path / "one.zip", FILES), tmp_path / "d1")
    second = ingest_zip(make_zip(tmp_path / "two.zip", dict(reversed(FILES.items()))), tmp_path / "d2")
    os.utime(second.root / "10_kana/0001.jpg", (1_000_000, 1_000_000))

    sha_1, size_1 = pack_dataset(first.root, tmp_path / "p1.zip")
    sha_2, size_2 = pack_dataset(second.root, tmp_path / "p2.zip")

    assert (sha_1, size_1) == (sha_2, size_2)
    assert (tmp_path / "p1.zip").read_bytes() == (tmp_path / "p2.zip").read_bytes()
    assert sha_1 == hashlib.sha256((tmp_path / "p1.zip").read_bytes()).hexdigest()
    assert size_1 == (tmp_path / "p1.zip").stat().st_size


def test_packed_zip_is_sorted_stored_and_timeless(tmp_path: Path) -> None:
    """Entries are sorted, uncompressed, dated 1980-01-01, and report.json (original names) is left out."""
    dataset = ingest_zip(make_zip(tmp_path / "in.zip", FILES), tmp_path / "d")
    pack_dataset(dataset.root, tmp_path / "p.zip")

    with zipfile.ZipFile(tmp_path / "p.zip") as packed:
        infos = packed.infolist()
        assert [i.filename for i in infos] == [
            "10_kana/0001.jpg",
            "10_kana/0001.txt",
            "10_kana/0002.png",
            "10_kana/0002.txt",
        ]
        assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert packed.read("10_kana/0002.png") == FILES["10_kana/b.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "in.zip", "p.zip"], "no partial file left"


def test_different_content_packs_to_a_different_hash(tmp_path: Path) -> None:
    """One changed caption changes the hash."""
    changed = {**FILES, "10_kana/a.txt": b"kana, girl, a, hat"}
    first = ingest_zip(make_zip(tmp_path / "one.zip", FILES), tmp_path / "d1")
    second = ingest_zip(make_zip(tmp_path / "two.zip", changed), tmp_path / "d2")

    assert pack_dataset(first.root, tmp_path / "p1.zip")[0] != pack_dataset(second.root, tmp_path / "p2.zip")[0]
