"""The upload page in a real headless Chromium: /upload in the fake Discord gives a link, the browser uploads a
zip, and the dataset report lands in the user's channel; refusal pages and the cap as a browser sees them."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from tests.web.browser import chrome  # noqa: F401 - fixture
from tests.web.upload_world import UploadWorld, dataset_zip

pytestmark = pytest.mark.timeout(90)
LINK = re.compile(r"(http://127\.0\.0\.1:\d+/upload\?\S+)")


def upload_in_browser(driver: Any, link: str, zip_path: Path, timeout: float = 20) -> str:
    """Open the link, choose the file, press Upload, and return the status line once the server answered."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(link)
    driver.find_element(By.ID, "file").send_keys(str(zip_path))
    driver.find_element(By.ID, "send").click()
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, timeout).until(lambda _: status.get_attribute("class") in ("good", "bad"))
    return str(status.text)


def page_heading(driver: Any, link: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    driver.get(link)
    return driver.find_element(By.TAG_NAME, "h1").text, driver.find_element(By.ID, "reason").text


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_upload_from_discord_through_the_browser_to_the_report(
    chrome: Any,  # noqa: F811
    make_bot_world: Any,
    tmp_path: Path,
) -> None:
    """The real bot: /upload gives a one-time link, Chromium uploads the zip, the report lands in the channel."""
    port = _free_port()
    env = {"LORABOT_HTTP_PORT": str(port), "LORABOT_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    zip_path = tmp_path / "kana.zip"
    zip_path.write_bytes(dataset_zip(4))
    async with make_bot_world(env=env) as bw:
        interaction = await bw.fake.send_slash("upload", {})
        reply = await bw.fake.wait_for_reply(interaction)
        assert reply.ephemeral
        match = LINK.search(reply.content)
        assert match, reply.content

        status = await asyncio.to_thread(upload_in_browser, chrome, match.group(1), zip_path)
        assert status == "Got it: 4 images. The dataset report is in your Discord channel."
        report = await bw.fake.wait_for_message(lambda m: "Dataset uploaded: 4 images" in m.text(), timeout=20)
        assert report.content == f"<@{bw.fake.default_user.id}>"
        assert any(c.startswith("lorabot:dataset:") for c in report.custom_ids())

        heading = await asyncio.to_thread(page_heading, chrome, match.group(1))
        assert heading[0] == "This upload link was already used"


async def test_refusal_pages_in_the_browser(chrome: Any, upload_world: UploadWorld) -> None:  # noqa: F811
    expired = upload_world.link()
    upload_world.advance(3600)
    assert (await asyncio.to_thread(page_heading, chrome, expired))[0] == "This upload link has expired"

    tampered = upload_world.link(user_id=1).replace("u=1&", "u=2&")
    title, reason = await asyncio.to_thread(page_heading, chrome, tampered)
    assert title == "This upload link is not valid" and "signature does not match" in reason


async def test_an_upload_over_the_cap_is_refused_in_the_browser(
    chrome: Any,  # noqa: F811
    upload_world: UploadWorld,
    tmp_path: Path,
) -> None:
    big = tmp_path / "big.zip"
    big.write_bytes(b"PK\x03\x04" + bytes(5_000_000))
    status = await asyncio.to_thread(upload_in_browser, chrome, upload_world.link(), big)
    assert status == "The zip is 5.0 MB; the limit is 2.0 MB."
    assert upload_world.incoming_files() == [] and upload_world.ready == []
