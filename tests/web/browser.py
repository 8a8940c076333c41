"""Headless Chromium through Selenium for the upload page. Where it is missing the tests skip, saying loudly how to
install it; under `CI=true` they fail instead (CI must run every tier)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

INSTALL_HINT = (
    "Chromium and chromedriver are needed to drive the upload page in a real browser: "
    "`apt-get install -y chromium chromium-driver` (Debian; .ci/run installs them)"
)


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def chrome() -> Iterator[object]:
    paths = chromium_paths()
    if paths is None:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail("CI=true but the browser tier cannot run. " + INSTALL_HINT, pytrace=False)
        pytest.skip(INSTALL_HINT)
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (in the test extras)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = paths[0]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=412,915",
    ):  # a phone-sized window
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
