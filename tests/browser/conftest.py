"""Fixtures for the browser tests: one small built site, served over HTTP, read in Chromium.

The browser is Debian's Chromium (``/usr/bin/chromium``, installed by ``make setup``), driven
by Playwright through ``executable_path``: Playwright's own browser downloads are never used.
axe-core comes from ``make setup`` too (``.cache/axe-core/axe.min.js``). Each missing piece
skips the tests with the reason and the command that installs it.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from factories import copy_project

ROOT = Path(__file__).resolve().parents[2]
AXE_JS = Path(os.environ.get("MOOPT_AXE_JS", ROOT / ".cache" / "axe-core" / "axe.min.js"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
BUILD_THEMES = ("antimicrobials", "safety")
WIDTHS = (1280, 360)


def chromium_path() -> str | None:
    """The system Chromium: ``$MOOPT_CHROMIUM``, else ``chromium`` on PATH, else None."""
    configured = os.environ.get("MOOPT_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> dict:
    """A small synthetic build: two sub-ICB locations, two themes, the built-in renderer.

    Returns the ``site`` folder, the outputs folder and the two organisation codes.
    """
    from moopt.cli import main

    folder = copy_project(tmp_path_factory.mktemp("browser_project"))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["synth", "--scale", "small"]) == 0
        practice_map = folder / "outputs" / "data" / "synthetic" / "organisations" / "gp-reg-pat-prac-map.csv"
        with open(practice_map, newline="") as handle:
            codes = sorted({row["SUB_ICB_LOCATION_CODE"] for row in csv.DictReader(handle)})[:2]
        assert len(codes) == 2, f"the small synthetic set has fewer than 2 sub-ICB locations: {codes}"
        assert main(["build", "--level", "sub_icb", "--orgs", ",".join(codes),
                     "--themes", ",".join(BUILD_THEMES), "--renderer", "builtin"]) == 0
    finally:
        os.chdir(cwd)
    outputs = folder / "outputs"
    return {"site": outputs / "site", "outputs": outputs, "codes": codes, "level": "sub_icb"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def site_url(built_site):
    """The built site served by ``python -m http.server`` on a free localhost port."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(built_site["site"])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "index.html", timeout=2) as response:
                    assert response.status == 200
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"python -m http.server did not start on port {port}") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (skipped with the reason when absent)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package playwright is not installed: run `make setup`")
    executable = chromium_path()
    if executable is None:
        where = (f"MOOPT_CHROMIUM={os.environ['MOOPT_CHROMIUM']} is not a file"
                 if os.environ.get("MOOPT_CHROMIUM") else "no `chromium` on PATH")
        pytest.skip(f"Chromium is not installed ({where}): run `make setup` as root, "
                    "or `apt-get install chromium`, or set MOOPT_CHROMIUM to its path")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser):
    """A fresh page (own context, downloads accepted) at the desktop width."""
    context = browser.new_context(viewport={"width": WIDTHS[0], "height": 900}, accept_downloads=True)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="session")
def axe_source() -> str:
    """The text of axe.min.js (skipped with the reason when absent)."""
    if not AXE_JS.is_file():
        pytest.skip(f"axe-core is not installed at {AXE_JS}: run `make setup` (it fetches axe-core "
                    "with npm) or set MOOPT_AXE_JS to an axe.min.js")
    return AXE_JS.read_text(encoding="utf-8")
