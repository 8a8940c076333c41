"""The caption editor over HTTP: a one-time signed link for one dataset, thumbnails only through the opened page,
"save as new dataset" once, and every bound (body size, number of edits, caption length, the caption rules)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
from aiohttp import web
from PIL import Image

from bot.web.editor import add_editor_routes
from tests.web.editor_world import EditorWorld, captioned_zip, query_of, stored_dataset, zip_captions

DATA = re.compile(r'<script type="application/json" id="data">(.*?)</script>', re.S)


def edited(link: str, **changes: str) -> str:
    parts = urlsplit(link)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"


async def get(url: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.read(), response.content_type


async def open_page(world: EditorWorld) -> tuple[str, dict[str, Any]]:
    """Open a fresh link; (the link, the page's data: items, query, token)."""
    link = world.link()
    status, body, _ = await get(link)
    assert status == 200, body.decode()
    found = DATA.search(body.decode())
    assert found is not None
    return link, json.loads(found.group(1))


async def save(world: EditorWorld, data: dict[str, Any], body: bytes | dict[str, Any]) -> tuple[int, dict[str, Any]]:
    url = f"{world.base_url}{data['save']}?{data['query']}&t={data['token']}"
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=payload, headers={"Content-Type": "application/json"}) as response,
    ):
        return response.status, await response.json()


async def test_a_link_opens_the_editor_once_with_every_image_and_caption(editor_world: EditorWorld) -> None:
    link, data = await open_page(editor_world)
    assert [item["path"] for item in data["items"]] == [f"10_kana/{i:04d}.png" for i in range(1, 5)]
    assert data["items"][0]["caption"] == "kana, girl, red hair, smile"
    status, body, _ = await get(link)
    assert status == 410 and "This caption editor link was already used" in body.decode()
    assert editor_world.fetched == [editor_world.sha], "the dataset is fetched to the bot's host once"


async def test_the_page_works_on_a_phone_and_loads_no_full_size_image(editor_world: EditorWorld) -> None:
    link = editor_world.link()
    _, body, _ = await get(link)
    page = body.decode()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert not re.search(r"width:\s*\d+px", page), "no fixed widths"
    assert "<img" not in page.split("<script")[0], "images are thumbnails the script asks for, nothing else"
    assert "/captions/thumb" in page and "/artifacts/" not in page


async def test_expired_and_tampered_links_are_refused_with_their_own_page(editor_world: EditorWorld) -> None:
    expired = editor_world.link()
    editor_world.advance(3601)
    status, body, _ = await get(expired)
    assert status == 410 and "This caption editor link has expired" in body.decode()

    other = "f" * 64
    status, body, _ = await get(edited(editor_world.link(), d=other))
    assert status == 403 and "This caption editor link is not valid" in body.decode()
    assert editor_world.fetched == [] and editor_world.saved == []


async def test_thumbnails_are_small_cached_and_only_for_the_opened_page(editor_world: EditorWorld) -> None:
    _, data = await open_page(editor_world)
    thumb = f"{editor_world.base_url}{data['thumb']}?{data['query']}"
    status, _, _ = await get(f"{thumb}&i=0")
    assert status == 403, "no session token: not from the opened page"
    status, _, _ = await get(f"{thumb}&t={'0' * 64}&i=0")
    assert status == 403
    status, body, content_type = await get(f"{thumb}&t={data['token']}&i=1")
    assert status == 200 and content_type == "image/jpeg"
    with Image.open(io.BytesIO(body)) as image:
        assert max(image.size) <= editor_world.config.thumb_px < 640
    assert len(body) < 20_000
    cached = editor_world.config.cache_dir / editor_world.sha / "thumbs" / "1.jpg"
    assert cached.read_bytes() == body
    assert (await get(f"{thumb}&t={data['token']}&i=4"))[0] == 404
    # A thumbnail link dies with its editor link.
    editor_world.advance(3601)
    assert (await get(f"{thumb}&t={data['token']}&i=1"))[0] == 410


async def test_save_as_new_dataset_keeps_the_old_one_and_works_once(editor_world: EditorWorld) -> None:
    _, data = await open_page(editor_world)
    edits = {"10_kana/0001.png": "kana, girl, red hair, grin", "10_kana/0004.png": "kana, girl, waving"}
    status, answer = await save(editor_world, data, {"captions": edits})
    assert status == 200 and answer["ok"], answer
    [saved] = editor_world.saved
    assert saved.sha256 != editor_world.sha and saved.sha256 in answer["message"]
    assert saved.ticket.user_id == 1001 and saved.report.image_count == 4
    captions = zip_captions(saved.zip_bytes)
    assert captions["10_kana/0001.txt"] == "kana, girl, red hair, grin"
    assert captions["10_kana/0004.txt"] == "kana, girl, waving"
    assert captions["10_kana/0002.txt"] == "kana, girl, red hair, open mouth"
    assert (editor_world.store / f"{editor_world.sha}.zip").exists(), "the old dataset stays"

    status, answer = await save(editor_world, data, {"captions": {"10_kana/0002.png": "kana, girl"}})
    assert status == 410 and "already saved" in answer["message"]
    assert len(editor_world.saved) == 1


