"""Debian's headless chromium driven by selenium through Debian's chromedriver (installed by
scripts/bootstrap.sh; nothing is downloaded): the page as an operator's browser shows it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def chromium(*, token: str | None) -> Iterator[webdriver.Chrome]:
    """A headless chromium sending ``Authorization: Bearer token`` with every request."""
    assert shutil.which(CHROMEDRIVER), "chromium-driver missing: run scripts/bootstrap.sh"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        if token is not None:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd(
                "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {token}"}}
            )
        yield driver
    finally:
        driver.quit()
