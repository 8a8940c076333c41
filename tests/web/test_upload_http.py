"""The upload page over HTTP: a signed one-time link, the streamed upload with its cap, and the refusal pages."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest

from bot.web import stored_dataset
from tests.web.upload_world import UploadWorld, dataset_zip


def edited(link: str, **changes: str) -> str:
    parts = urlsplit(link)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"


async def put(link: str, body: bytes | AsyncIterator[bytes]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.put(link, data=body, headers={"Content-Type": "application/zip"}) as response,
    ):
        return response.status, await response.text()


async def get(link: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(link) as response:
        return response.status, await response.text()


async def test_the_page_opens_from_a_fresh_link(upload_world: UploadWorld) -> None:
    status, page = await get(upload_world.link())
    assert status == 200
    assert '<input type="file" id="file" accept=".zip,application/zip">' in page
    assert 'name="viewport"' in page and "Up to 2 MB" in page


async def test_an_upload_is_ingested_stored_by_hash_and_handed_to_the_bot(upload_world: UploadWorld) -> None:
    status, text = await put(upload_world.link(user_id=7, channel_id=70), dataset_zip(3))
    assert (status, text) == (200, "Got it: 3 images. The dataset report is in your Discord channel.")
    [ready] = upload_world.ready
    assert (ready.user_id, ready.channel_id, ready.report.image_count) == (7, 70, 3)
    folder, packed = stored_dataset(upload_world.config.datasets_dir, ready.sha256)
    assert hashlib.sha256(packed.read_bytes()).hexdigest() == ready.sha256
    assert (folder / "report.json").is_file()
    assert upload_world.incoming_files() == []


async def test_the_same_dataset_twice_is_stored_once(upload_world: UploadWorld) -> None:
    for _ in range(2):
        assert (await put(upload_world.link(), dataset_zip(3)))[0] == 200
    first, second = upload_world.ready
    assert first.sha256 == second.sha256
    assert sorted(p.name for p in upload_world.config.datasets_dir.iterdir()) == [first.sha256, f"{first.sha256}.zip"]


async def test_a_used_link_is_refused_with_its_own_page(upload_world: UploadWorld) -> None:
    link = upload_world.link()
    assert (await put(link, dataset_zip(2)))[0] == 200
    status, page = await get(link)
    assert status == 410
    assert '<h1 class="bad">This upload link was already used</h1>' in page
    status, text = await put(link, dataset_zip(2))
    assert (status, text) == (
        410,
        "This upload link was already used. Each link takes one dataset. Run /upload in Discord for a new link.",
    )
    assert len(upload_world.ready) == 1


async def test_an_expired_link_is_refused_with_its_own_page(upload_world: UploadWorld) -> None:
    link = upload_world.link()
    upload_world.advance(601)
    status, page = await get(link)
    assert status == 410
    assert "This upload link has expired" in page and "work for 10 minutes" in page
    assert (await put(link, dataset_zip(2)))[0] == 410
    assert upload_world.ready == []


@pytest.mark.parametrize("field", ["sig", "u", "c", "n", "exp", "op"])
async def test_a_tampered_link_is_refused_with_its_own_page(upload_world: UploadWorld, field: str) -> None:
    link = upload_world.link()
    original = dict(parse_qsl(urlsplit(link).query))[field]
    if field == "exp":
        replacement = str(int(original) + 86400)
    else:
        replacement = {"sig": "A" * len(original), "op": "get"}.get(field, "999")
    status, page = await get(edited(link, **{field: replacement}))
    assert status == 403
    assert "This upload link is not valid" in page and "signature does not match" in page
    assert (await put(edited(link, **{field: replacement}), dataset_zip(2)))[0] == 403


async def test_an_upload_announced_over_the_cap_is_refused_before_reading(upload_world: UploadWorld) -> None:
    link = upload_world.link()
    status, text = await put(link, b"PK\x03\x04" + bytes(3_000_000))
    assert (status, text) == (413, "The zip is 3.0 MB; the limit is 2.0 MB.")
    assert upload_world.incoming_files() == []
    assert (await put(link, dataset_zip(2)))[0] == 200, "a refused upload gives the link back"


async def test_an_upload_that_hides_its_size_is_cut_off_at_the_cap(upload_world: UploadWorld) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(400):  # 25 MB if nobody stopped it
            sent += 64 * 1024
            yield bytes(64 * 1024)

    # The server answers 413 and closes at once; a client still sending sees the connection reset.
    with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        await put(upload_world.link(), endless())
    assert sent < 400 * 64 * 1024, "the client was not cut off"
    assert upload_world.ready == []
    assert list(upload_world.config.work_dir.iterdir()) == []


async def test_a_zip_the_ingest_refuses_says_why_and_keeps_the_link(upload_world: UploadWorld) -> None:
    link = upload_world.link()
    status, text = await put(link, b"PK\x05\x06" + bytes(18))
    assert status == 422 and text.startswith("The dataset was refused: ")
    assert upload_world.ready == [] and upload_world.incoming_files() == []
    assert (await get(link))[0] == 200
