"""`lorabot run` as a child process against the fake Discord, and its memory as the kernel reports it.

Shared by `bench.idle_rss` and `bench.ack_latency`: the bot runs in its own process exactly as an operator starts
it (only a Discord token, plus where the fake Discord listens), so the bench process, which plays Discord and its
CDN, never competes with the bot for its event loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.world.fake_discord import FakeDiscord

MIB = 1024 * 1024
LORABOT = Path(sys.executable).parent / "lorabot"


@dataclass(frozen=True)
class Memory:
    """One process's /proc/<pid>/status memory lines, in bytes (0 when the process is gone)."""

    rss: int
    hwm: int
    rss_anon: int
    rss_file: int

    @property
    def rss_mib(self) -> float:
        return self.rss / MIB

    @property
    def hwm_mib(self) -> float:
        return self.hwm / MIB


def read_memory(pid: int) -> Memory:
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return Memory(0, 0, 0, 0)
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024  # the kernel writes "<n> kB"
    return Memory(fields.get("VmRSS", 0), fields.get("VmHWM", 0), fields.get("RssAnon", 0), fields.get("RssFile", 0))


def children_memory(pid: int) -> list[tuple[int, str, Memory]]:
    """Every descendant of `pid` (sandbox pods, helpers) with its memory; empty when there are none."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            name = " ".join(child.cmdline()[:3])
        except psutil.NoSuchProcess:
            continue
        found.append((child.pid, name, read_memory(child.pid)))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bot_env(fake: FakeDiscord, data_dir: Path, **extra: str) -> dict[str, str]:
    """An operator's environment: a token and the fake's addresses; nothing inherited but PATH."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(data_dir.parent),
        "DISCORD_TOKEN": fake.bot_token,
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "LORABOT_DATA_DIR": str(data_dir),
        "LORABOT_HTTP_PORT": str(free_port()),
        **extra,
    }


async def start_bot(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    # The log goes to a file, not a pipe: nobody drains a pipe while the bench runs, and a full pipe would block
    # the bot's logging (and so its event loop) and poison the figures.
    log = (cwd / "lorabot.log").open("wb")
    try:
        return await asyncio.create_subprocess_exec(
            str(LORABOT), "run", env=env, cwd=cwd, stdout=log, stderr=log, start_new_session=True
        )
    finally:
        log.close()


async def stop_bot(process: asyncio.subprocess.Process, timeout: float = 30.0) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
    return int(process.returncode or 0)


def log_tail(cwd: Path, lines: int = 30) -> str:
    path = cwd / "lorabot.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
