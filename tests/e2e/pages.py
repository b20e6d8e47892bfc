"""What the Chromium page tests share: the browser's path, Streamlit's error elements, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable

from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def wait_on_page(what: str, check: Callable[[], bool], timeout: float, page: Page) -> None:
    """Poll `check` until it holds; fail at once on an error shown by the page, or at the
    timeout with a screenshot of the page (in /tmp) to see what it showed instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        no_errors(page)
        time.sleep(0.25)
    shot = f"/tmp/e2e-failure-{what[:40].replace(' ', '-').replace('/', '-')}.png"
    page.screenshot(path=shot, full_page=True)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (see {shot})")


def no_errors(page: Page) -> None:
    errors = page.locator(ERRORS)
    assert errors.count() == 0, errors.first.inner_text()