async def test_bad_edits_are_refused_with_the_rule_and_change_nothing(editor_world: EditorWorld) -> None:
    _, data = await open_page(editor_world)
    cases = [
        ({"captions": {}}, 400, "No caption was changed"),
        ({"captions": {"10_kana/9999.png": "kana"}}, 400, "is not an image of this dataset"),
        ({"captions": {"10_kana/0001.png": "kana, girl --n lowres"}}, 400, "which sd-scripts reads as an option"),
        ({"captions": {"10_kana/0001.png": "kana,\u0007 girl"}}, 400, "control character U+0007 at character 6"),
        ({"captions": {"10_kana/0001.png": "kana\ngirl"}}, 400, "control character U+000A"),
        ({"captions": {"10_kana/0001.png": "\u202ekana"}}, 400, "control character U+202E"),
        ({"captions": {"10_kana/0001.png": "k" * 1001}}, 400, "1,001 characters; the limit is 1,000"),
        ({"captions": {"10_kana/0001.png": "  "}}, 422, "are empty"),
        ({"captions": {f"10_kana/{i:04d}.png": "kana" for i in range(1, 6)}}, 413, "this dataset has 4 images"),
        ({"captions": ["kana"]}, 400, "must be"),
        (b"not json", 400, "not valid JSON"),
        (b"x" * (600 * 1024), 413, "the limit is 524,288"),
    ]
    for body, status, message in cases:
        got, answer = await save(editor_world, data, body)
        assert (got, answer["ok"]) == (status, False), (body if isinstance(body, dict) else body[:20], answer)
        assert message in answer["message"], answer["message"]
    assert editor_world.saved == []
    # None of them used the save up.
    status, answer = await save(editor_world, data, {"captions": {"10_kana/0003.png": "kana, girl, smile, wink"}})
    assert status == 200 and answer["ok"], answer


async def test_a_save_needs_the_opened_page(editor_world: EditorWorld) -> None:
    link = editor_world.link()
    query = urlsplit(link).query
    fake = {"save": "/captions/save", "query": query, "token": "0" * 64}
    status, answer = await save(editor_world, fake, {"captions": {"10_kana/0001.png": "kana"}})
    assert status == 403 and "opened editor page" in answer["message"]
    assert editor_world.saved == []


async def test_a_store_failure_shows_a_retry_page_and_leaves_the_link_usable(editor_world: EditorWorld) -> None:
    link = editor_world.link()
    editor_world.store_down = True
    status, body, _ = await get(link)
    assert status == 503 and "This dataset could not be opened" in body.decode()
    assert "the store is down" not in body.decode(), "the store's own error stays in the log"
    editor_world.store_down = False
    status, body, _ = await get(link)
    assert status == 200 and "Edit captions" in body.decode()


