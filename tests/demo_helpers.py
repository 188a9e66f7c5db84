"""Helpers of the demo tests: the ``ci`` demo run once per test session, and the headless-browser check
of a report (Debian's Chromium driven by playwright)."""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO_ROOT, in_ci


@functools.cache
def ci_demo() -> tuple[Path, subprocess.CompletedProcess]:
    """``python demo.py --preset ci`` into a fresh folder, once per session: (folder, the finished process)."""
    root = tempfile.mkdtemp(prefix="spinegan-demo-ci-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    outdir = Path(root) / "demo"
    result = subprocess.run(
        [sys.executable, "demo.py", "--outdir", str(outdir), "--preset", "ci", "--quiet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return outdir, result


def chromium() -> str:
    """The Chromium executable; the test is skipped without it, and fails in CI (where .ci/run installs it)."""
    path = shutil.which("chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        reason = "Debian's chromium and playwright's Python package are needed (apt-get install -y chromium)"
        if in_ci():
            pytest.fail(f"{reason}; CI is set, so a missing browser is an error, not a skip", pytrace=False)
        pytest.skip(reason)
    return path


@dataclass
class PageCheck:
    """What the browser saw: console errors, page errors, failed requests, every image's
    ``naturalWidth``, every video's ``readyState`` and error code, section ids, and links or sources
    that leave the folder (absolute URLs)."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[tuple[str, int]] = field(default_factory=list)
    videos: list[tuple[str, int, int | None]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)


def check_page(html: Path, executable: str) -> PageCheck:
    """Open ``html`` (a file URL) in headless Chromium and report what loaded (see :class:`PageCheck`)."""
    from playwright.sync_api import sync_playwright

    seen = PageCheck()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page()
            page.on("console", lambda m: seen.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
            page.on("requestfailed", lambda r: seen.failed_requests.append(f"{r.url}: {r.failure}"))
            page.goto(html.resolve().as_uri(), wait_until="load")
            page.wait_for_function(
                "() => [...document.querySelectorAll('video')].every(v => v.readyState >= 1 || v.error)",
                timeout=30_000,
            )
            seen.images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])"
            )
            seen.videos = page.eval_on_selector_all(
                "video", "els => els.map(e => [e.getAttribute('src'), e.readyState, e.error && e.error.code])"
            )
            seen.sections = page.eval_on_selector_all("section", "els => els.map(e => e.id)")
            seen.external = page.eval_on_selector_all(
                "[src], [href]",
                "els => els.map(e => e.getAttribute('src') || e.getAttribute('href'))"
                ".filter(u => /^([a-z]+:)?\\/\\//i.test(u))",
            )
        finally:
            browser.close()
    seen.images = [tuple(i) for i in seen.images]
    seen.videos = [tuple(v) for v in seen.videos]
    return seen
