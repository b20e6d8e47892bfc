"""What the Chromium page tests share: the servers and a browser page, Streamlit's error
elements, waiting."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

from tests.support import backend_server, frontend_server

CHROMIUM = "/usr/bin/chromium"
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def chromium(pw: Playwright, height: int = 1000) -> BrowserContext:
    """Debian's headless Chromium, 1400 px wide: the app's wide layout, the map beside its panel."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    return browser.new_context(viewport={"width": 1400, "height": height})


@contextlib.contextmanager
def browser_page(
    data: Path, log: Path, launch: Callable[[Playwright], BrowserContext] = chromium
) -> Iterator[tuple[str, str, Page]]:
    """The backend on the data folder `data`, the app on it (its output in `log`) and a page of
    the browser `launch` opens: (backend URL, app URL, page).

    Pages that need more (a taller window, WebGL) pass their own `launch`.
    """
    assert Path(CHROMIUM).exists(), "chromium is missing: `make test` installs it"
    with (
        backend_server(data) as api,
        frontend_server(api, log) as app,
        sync_playwright() as pw,
    ):
        context = launch(pw)
        try:
            yield api, app, context.new_page()
        finally:
            # A persistent context is its own browser (no `browser`); a plain one's is closed too.
            browser = context.browser
            context.close()
            if browser is not None:
                browser.close()


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
