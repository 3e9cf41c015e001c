"""Headless Chromium for the UI tests (Debian's `chromium` and `chromium-driver`), and waits that retry."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator

CHROMIUM = "/usr/bin/chromium"
# How long the browser waits for a condition. Generous: it only costs time when the page is slow (two
# cores shared with the whole Airflow stack), and every wait ends as soon as its condition holds.
TIMEOUT = 180
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1600",
)


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium with a throwaway profile, driven through chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    # No implicit wait: every lookup is an explicit wait on a condition, which finds its element again
    # on each try (React replaces elements when it renders; a held one goes stale).
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(driver, condition, message: str, timeout: float = TIMEOUT):
    """Wait until `condition(driver)` is truthy; a lookup that misses or goes stale just tries again."""
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        ElementNotInteractableException,
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    retry = (
        NoSuchElementException,
        StaleElementReferenceException,
        ElementClickInterceptedException,
        ElementNotInteractableException,
    )
    return WebDriverWait(driver, timeout, poll_frequency=0.25, ignored_exceptions=retry).until(
        condition, message
    )


def page_text(driver) -> str:
    """The text the page shows now (the body is looked up again on every call)."""
    from selenium.webdriver.common.by import By

    return until(driver, lambda d: (d.find_element(By.TAG_NAME, "body").text,), "no page body")[0]


def wait_for_text(driver, text: str, timeout: float = TIMEOUT) -> None:
    until(driver, lambda d: text in page_text(d), f"{text!r} never showed", timeout)


def wait_for_url(driver, part: str, timeout: float = TIMEOUT) -> None:
    until(driver, lambda d: part in d.current_url, f"never reached {part!r}", timeout)


def click(driver, by: str, locator: str, timeout: float = TIMEOUT) -> None:
    """Click the element once it is shown and enabled, finding it again on each try."""

    def clicked(d) -> bool:
        element = d.find_element(by, locator)
        if not (element.is_displayed() and element.is_enabled()):
            return False
        element.click()
        return True

    until(driver, clicked, f"{locator} was never clickable", timeout)


def type_into(driver, by: str, locator: str, text: str) -> None:
    """Type `text` into the field until it holds exactly that (a re-render may have eaten keys)."""

    from selenium.webdriver.common.keys import Keys

    def typed(d) -> bool:
        field = d.find_element(by, locator)
        if field.get_attribute("value") != text:
            # Select and delete rather than clear(): React only sees a change made by keys.
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(Keys.DELETE)
            field.send_keys(text)
        return d.find_element(by, locator).get_attribute("value") == text

    until(driver, typed, f"could not type into {locator}")
