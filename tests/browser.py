"""Debian's headless Chromium, driven by Playwright, showing MLflow UI pages on loopback as a reviewer sees them.

Playwright drives the system's browser (``make browser`` installs it); it downloads none of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS_ENV = "CRNN_TEST_ARTIFACTS"  # where tests leave what a person looks at afterwards (screenshots)
# Without the background-networking flags Chromium keeps trying hosts this sandbox cannot reach.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
VIEWPORT = {"width": 1800, "height": 1000}
# MLflow 3.17's UI opens its assistant panel over the page on a first visit from loopback; these are its
# local-storage flags (mlflow/server/js/build, "mlflow.assistant.panelOpen"), set as a returning user has them.
_CLOSED_ASSISTANT = ("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                     "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise AssertionError("the browser tests need Debian's chromium: `make test` installs it "
                             "(apt-get install chromium)")
    return found


def artifacts_dir(name: str) -> Path:
    """``$CRNN_TEST_ARTIFACTS/<name>`` (default ``outputs/test-artifacts/<name>``). Not emptied: the tests of
    one module may run in two workers at once; each file is rewritten whole."""
    folder = Path(os.environ.get(ARTIFACTS_ENV) or ROOT / "outputs" / "test-artifacts") / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def browser() -> Iterator:
    """A Playwright browser on the system's Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def open_page(launched, url: str, shown: str, timeout_ms: int = 60_000):
    """A new page of ``url`` in a fresh context, once ``shown`` (a Playwright selector) is visible. (The UI polls
    the server, so its network never goes idle: what a test checks it waits for with ``expect``.)"""
    context = launched.new_context(viewport=VIEWPORT)
    context.add_init_script(_CLOSED_ASSISTANT)
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector(shown, timeout=timeout_ms)
    return page
