"""The demo's dataset: drawn at run time, the same every run, accepted by the real ingest as a clean dataset."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from jobs.dataset import ingest_zip
from jobs.sandbox.demo_dataset import DEMO_CLASS, DEMO_TRIGGER, demo_images, write_demo_zip

_localtime = time.localtime


def test_twelve_distinct_512px_pictures_each_captioned_trigger_class_and_what_it_shows():
    images = demo_images()

    assert len(images) == 12
    assert len({hashlib.sha256(i.png).digest() for i in images}) == 12
    for image in images:
        with Image.open(io.BytesIO(image.png)) as picture:
            assert (picture.format, picture.size) == ("PNG", (512, 512))
        assert image.caption.startswith(f"{DEMO_TRIGGER}, {DEMO_CLASS}, ")
    assert images[0].caption == "lbdemo, toy, red circle, sunset gradient"


def test_the_zip_is_byte_for_byte_the_same_every_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = write_demo_zip(tmp_path / "a.zip").read_bytes()
    later = time.time() + 3600  # a run an hour later: no timestamp of the run may leak into the zip
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(time, "localtime", lambda secs=None: _localtime(later if secs is None else secs))
    second = write_demo_zip(tmp_path / "b.zip").read_bytes()

    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    names = zipfile.ZipFile(tmp_path / "a.zip").namelist()
    assert names[:2] == ["2_lbdemo/000-red-circle.png", "2_lbdemo/000-red-circle.txt"]


def test_the_real_ingest_accepts_it_with_every_caption_and_the_trigger(tmp_path: Path):
    zip_path = write_demo_zip(tmp_path / "demo.zip", count=4, size=128)

    dataset = ingest_zip(zip_path, tmp_path / "dataset", trigger=DEMO_TRIGGER, class_word=DEMO_CLASS)

    text = dataset.report.render_text()
    assert dataset.report.image_count == 4
    assert "Captions: 100% provided, 0 generated; trigger 'lbdemo' in 100%" in text
    assert [(c.name, c.repeats) for c in dataset.concepts] == [("lbdemo", 2)]


@pytest.mark.parametrize(
    ("count", "size", "message"),
    [(0, 512, "at least one image, got 0"), (3, 32, "at least 64 pixels wide, got 32")],
)
def test_impossible_sizes_are_refused_with_the_reason(count: int, size: int, message: str):
    with pytest.raises(ValueError, match=message):
        demo_images(count, size)
