"""The caption editor in a real headless Chromium (a phone-sized window), end to end through the real bot and fake
Discord: /caption tags a dataset on the CPU pod, the Edit captions button gives a one-time link, the browser edits
two captions, removes a tag everywhere and saves a new dataset, then /train dataset_from the new hash trains on it,
and the job's captions read back from the volume are the edited ones."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp import web

from jobs.captions import WD14_REPO
from jobs.states import JobStatus
from tests.agent.world import standin_hub
from tests.e2e.test_discord_caption_only import EDITOR_LINK, editor_env
from tests.e2e.test_discord_captions import captionless_zip
from tests.web.browser import chrome  # noqa: F401 - fixture
from tests.web.editor_world import EditorWorld
from tests.world.wd14_model import tiny_wd14_onnx

pytestmark = pytest.mark.timeout(240)


def edit_in_browser(driver: Any, link: str, timeout: float = 20) -> dict[str, Any]:
    """Open the editor, edit the first two captions, remove the most common tag everywhere (after checking the
    filter shows exactly the images that carry it), save; returns what the page showed and sent."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(link)
    opened = len(driver.find_elements(By.CSS_SELECTOR, "#grid figure"))
    # A reload (or a phone browser reloading the tab) keeps the editor: the same browser may open its link again.
    driver.refresh()
    cards = driver.find_elements(By.CSS_SELECTOR, "#grid figure")
    WebDriverWait(driver, timeout).until(
        lambda d: all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
            for i in d.find_elements(By.CSS_SELECTOR, "#grid img")
        )
    )
    images = driver.find_elements(By.CSS_SELECTOR, "#grid img")
    sources = [str(img.get_attribute("src")) for img in images]
    natural = [int(driver.execute_script("return arguments[0].naturalWidth", img)) for img in images]
    page_width = int(driver.execute_script("return document.documentElement.scrollWidth"))
    window_width = int(driver.execute_script("return window.innerWidth"))
    boxes = [c.find_element(By.TAG_NAME, "textarea") for c in cards]
    before = [str(b.get_attribute("value")) for b in boxes]

    # The tag filter: "with <tag>" shows exactly the images whose caption has it, "without" the others.
    counts: dict[str, int] = {}
    for caption in before:
        for tag in {t.strip() for t in caption.split(",")[2:] if t.strip()}:
            counts[tag] = counts.get(tag, 0) + 1
    common = max(sorted(counts), key=lambda t: counts[t])
    driver.find_element(By.ID, "filter-tag").send_keys(common)
    shown_with = sum(1 for c in cards if c.is_displayed())
    driver.find_element(By.CSS_SELECTOR, "#filter-mode option[value=without]").click()
    shown_without = sum(1 for c in cards if c.is_displayed())
    driver.find_element(By.ID, "filter-tag").clear()
    driver.execute_script("document.getElementById('filter-tag').dispatchEvent(new Event('input'))")

    # Two captions edited by hand, then the common tag removed from every image.
    boxes[0].clear()
    boxes[0].send_keys("kana, girl, hand edited one, " + common)
    boxes[1].clear()
    boxes[1].send_keys("kana, girl, hand edited two")
    driver.find_element(By.ID, "remove-tag").send_keys(common)
    driver.find_element(By.ID, "remove").click()
    # And one tag renamed everywhere: "girl" (the class word, second in every caption) becomes "woman".
    driver.find_element(By.ID, "rename-from").send_keys("girl")
    driver.find_element(By.ID, "rename-to").send_keys("woman")
    driver.find_element(By.ID, "rename").click()
    after = [str(b.get_attribute("value")) for b in boxes]
    driver.find_element(By.ID, "save").click()
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, timeout).until(lambda _: status.get_attribute("class") in ("good", "bad"))
    return {
        "sources": sources,
        "natural": natural,
        "page_width": page_width,
        "window_width": window_width,
        "before": before,
        "after": after,
        "common": common,
        "common_count": counts[common],
        "shown_with": shown_with,
        "shown_without": shown_without,
        "status": str(status.text),
        "status_class": status.get_attribute("class"),
        "paths": [str(c.get_attribute("data-path")) for c in cards],
        "opened": opened,
        "reloaded_title": str(driver.title),
    }


