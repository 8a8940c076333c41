"""Control characters in captions and entry names are refused, never passed on to training, terminals or Discord.

Decision: refused, not stripped (as file names already were), so what trains is exactly what the user wrote. The
refusal names the file and the character as U+XXXX, never the raw character.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.dataset import DatasetError, ingest_zip
from tests.jobs.dataset_corpus import image_bytes, make_zip

CONTROL_CAPTIONS = {
    "NUL": ("kana\x00, girl", "U+0000 at character 5"),
    "ANSI colour escape": ("kana, \x1b[31mred\x1b[0m girl", "U+001B at character 7"),
    "terminal title escape": ("\x1b]0;pwned\x07kana", "U+001B at character 1"),
    "BEL": ("kana\x07", "U+0007"),
    "backspace over text": ("kana\x08\x08\x08\x08evil", "U+0008"),
    "DEL": ("kana\x7f", "U+007F"),
    "C1 control sequence introducer": ("kana \x9b31m", "U+009B"),
    "C1 next line": ("kana\x85girl", "U+0085"),
    "vertical tab": ("kana\x0bgirl", "U+000B"),
    "form feed": ("kana\x0c", "U+000C"),
    "file separator": ("kana\x1cgirl", "U+001C"),
    "right-to-left override": ("kana, \u202egnp.exe", "U+202E"),
    "left-to-right isolate": ("\u2066kana\u2069", "U+2066"),
    "right-to-left mark": ("kana\u200f", "U+200F"),
    "arabic letter mark": ("kana\u061c", "U+061C"),
}


def _ingest(caption: bytes, tmp_path: Path, name: str = "a.txt") -> DatasetError:
    zip_path = make_zip(tmp_path / "in.zip", {"a.png": image_bytes(), name: caption})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DatasetError) as refused:
        ingest_zip(zip_path, out / "dataset")
    assert list(out.iterdir()) == [], "a refusal leaves nothing behind"
    return refused.value


@pytest.mark.parametrize(("caption", "where"), CONTROL_CAPTIONS.values(), ids=CONTROL_CAPTIONS.keys())
def test_a_caption_with_a_control_character_is_refused(caption: str, where: str, tmp_path: Path) -> None:
    """The refusal names the caption file and the character's code point; the character itself is not in it."""
    refused = _ingest(caption.encode(), tmp_path)
    assert refused.code == "caption_control_character"
    assert f"The caption 'a.txt' holds the control character {where}" in str(refused)
    assert "refused, not cleaned" in str(refused)
    assert all(char.isprintable() or char == " " for char in str(refused))


def test_a_utf16_caption_without_a_bom_gets_a_hint(tmp_path: Path) -> None:
    """ASCII in UTF-16 without a BOM is valid UTF-8 full of NULs: the refusal says what it probably is."""
    refused = _ingest("kana, girl".encode("utf-16-le"), tmp_path)
    assert refused.code == "caption_control_character"
    assert "U+0000 at character 2 (NUL bytes: is it UTF-16? Save it as UTF-8)" in str(refused)


@pytest.mark.parametrize(
    "raw",
    [b"kana \xed\xa0\x80", b"kana \xff girl", b"\xc3", b"kana \xc0\xaf", b"\xf4\x90\x80\x80"],
    ids=["lone surrogate", "invalid byte", "cut sequence", "overlong slash", "past U+10FFFF"],
)
def test_invalid_utf8_and_lone_surrogates_are_refused_as_encoding(raw: bytes, tmp_path: Path) -> None:
    refused = _ingest(raw, tmp_path)
    assert refused.code == "caption_encoding"
    assert "'a.txt' is not UTF-8 text" in str(refused)


def test_ordinary_spacing_and_joiners_are_kept(tmp_path: Path) -> None:
    """Tabs, CRLF line breaks, a BOM and zero-width joiners (emoji, Indic scripts) are ordinary text."""
    caption = "\ufeffkana,\tgirl\r\nwoman technologist 👩\u200d💻, क्\u200dष"
    dataset = ingest_zip(
        make_zip(tmp_path / "in.zip", {"a.png": image_bytes(), "a.txt": caption.encode()}), tmp_path / "d"
    )
    assert dataset.report.image_count == 1
    written = (tmp_path / "d" / "images" / "0001.txt").read_text(encoding="utf-8")
    assert written == "kana, girl, woman technologist 👩\u200d💻, क्\u200dष\n"


@pytest.mark.parametrize(
    "name",
    ["a\x9b.png", "10_\u202ekana/a.png", "a\u2066.png", "a\x85.txt", "a\x1b[2J.png"],
    ids=["C1 in a name", "bidi override in a folder", "bidi isolate", "next line", "escape"],
)
def test_entry_names_with_control_characters_are_refused(name: str, tmp_path: Path) -> None:
    """Names were already refused for C0 controls; C1 and bidi controls are refused alike, shown escaped."""
    zip_path = make_zip(tmp_path / "in.zip", {"b.png": image_bytes(), "b.txt": b"kana", name: b"x"})
    with pytest.raises(DatasetError) as refused:
        ingest_zip(zip_path, tmp_path / "out" / "dataset")
    assert refused.value.code == "bad_name"
    assert "control characters in its name" in str(refused.value)
    assert all(char.isprintable() for char in str(refused.value))
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
