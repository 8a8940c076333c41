"""Every hostile or broken zip in the corpus is refused with its own code and message, and leaves nothing behind."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from jobs.dataset import DatasetError, IngestLimits, ingest_zip
from jobs.zipsafe import ByteBudget, SafeEntry
from tests.jobs.dataset_corpus import BAD_INPUTS, BadInput, make_zip


def test_the_corpus_is_big_and_every_case_is_specific() -> None:
    """At least 25 crafted bad inputs, and no two cases expect the same code with the same message."""
    assert len(BAD_INPUTS) >= 25
    assert len({(case.code, case.message) for case in BAD_INPUTS}) == len(BAD_INPUTS)
    assert len({case.name for case in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.name for case in BAD_INPUTS])
def test_bad_input_is_refused_and_leaves_nothing(case: BadInput, tmp_path: Path) -> None:
    """The refusal carries the case's code and message; the output folder stays empty, with no temp sibling."""
    source = tmp_path / "source"
    source.mkdir()
    zip_path = case.build(source)
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(DatasetError) as refused:
        ingest_zip(zip_path, out / "dataset", limits=case.limits, **case.options)

    assert refused.value.code == case.code, str(refused.value)
    assert case.message in str(refused.value)
    assert str(tmp_path) not in str(refused.value), "messages name files in the zip, never our disk paths"
    assert list(out.iterdir()) == []


def test_a_non_empty_destination_is_refused_and_kept(tmp_path: Path) -> None:
    """Ingest never writes into (or wipes) a folder that already holds something."""
    zip_path = BAD_INPUTS[0].build(tmp_path)  # never opened: the destination check comes first
    dest = tmp_path / "dataset"
    dest.mkdir()
    (dest / "keep.me").write_text("mine")

    with pytest.raises(DatasetError) as refused:
        ingest_zip(zip_path, dest)

    assert refused.value.code == "dest_exists"
    assert (dest / "keep.me").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "in.zip"]


def test_a_missing_zip_is_named(tmp_path: Path) -> None:
    """A path that does not exist gets its own code."""
    with pytest.raises(DatasetError) as refused:
        ingest_zip(tmp_path / "nope.zip", tmp_path / "out")
    assert refused.value.code == "not_found"
    assert "'nope.zip' does not exist" in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("limits", "code", "message"),
    [
        (IngestLimits(max_entry_bytes=300_000), "entry_too_large", "'zeros.bin' unpacks to more than"),
        (IngestLimits(max_total_bytes=300_000), "total_too_large", "unpacks to more than"),
        (IngestLimits(max_ratio=10.0, ratio_grace_bytes=100_000), "zip_bomb", "'zeros.bin' expands"),
    ],
)
def test_the_copy_counts_real_bytes_whatever_the_headers_said(
    limits: IngestLimits, code: str, message: str, tmp_path: Path
) -> None:
    """Caps are enforced on the decompressed stream itself, not only on the sizes the headers declare."""
    zip_path = make_zip(tmp_path / "in.zip", {"zeros.bin": b"\x00" * 2_000_000})
    with zipfile.ZipFile(zip_path) as archive:
        entry = SafeEntry(archive.getinfo("zeros.bin"), "zeros.bin", ("zeros.bin",))  # header checks skipped
        budget = ByteBudget(archive, zip_path.stat().st_size, limits)
        with pytest.raises(DatasetError) as refused, (tmp_path / "out.bin").open("wb") as target:
            budget.copy(entry, target)

    assert refused.value.code == code
    assert message in str(refused.value)
    assert (tmp_path / "out.bin").stat().st_size < 2_000_000, "the copy stopped early"
