"""`lorabot run` as an operator starts it: only a Discord token set (plus where the fake Discord is)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import socket
import sys
import urllib.request
from pathlib import Path

import pytest

from bot.launcher import main, start_report
from jobs.config import load_settings
from tests.world.fake_discord import FakeDiscord
from tests.world.lorabot_world import dataset_zip

pytestmark = pytest.mark.timeout(180)
LORABOT = Path(sys.executable).parent / "lorabot"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_lorabot_run_with_only_a_token_uses_sqlite_and_the_local_store(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DISCORD_TOKEN": fake_discord.bot_token,
        "DISCORD_API_BASE": fake_discord.api_base,
        "DISCORD_GATEWAY_URL": fake_discord.gateway_url,
        "LORABOT_DATA_DIR": str(tmp_path / "data"),
        "LORABOT_HTTP_PORT": str(_free_port()),
    }
    process = await asyncio.create_subprocess_exec(
        str(LORABOT), "run", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    try:
        await fake_discord.wait_until_connected(timeout=40)
        asked = await fake_discord.send_slash("models", {})
        reply = await fake_discord.wait_for_reply(asked, timeout=10)
        assert "illustrious-xl-v0.1" in reply.content
        assert {"train", "cost", "cancel", "status", "queue", "jobs", "retry", "lora", "models"} <= {
            c.name for c in fake_discord.commands
        }
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    log = stderr.decode()
    assert process.returncode == 0, log[-3000:]
    assert (tmp_path / "data" / "lorabot.db").is_file()
    assert "database: SQLite" in log and "artifacts: local folder" in log
    assert "cloud: sandbox" in log
    assert "real RunPod pods still need: RUNPOD_API_KEY" in log
    assert fake_discord.bot_token not in log


async def test_lorabot_run_trains_in_the_sandbox_with_the_local_store(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    """No RunPod key, no bucket: the sandbox's pods fetch everything from the bot's own artifact server."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DISCORD_TOKEN": fake_discord.bot_token,
        "DISCORD_API_BASE": fake_discord.api_base,
        "DISCORD_GATEWAY_URL": fake_discord.gateway_url,
        "LORABOT_DATA_DIR": str(tmp_path / "data"),
        "LORABOT_HTTP_PORT": str(_free_port()),
        "LORABOT_TICK_SECONDS": "0.5",
        "LORABOT_SANDBOX_TIME_SCALE": "120",
    }
    process = await asyncio.create_subprocess_exec(
        str(LORABOT), "run", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    try:
        await fake_discord.wait_until_connected(timeout=40)
        asked = await fake_discord.send_slash(
            "train",
            {
                "name": "sandy",
                "dataset": ("sandy.zip", dataset_zip(4, size=256)),
                "epochs": 2,
                "repeats": 1,
                "trigger": "kana",
                "class_word": "1girl",
            },
        )
        plan = await fake_discord.wait_for_reply(asked, timeout=30)
        assert "Sandbox" in plan.text(), plan.text()
        confirm = next(c for c in plan.custom_ids() if c.endswith(":confirm"))
        await fake_discord.wait_for_response(await fake_discord.click(plan, confirm))
        final = await fake_discord.wait_for_message(lambda m: "· done" in m.text(), timeout=120)
        link = re.search(r"\[Download the LoRA\]\((\S+?)\)", final.text())
        assert link is not None and link.group(1).startswith("http://127.0.0.1:")
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(link.group(1), timeout=10).read())
        sha = re.search(r"sha256 `([0-9a-f]{64})`", final.text())
        assert sha is not None and hashlib.sha256(body).hexdigest() == sha.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()[-3000:]


def test_start_report_names_what_real_pods_need_and_nothing_when_complete(tmp_path: Path) -> None:
    bare = load_settings(env={"DISCORD_TOKEN": "x" * 30, "LORABOT_DATA_DIR": str(tmp_path)})
    lines = start_report(bare)
    assert any("RUNPOD_API_KEY" in line and "S3_BUCKET" in line for line in lines)
    complete = load_settings(
        env={
            "DISCORD_TOKEN": "x" * 30,
            "RUNPOD_API_KEY": "rp_" + "k" * 20,
            "S3_BUCKET": "loras",
            "LORABOT_DATA_DIR": str(tmp_path),
        }
    )
    assert not any("still need" in line for line in start_report(complete))
    assert "cloud: runpod" in start_report(complete)


def test_lorabot_run_without_a_token_says_which_setting_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.setenv("LORABOT_DATA_DIR", str(tmp_path))
    assert main([]) == 2
    assert "DISCORD_TOKEN is not set" in capsys.readouterr().err
