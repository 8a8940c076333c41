"""Downloading a dataset link: each share-link kind works, each failure has its own message and leaves nothing."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from jobs.fetch import FetchError, FetchProgress, FetchTimeouts
from tests.fetch.https_world import DRIVE_ID, HF_TOKEN, HttpsWorld


def leftovers(world: HttpsWorld) -> list[str]:
    folder = world.tmp / "dl"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def refused(world: HttpsWorld, url: str, **kwargs: object) -> FetchError:
    with pytest.raises(FetchError) as caught:
        await world.fetch(url, **kwargs)  # type: ignore[arg-type]
    assert leftovers(world) == [], "a failed download must leave nothing on disk"
    return caught.value


async def test_a_direct_link_is_streamed_to_disk_with_its_hash(https_world: HttpsWorld) -> None:
    result = await https_world.fetch(https_world.url("files.example.com", "/files/data.zip"))
    assert result.path.read_bytes() == https_world.zip_bytes
    assert result.sha256 == hashlib.sha256(https_world.zip_bytes).hexdigest()
    assert (result.size, result.kind, result.redirects) == (len(https_world.zip_bytes), "direct", 0)
    assert leftovers(https_world) == ["dataset.zip"]


async def test_a_hugging_face_blob_link_downloads_the_file_not_the_viewer_page(https_world: HttpsWorld) -> None:
    url = https_world.url("huggingface.co", "/datasets/alice/kana/blob/main/data.zip")
    result = await https_world.fetch(url)
    assert result.path.read_bytes() == https_world.zip_bytes
    assert result.kind == "huggingface"
    asked = [path for host, path, _ in https_world.log.requests if host == "huggingface.co"]
    assert asked == ["/datasets/alice/kana/resolve/main/data.zip"]


async def test_a_private_hugging_face_repo_needs_the_token_which_never_leaves_the_hub(
    https_world: HttpsWorld,
) -> None:
    url = https_world.url("huggingface.co", "/alice/private-kana/blob/main/data.zip")
    error = await refused(https_world, url)
    assert error.code == "forbidden" and "HF_TOKEN" in str(error)

    result = await https_world.fetch(url, hf_token=HF_TOKEN)
    assert result.path.read_bytes() == https_world.zip_bytes
    sent_token = {host for host, _, headers in https_world.log.requests if "Authorization" in headers}
    assert sent_token == {"huggingface.co"}, "the CDN behind the redirect must not see the token"


async def test_a_drive_link_passes_the_large_file_confirmation_page(https_world: HttpsWorld) -> None:
    url = https_world.url("drive.google.com", f"/file/d/{DRIVE_ID}/view?usp=sharing")
    result = await https_world.fetch(url)
    assert result.path.read_bytes() == https_world.zip_bytes
    assert result.kind == "google_drive"
    hosts = [host for host, _, _ in https_world.log.requests]
    assert hosts == ["drive.google.com", "drive.usercontent.google.com", "drive.usercontent.google.com"]
    assert "confirm=t" in https_world.log.requests[-1][1]


async def test_a_dropbox_preview_link_is_turned_into_a_download(https_world: HttpsWorld) -> None:
    result = await https_world.fetch(https_world.url("www.dropbox.com", "/s/abc123/kana.zip?dl=0"))
    assert result.path.read_bytes() == https_world.zip_bytes
    assert https_world.log.requests[-1][1] == "/s/abc123/kana.zip?dl=1"


async def test_a_redirect_chain_is_followed_up_to_five_hops(https_world: HttpsWorld) -> None:
    result = await https_world.fetch(https_world.url("files.example.com", "/r/5"))
    assert result.redirects == 5 and result.path.read_bytes() == https_world.zip_bytes


async def test_a_sixth_redirect_is_refused(https_world: HttpsWorld) -> None:
    error = await refused(https_world, https_world.url("files.example.com", "/r/6"))
    assert error.code == "too_many_redirects"
    assert str(error) == "The link redirected more than 5 times; give the final address."


async def test_a_file_announced_over_the_cap_is_refused_before_its_body(https_world: HttpsWorld) -> None:
    started = time.monotonic()
    error = await refused(https_world, https_world.url("files.example.com", "/big"), max_bytes=1_000_000)
    assert error.code == "too_large"
    assert str(error) == "The file is 50.0 MB; the limit is 1.0 MB. Nothing was downloaded."
    assert time.monotonic() - started < 1.5, "the body (5 s to send) must not have been read"


async def test_a_server_that_hides_the_size_is_cut_off_at_the_cap(https_world: HttpsWorld) -> None:
    error = await refused(https_world, https_world.url("files.example.com", "/endless"), max_bytes=1_000_000)
    assert error.code == "too_large"
    assert str(error) == (
        "The download passed the limit of 1.0 MB and was stopped (the server did not say the size up front)."
    )


async def test_a_stalled_server_times_out_with_its_own_message(https_world: HttpsWorld) -> None:
    timeouts = FetchTimeouts(connect_s=2, read_s=0.3, progress_interval_s=0)
    error = await refused(https_world, https_world.url("files.example.com", "/slow"), timeouts=timeouts)
    assert error.code == "timeout"
    assert str(error).startswith(f"files.example.com:{https_world.port}/slow stopped sending for 0.3 s (after ")


async def test_a_missing_file_says_404(https_world: HttpsWorld) -> None:
    error = await refused(https_world, https_world.url("files.example.com", "/nothing.zip"))
    assert error.code == "not_found"
    assert str(error) == (
        f"Nothing at files.example.com:{https_world.port}/nothing.zip (404 Not Found): check the link is complete"
        " and public."
    )


async def test_a_web_page_instead_of_a_zip_is_refused(https_world: HttpsWorld) -> None:
    error = await refused(https_world, https_world.url("files.example.com", "/page.html"))
    assert error.code == "html_page"
    assert "is a web page, not a zip file" in str(error)


async def test_a_web_page_sent_as_a_binary_is_still_recognised(https_world: HttpsWorld) -> None:
    error = await refused(https_world, https_world.url("files.example.com", "/disguised"))
    assert error.code == "html_page"


async def test_a_connection_that_breaks_off_is_reported(https_world: HttpsWorld) -> None:
    error = await refused(https_world, https_world.url("files.example.com", "/truncated"))
    assert error.code == "truncated" and "broke off after" in str(error)


async def test_plain_http_is_refused_even_after_a_redirect(https_world: HttpsWorld) -> None:
    error = await refused(https_world, f"http://files.example.com:{https_world.port}/files/data.zip")
    assert error.code == "insecure_link"
    error = await refused(https_world, https_world.url("files.example.com", "/to-http"))
    assert str(error) == (
        f"The link redirects to plain http (files.example.com:{https_world.port}/files/data.zip);"
        " lorabot only downloads over https."
    )


async def test_a_certificate_for_another_name_is_refused(https_world: HttpsWorld) -> None:
    guard = https_world.guard()
    guard.resolver = type(guard.resolver)({"other.example.org": ["127.0.0.1"]})  # type: ignore[call-arg]
    error = await refused(https_world, https_world.url("other.example.org", "/files/data.zip"), guard=guard)
    assert error.code == "tls_error"


async def test_progress_is_reported_while_reading(https_world: HttpsWorld, tmp_path: Path) -> None:
    seen: list[FetchProgress] = []

    async def record(progress: FetchProgress) -> None:
        seen.append(progress)

    https_world.zip_bytes = b"PK\x03\x04" + bytes(3_000_000)
    await https_world.fetch(https_world.url("files.example.com", "/files/data.zip"), progress_cb=record)
    assert seen, "no progress reported"
    assert [p.bytes_done for p in seen] == sorted(p.bytes_done for p in seen)
    assert all(p.bytes_total == 3_000_004 for p in seen)


async def test_not_a_link_at_all(https_world: HttpsWorld) -> None:
    error = await refused(https_world, "kana.zip")
    assert (
        str(error) == "The dataset link is not usable: the dataset link must be a full web address starting "
        "with https://."
    )