def browser() -> aiohttp.ClientSession:
    """A browser of its own: a cookie jar (that accepts cookies from 127.0.0.1, as browsers do)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def browse(session: aiohttp.ClientSession, url: str) -> tuple[int, str, list[str]]:
    async with session.get(url) as response:
        return response.status, await response.text(), response.headers.getall("Set-Cookie", [])


async def test_the_browser_that_opened_a_link_may_reload_it_until_it_saves_and_no_other_may(
    editor_world: EditorWorld,
) -> None:
    link = editor_world.link()
    async with browser() as phone, browser() as other:
        status, page, cookies = await browse(phone, link)
        assert status == 200 and "Edit captions" in page
        [cookie] = cookies
        attributes = [part.strip().lower() for part in cookie.split(";")]
        assert {"httponly", "samesite=lax", "path=/captions"} <= set(attributes), cookie
        assert editor_world.links.session_token(editor_world.links.verify(query_of(link), check_used=False)) in page

        # The phone reloads the tab: the same editor, the same session, the dataset not fetched again.
        status, again, _ = await browse(phone, link)
        assert status == 200 and DATA.search(again) is not None and DATA.search(page) is not None
        assert json.loads(DATA.search(again).group(1)) == json.loads(DATA.search(page).group(1))  # type: ignore[union-attr]
        assert editor_world.fetched == [editor_world.sha]

        # Anyone else with the link (no cookie) is refused, as is a cookie from another link.
        status, refused, _ = await browse(other, link)
        assert status == 410 and "This caption editor link was already used" in refused
        second = editor_world.link()
        assert (await browse(other, second))[0] == 200
        assert (await browse(phone, second))[0] == 410, "the phone's cookie is for the first link only"

        # Once it saved, the link is done, even in the browser that opened it.
        data = json.loads(DATA.search(page).group(1))  # type: ignore[union-attr]
        status, answer = await save(editor_world, data, {"captions": {"10_kana/0001.png": "kana, girl, grin"}})
        assert status == 200 and answer["ok"], answer
        status, refused, _ = await browse(phone, link)
        assert status == 410 and "already used" in refused

        # And a link that expires no longer reopens either.
        third = editor_world.link()
        assert (await browse(phone, third))[0] == 200
        editor_world.advance(3601)
        status, refused, _ = await browse(phone, third)
        assert status == 410 and "has expired" in refused


def unpacked(world: EditorWorld) -> list[str]:
    cache = world.config.cache_dir
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


async def test_a_saved_links_unpacked_dataset_and_thumbnails_leave_the_bots_host(editor_world: EditorWorld) -> None:
    _, data = await open_page(editor_world)
    thumb = f"{editor_world.base_url}{data['thumb']}?{data['query']}&t={data['token']}&i=0"
    assert (await get(thumb))[0] == 200
    assert unpacked(editor_world) == [editor_world.sha]
    status, answer = await save(editor_world, data, {"captions": {"10_kana/0001.png": "kana, girl, grin"}})
    assert status == 200 and answer["ok"], answer
    assert unpacked(editor_world) == [], "saved: the link is done with its dataset"
    assert list(editor_world.config.work_dir.iterdir()) == []


async def test_an_expired_links_dataset_goes_at_the_next_sweep_and_an_open_one_stays(
    editor_world: EditorWorld,
) -> None:
    assert editor_world.routes is not None
    await open_page(editor_world)
    (editor_world.store / "b").mkdir()
    other_sha, _ = stored_dataset(editor_world.store / "b", captioned_zip(images=2))
    (editor_world.store / "b" / f"{other_sha}.zip").rename(editor_world.store / f"{other_sha}.zip")
    editor_world.advance(1800)
    status, _, _ = await get(editor_world.link(sha256=other_sha))
    assert status == 200
    assert await editor_world.routes.sweep() == []
    assert unpacked(editor_world) == sorted([editor_world.sha, other_sha]), "both links are open"

    editor_world.advance(1801)  # the first link expired; the second has 30 minutes left
    assert await editor_world.routes.sweep() == [editor_world.sha]
    assert unpacked(editor_world) == [other_sha]
    editor_world.advance(1800)
    assert await editor_world.routes.sweep() == [other_sha]
    assert unpacked(editor_world) == []


async def test_the_sweep_clears_what_an_earlier_run_left_and_caps_the_cache_size(editor_world: EditorWorld) -> None:
    assert editor_world.routes is not None
    cache, work = editor_world.config.cache_dir, editor_world.config.work_dir
    # An earlier run's leftovers: a dataset folder nobody has open, a half-deleted one, a save that crashed.
    (cache / ("e" * 64) / "thumbs").mkdir(parents=True)
    (cache / ("e" * 64) / "thumbs" / "0.jpg").write_bytes(b"x" * 1000)
    (cache / ".gone-old").mkdir()
    crashed = work / "captions-crashed"
    crashed.mkdir(parents=True)
    os.utime(crashed, (0, 0))
    young = work / "captions-in-progress"  # a save running now
    young.mkdir()
    os.utime(young, (editor_world.now.timestamp(), editor_world.now.timestamp()))
    assert await editor_world.routes.sweep() == ["e" * 64]
    assert unpacked(editor_world) == [] and sorted(p.name for p in work.iterdir()) == ["captions-in-progress"]

    # Over the size cap, the least recently used dataset goes even while its link is open (fetched again on use).
    _, data = await open_page(editor_world)
    object.__setattr__(editor_world.config, "max_cache_bytes", 1)
    assert await editor_world.routes.sweep() == [editor_world.sha]
    assert unpacked(editor_world) == []
    thumb = f"{editor_world.base_url}{data['thumb']}?{data['query']}&t={data['token']}&i=0"
    assert (await get(thumb))[0] == 200
    assert editor_world.fetched == [editor_world.sha, editor_world.sha]


async def test_the_server_sweeps_on_start_and_then_periodically(editor_world: EditorWorld) -> None:
    """The sweep is wired into the web app: a server starting on an earlier run's folder clears it, and a link that
    expires while it runs loses its dataset at the next periodic sweep, with nobody calling sweep()."""
    leftover = editor_world.config.cache_dir / ("e" * 64)
    leftover.mkdir(parents=True)
    config = dataclasses.replace(editor_world.config, sweep_every_s=0.05)
    app = web.Application()
    add_editor_routes(
        app, links=editor_world.links, config=config, fetch=editor_world.fetch, on_saved=editor_world.on_saved
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        assert not leftover.exists(), "swept on start"
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        link = editor_world.links.issue(f"http://127.0.0.1:{port}", 1001, editor_world.sha)
        assert (await get(link))[0] == 200
        await asyncio.sleep(0.2)
        assert unpacked(editor_world) == [editor_world.sha], "an open link keeps its dataset"
        editor_world.advance(3601)
        for _ in range(50):
            if not unpacked(editor_world):
                break
            await asyncio.sleep(0.05)
        assert unpacked(editor_world) == []
    finally:
        await runner.cleanup()
