"""A real browser for the dashboard's tests: Debian's chromium, headless, driven by playwright
(its own profile under the test's tmp dir; no network but loopback is used)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


def browser_or_skip() -> None:
    """Skip without playwright or chromium; in CI (``CI`` set) their absence is a failure."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e .[test])")
    if not CHROMIUM.exists():
        missing.append("chromium (apt-get install chromium)")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"missing: {', '.join(missing)}: scripts/lab-prereqs --test installs them")
        pytest.skip(f"missing: {', '.join(missing)}")


def screenshots_dir(default: Path, test: str) -> Path:
    """Where a test keeps its screenshots: ``$CSDEPLOY_TEST_ARTIFACTS/<test>/screenshots`` when
    that is set (CI keeps the directory; pytest's tmp dirs are pruned after a few runs), else
    under ``default`` (the test's tmp dir). Made empty; the caller prints it."""
    root = os.environ.get("CSDEPLOY_TEST_ARTIFACTS")
    where = (Path(root) / re.sub(r"[^A-Za-z0-9_.-]+", "-", test) if root else default) / "screenshots"
    where.mkdir(parents=True, exist_ok=True)
    for old in where.glob("*.png"):
        old.unlink()
    return where
