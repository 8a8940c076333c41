"""A server that trickles bytes just inside the read timeout cannot hold a download (or its temp file) forever.

The settings are the operator's (`FetchSettings`, made small so the tests are quick); the server is a raw local
socket that answers as slowly as a hostile host would, reached through a public-looking address (the allow-list
stays empty).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from jobs.fetch import FetchError, FetchTransport, SsrfGuard, StaticResolver, fetch_dataset
from jobs.fetch.settings import FetchSettings, fetch_options

PUBLIC_LOOKING_IP = "93.184.216.34"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nContent-Length: 1000000\r\n\r\n"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def trickle_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Headers at once, then one byte every 0.1 s: never silent for a read timeout, never done."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(HEAD + b"PK\x03\x04")
    for _ in range(600):
        await asyncio.sleep(0.1)
        writer.write(b"\0")
        await writer.drain()


async def trickle_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The status line and headers themselves, a byte every 0.1 s (and then headers without end)."""
    await reader.readuntil(b"\r\n\r\n")
    for byte in HEAD[:-2] + b"X-Pad: " + b"a" * 600:
        await asyncio.sleep(0.1)
        writer.write(bytes([byte]))
        await writer.drain()


async def slow_redirects(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Every answer is a redirect to the next hop, each 0.4 s late: no single wait is long, the chain is."""
    request = await reader.readuntil(b"\r\n\r\n")
    hop = int(request.split(b" ", 2)[1].rsplit(b"/", 1)[1] or b"0")
    await asyncio.sleep(0.4)
    writer.write(
        f"HTTP/1.1 302 Found\r\nLocation: /hop/{hop + 1}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()


class SlowServer:
    def __init__(self) -> None:
        self.port = 0
        self.handler: Handler = trickle_body
        self.tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest_asyncio.fixture
async def slow_server() -> AsyncIterator[SlowServer]:
    found = SlowServer()
    server = await asyncio.start_server(found._serve, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    yield found
    server.close()
    for task in found.tasks:
        task.cancel()


def small_settings(**overrides: object) -> FetchSettings:
    values: dict[str, object] = {
        "allow_http": True,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 0.5,
        "total_timeout_s": 1.5,
        "min_rate_kb_s": 10.0,
        "max_redirects": 10,
    }
    values.update(overrides)
    return FetchSettings.model_validate(values)


async def refused_download(server: SlowServer, folder: Path, settings: FetchSettings, path: str) -> FetchError:
    """Download from the slow server with the operator's settings; the folder holds a file the user owns already."""
    folder.mkdir()
    (folder / "keep.txt").write_text("untouched")
    options = fetch_options(settings)
    assert options["guard"].allow == ()
    options["guard"] = SsrfGuard(resolver=StaticResolver({"slow.example.net": [PUBLIC_LOOKING_IP]}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(FetchError) as caught:
        await fetch_dataset(
            f"http://slow.example.net:{server.port}{path}",
            folder / "dataset.zip",
            max_bytes=10_000_000,
            transport=FetchTransport(dial_overrides={PUBLIC_LOOKING_IP: "127.0.0.1"}),
            **options,
        )
    assert loop.time() - started < settings.total_timeout_s + 2, "the deadline did not hold"
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"], "the temp file must be gone"
    assert (folder / "keep.txt").read_text() == "untouched"
    assert "Traceback" not in str(caught.value)
    return caught.value


async def test_a_body_below_the_minimum_rate_is_stopped(slow_server: SlowServer, tmp_path: Path) -> None:
    slow_server.handler = trickle_body
    error = await refused_download(slow_server, tmp_path / "dl", small_settings(total_timeout_s=30), "/x.zip")
    assert error.code == "too_slow"
    assert str(error).startswith(f"The download from slow.example.net:{slow_server.port}/x.zip was stopped: it arrived")
    assert "below the minimum of 10.0 kB/s" in str(error)
    assert str(error).endswith("Put the zip on a faster host (Hugging Face, Google Drive, Dropbox) and try again.")


async def test_with_the_rate_check_off_the_deadline_still_stops_a_trickle(
    slow_server: SlowServer, tmp_path: Path
) -> None:
    slow_server.handler = trickle_body
    error = await refused_download(slow_server, tmp_path / "dl", small_settings(min_rate_kb_s=0), "/x.zip")
    assert error.code == "too_slow"
    assert str(error).startswith(
        f"The download from slow.example.net:{slow_server.port}/x.zip was stopped: it did not finish within 1.5 s"
        " (the limit for one download; "
    )


async def test_headers_sent_a_byte_at_a_time_meet_the_deadline(slow_server: SlowServer, tmp_path: Path) -> None:
    slow_server.handler = trickle_headers
    error = await refused_download(slow_server, tmp_path / "dl", small_settings(), "/x.zip")
    assert error.code == "too_slow"
    assert "did not finish within 1.5 s" in str(error) and "0 bytes had arrived" in str(error)


async def test_a_chain_of_slow_redirects_meets_the_deadline(slow_server: SlowServer, tmp_path: Path) -> None:
    slow_server.handler = slow_redirects
    error = await refused_download(slow_server, tmp_path / "dl", small_settings(), "/hop/0")
    assert error.code == "too_slow"
    assert f"slow.example.net:{slow_server.port}/hop/" in str(error)


@pytest.mark.parametrize(("setting", "value"), [("total_timeout_s", 0), ("total_timeout_s", -1), ("min_rate_kb_s", -5)])
def test_impossible_limits_are_refused_by_the_settings(setting: str, value: float) -> None:
    with pytest.raises(ValueError, match=setting):
        small_settings(**{setting: value})
