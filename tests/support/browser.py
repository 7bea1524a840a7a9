"""Debian's headless chromium driven by selenium through Debian's chromedriver (installed by
scripts/bootstrap.sh; nothing is downloaded): the page as an operator's browser shows it."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def chromium(
    *, token: str | None, basic: tuple[str, str] | None = None, javascript: bool = True
) -> Iterator[webdriver.Chrome]:
    """A headless chromium sending ``Authorization: Bearer token`` (or basic auth of ``basic``,
    as after the browser's password prompt) with every request; ``javascript`` False blocks
    every page script, as a browser with JavaScript off."""
    assert shutil.which(CHROMEDRIVER), "chromium-driver missing: run scripts/bootstrap.sh"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        header = f"Bearer {token}" if token is not None else None
        if basic is not None:
            header = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
        if header is not None:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd(
                "Network.setExtraHTTPHeaders", {"headers": {"Authorization": header}}
            )
        yield driver
    finally:
        driver.quit()