async def test_caption_then_edit_in_the_browser_then_train_on_the_edited_dataset(
    chrome: Any,  # noqa: F811
    make_bot_world: Any,
) -> None:
    standin_hub().repos[WD14_REPO]["model.onnx"] = tiny_wd14_onnx()
    async with make_bot_world(env=editor_env()) as bw:
        interaction = await bw.fake.send_slash(
            "caption", {"dataset": ("kana.zip", captionless_zip(6)), "trigger": "kana", "class_word": "girl"}
        )
        plan = await bw.fake.wait_for_reply(interaction, timeout=30)
        thread = await bw.confirm(plan)
        caption_job = bw.latest_job_id()
        await bw.wait_for_status(caption_job, lambda s: s.is_terminal())
        assert bw.world.status(caption_job) is JobStatus.SUCCEEDED, bw.world.describe()
        final = await bw.wait_for_thread_message(thread, lambda m: "captions done" in m.text())
        [edit_id] = [c for c in final.custom_ids() if c.endswith(":edit")]
        old_sha = edit_id.split(":")[2]

        click = await bw.fake.click(final, edit_id)
        reply = await bw.fake.wait_for_reply(click, timeout=10)
        link = EDITOR_LINK.search(reply.content)
        assert reply.ephemeral and link is not None, reply.content

        seen = await asyncio.to_thread(edit_in_browser, chrome, link.group(1))
        assert seen["status_class"] == "good", seen["status"]
        assert seen["opened"] == len(seen["paths"]) == 6, f"reloading showed {seen['reloaded_title']!r}"
        # Only thumbnails, small ones, and a page no wider than the phone.
        assert all("/captions/thumb?" in src for src in seen["sources"]) and len(seen["sources"]) == 6
        assert max(seen["natural"]) <= 192
        assert seen["page_width"] <= seen["window_width"]
        assert seen["shown_with"] == seen["common_count"] and seen["shown_without"] == 6 - seen["common_count"]
        common = seen["common"]
        assert all(common not in [t.strip() for t in a.split(",")] for a in seen["after"])
        assert seen["after"][0] == "kana, woman, hand edited one" and seen["after"][1] == "kana, woman, hand edited two"
        assert all(a.startswith("kana, woman") for a in seen["after"])

        found = re.search(r"sha256:([0-9a-f]{64})", seen["status"])
        assert found is not None, seen["status"]
        new_sha = found.group(1)
        assert new_sha != old_sha and bw.runtime.caption_editor is not None
        assert bw.runtime.caption_editor.saved == [new_sha]
        # Saved: the link is done, even in the browser that opened it.
        again = await asyncio.to_thread(lambda: (chrome.get(link.group(1)), chrome.find_element("tag name", "h1").text))
        assert again[1] == "This caption editor link was already used"

        # /train on the edited dataset: nothing to tag, and the job trains on the edited captions.
        trained = await bw.train(
            None,
            name="edited",
            dataset_from=f"sha256:{new_sha}",
            trigger="kana",
            class_word="girl",
            epochs=1,
            repeats=1,
        )
        assert "tagged on the CPU pod" not in trained.text(), trained.text()
        await bw.confirm(trained)
        job_id = bw.latest_job_id()
        assert job_id != caption_job
        await bw.wait_for_status(job_id, lambda s: s.is_terminal())
        assert bw.world.status(job_id) is JobStatus.SUCCEEDED, bw.world.describe()
        assert bw.world.running_pods() == []

        [volume] = bw.world.emulator.volumes()
        data = bw.world.emulator.volume_path(volume.id) / "lorabot" / "jobs" / f"j{job_id}" / "data"
        trained_captions = {
            p.relative_to(data).with_suffix(".png").as_posix(): p.read_text().strip() for p in data.rglob("*.txt")
        }
        assert trained_captions == dict(zip(seen["paths"], seen["after"], strict=True))


async def test_a_link_followed_from_another_site_survives_a_reload(chrome: Any, editor_world: EditorWorld) -> None:  # noqa: F811
    """The editor link is clicked on another site (Discord): the reload that follows still opens the editor in that
    browser (a SameSite=Strict cookie would not be sent then)."""
    link = editor_world.link()
    app = web.Application()
    app.router.add_get("/", lambda _: web.Response(text=f'<a id="go" href="{link}">edit</a>', content_type="text/html"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def follow_and_reload() -> list[str]:
        from selenium.webdriver.support.ui import WebDriverWait

        chrome.delete_all_cookies()
        chrome.get(f"http://localhost:{port}/")  # localhost and 127.0.0.1 are different sites
        chrome.find_element("id", "go").click()
        WebDriverWait(chrome, 10).until(lambda d: "/captions?" in d.current_url)
        titles = [chrome.find_element("tag name", "h1").text]
        chrome.refresh()
        titles.append(chrome.find_element("tag name", "h1").text)
        return titles

    try:
        titles = await asyncio.to_thread(follow_and_reload)
    finally:
        await runner.cleanup()
    assert titles == ["Edit captions", "Edit captions"], titles
