"""Attachments are streamed to disk with a byte cap: refused before reading when the size is declared too big,
cut off (nothing left on disk) when more bytes arrive than the cap, whatever Content-Length claimed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bot.actions import Refused, parse_job
from bot.cogs.train import parse_extra_options, source_refusal
from bot.ingest import IngestRefused, stream_to_file, upload_cap_bytes
from jobs.config import load_settings

MiB = 1024 * 1024


@pytest_asyncio.fixture
async def server() -> AsyncIterator[str]:
    async def exact(request: web.Request) -> web.Response:
        return web.Response(body=b"z" * 3000)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(50):
            try:
                await response.write(b"y" * 1000)
            except ConnectionResetError:
                break
        return response

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/exact", exact)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_file_under_the_cap_lands_whole(server: str, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        size = await stream_to_file(session, f"{server}/exact", tmp_path / "a.zip", cap=4000, declared_size=3000)
    assert size == 3000 and (tmp_path / "a.zip").read_bytes() == b"z" * 3000


async def test_a_declared_size_over_the_cap_is_refused_before_any_request(server: str, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(IngestRefused, match="limit here is 1,000 bytes"):
            await stream_to_file(session, f"{server}/missing", tmp_path / "a.zip", cap=1000, declared_size=5000)
    assert not (tmp_path / "a.zip").exists()


async def test_more_bytes_than_the_cap_are_cut_off_and_nothing_is_kept(server: str, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(IngestRefused, match="larger than the limit"):
            await stream_to_file(session, f"{server}/chunked", tmp_path / "a.zip", cap=10_000)
    assert not (tmp_path / "a.zip").exists()


async def test_a_server_error_is_a_clear_refusal(server: str, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(IngestRefused, match="answered 404"):
            await stream_to_file(session, f"{server}/missing", tmp_path / "a.zip", cap=10_000)


def test_the_cap_is_the_smallest_of_discords_limit_and_ours(tmp_path: Path) -> None:
    settings = load_settings(env={"DISCORD_MAX_ATTACHMENT_MB": "50", "LORABOT_MAX_DATASET_MB": "100"})
    assert upload_cap_bytes(settings, 10 * MiB) == 10 * MiB
    assert upload_cap_bytes(settings, 500 * MiB) == 50 * MiB
    assert upload_cap_bytes(settings, None) == 50 * MiB


def test_exactly_one_dataset_source() -> None:
    assert source_refusal(object(), None, None) is None
    assert source_refusal(None, "https://x/y.zip", None) is None
    assert "one way" in (source_refusal(None, None, None) or "")
    assert "`dataset_url` and `dataset_from`" in (source_refusal(None, "https://x", "j1") or "")


def test_job_ids_parse_or_are_refused_with_an_example() -> None:
    assert parse_job("j42") == parse_job("42") == parse_job("#42") == 42
    with pytest.raises(Refused, match="look like `j42`"):
        parse_job("kana")


def test_config_files_are_flat_toml() -> None:
    assert parse_extra_options("noise_offset = 0.05\nmin_snr_gamma = 5") == {"noise_offset": 0.05, "min_snr_gamma": 5}
    with pytest.raises(Refused, match="not valid TOML"):
        parse_extra_options("noise_offset = ")
    with pytest.raises(Refused, match="single value"):
        parse_extra_options("[table]\nx = 1")
