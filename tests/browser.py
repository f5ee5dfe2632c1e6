"""Headless Debian Chromium rendering a page on loopback: its DOM after the scripts ran, and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# Without the background-networking flags Chromium keeps trying hosts this sandbox cannot reach.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1400,1000"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise AssertionError("the browser tests need Debian's chromium: `make test` installs it "
                             "(apt-get install chromium)")
    return found


def render(url: str, profile: Path, screenshot: Path | None = None, wait_ms: int = 20_000) -> str:
    """The page's DOM once its scripts settled (at most ``wait_ms`` of virtual time); a PNG too if asked."""
    base = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    if screenshot is not None:
        subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    return dom
