"""Share links become direct downloads; anything else is used as given."""

from __future__ import annotations

import pytest

from jobs.fetch import LinkError, direct_link
from jobs.fetch.links import drive_confirmation_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "https://huggingface.co/datasets/alice/kana/blob/main/data/kana.zip",
            "https://huggingface.co/datasets/alice/kana/resolve/main/data/kana.zip",
        ),
        (
            "https://huggingface.co/alice/kana-lora/blob/v1.0/train.zip?download=true",
            "https://huggingface.co/alice/kana-lora/resolve/v1.0/train.zip?download=true",
        ),
        (
            "https://huggingface.co/datasets/alice/kana/resolve/main/kana.zip",
            "https://huggingface.co/datasets/alice/kana/resolve/main/kana.zip",
        ),
        (
            "https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQ/view?usp=sharing",
            "https://drive.google.com/uc?export=download&id=1AbCdEfGhIjKlMnOpQ",
        ),
        (
            "https://drive.google.com/open?id=1AbCdEfGhIjKlMnOpQ",
            "https://drive.google.com/uc?export=download&id=1AbCdEfGhIjKlMnOpQ",
        ),
        ("https://www.dropbox.com/s/abc123/kana.zip?dl=0", "https://www.dropbox.com/s/abc123/kana.zip?dl=1"),
        (
            "https://www.dropbox.com/scl/fi/xyz/kana.zip?rlkey=k9&dl=0",
            "https://www.dropbox.com/scl/fi/xyz/kana.zip?rlkey=k9&dl=1",
        ),
        ("https://example.org/files/kana.zip#frag", "https://example.org/files/kana.zip"),
    ],
)
def test_share_links_are_rewritten(given: str, expected: str) -> None:
    assert direct_link(given).url == expected


def test_the_hugging_face_token_is_a_header_only_for_the_hub() -> None:
    link = direct_link("https://huggingface.co/alice/x/blob/main/a.zip", hf_token="hf_abc")
    assert link.headers == {"Authorization": "Bearer hf_abc"}
    assert "hf_abc" not in repr(link)
    assert direct_link("https://example.org/a.zip", hf_token="hf_abc").headers == {}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("ftp://example.org/a.zip", "starting with https://"),
        ("kana.zip", "starting with https://"),
        ("https://user:pw@example.org/a.zip", "user name or password"),
        ("https://drive.google.com/drive/folders/1AbCdEfGhIjK", "Google Drive folder"),
        ("https://drive.google.com/file/d/", "names no file"),
    ],
)
def test_unusable_links_say_why(given: str, message: str) -> None:
    with pytest.raises(LinkError, match=message):
        direct_link(given)


def test_the_drive_warning_page_yields_the_download_anyway_url() -> None:
    page = (
        '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        '<input type="hidden" name="id" value="ID1"><input type="hidden" name="confirm" value="t"></form>'
    )
    assert drive_confirmation_url("https://drive.google.com/uc", page) == (
        "https://drive.usercontent.google.com/download?id=ID1&confirm=t"
    )
    old = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC1&amp;id=ID1">Download anyway</a>'
    assert drive_confirmation_url("https://drive.google.com/uc?id=ID1", old) == (
        "https://drive.google.com/uc?export=download&confirm=AbC1&id=ID1"
    )
    assert drive_confirmation_url("https://drive.google.com/uc", "<html>Sign in</html>") is None
