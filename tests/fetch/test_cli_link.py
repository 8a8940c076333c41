"""`lorabot plan` takes a link wherever it takes a zip, through the same guard and caps."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from unittest import mock

import pytest

from bot.cli import EXIT_OK, EXIT_REFUSED, main
from tests.fetch.https_world import HttpsWorld
from tests.world.lorabot_world import dataset_zip


async def test_plan_downloads_a_link_and_plans_it(
    https_world: HttpsWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    https_world.zip_bytes = dataset_zip(4, size=512)
    ca = tmp_path / "ca.pem"
    https_world.ca.cert_pem.write_to_path(str(ca))
    env = {"SSL_CERT_FILE": str(ca), "LORABOT_FETCH_ALLOW_NETWORKS": '["127.0.0.1/32"]'}
    url = f"https://127.0.0.1:{https_world.port}/files/data.zip"
    with mock.patch.dict(os.environ, env):
        code = await asyncio.to_thread(main, ["plan", url, "--trigger", "kana", "--class-word", "1girl", "--json"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert '"steps":' in out and "downloading https://127.0.0.1" in err


async def test_plan_refuses_a_private_address_without_an_allow_list(
    https_world: HttpsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    with mock.patch.dict(os.environ, {"LORABOT_FETCH_ALLOW_NETWORKS": ""}):
        code = await asyncio.to_thread(main, ["plan", f"https://127.0.0.1:{https_world.port}/files/data.zip"])
    err = capsys.readouterr().err
    assert code == EXIT_REFUSED
    assert "lorabot plan: refused: dataset link: Refused: the link points at 127.0.0.1, a loopback address" in err
    assert https_world.log.requests == []
