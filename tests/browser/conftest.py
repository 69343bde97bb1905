"""Browser fixtures: one pipeline and one headless Chromium (Debian's) per module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.browser.stack import ConsoleStack, console_stack

# Debian's package: Playwright's own browser download is not available everywhere we run.
CHROMIUM = os.environ.get("HOOKSTREAM_TEST_CHROMIUM", "/usr/bin/chromium")
# Screenshots of each main screen; gitignored, kept after the run for people to look at.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with console_stack(kafka_bootstrap, tmp_path_factory.mktemp("console")) as built:
        yield built


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does), or set "
            "HOOKSTREAM_TEST_CHROMIUM",
            pytrace=False,
        )
    launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def page(browser: Browser, stack: ConsoleStack) -> Iterator[Page]:
    """A fresh browser profile (no cookies) on the console, allowed to use the clipboard."""
    context = browser.new_context(base_url=stack.url, viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()
