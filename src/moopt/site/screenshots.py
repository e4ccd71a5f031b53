"""Screenshots of a built site for the README: home, a summary, a theme page and an indicator page.

Run after a build::

    python -m moopt.site.screenshots outputs/site docs/screenshots

It opens the pages from disk (file://) in the system's Chromium through Playwright (as the
browser tests do; set ``MOOPT_CHROMIUM`` to its path if ``chromium`` is not on PATH), waits for
the charts to draw, and writes 1280 x 800 PNGs. The summary, theme and indicator pages are those
of the first organisation in the site's page list.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

VIEWPORT = {"width": 1280, "height": 800}
CHARTS_DRAWN = ("document.querySelectorAll('.moopt-vega').length === "
                "document.querySelectorAll('.moopt-vega-ready, .moopt-vega-failed').length")


def choose_pages(site: Path) -> dict[str, str]:
    """Site-relative paths of the four pages shown, from the site's own page files."""
    site = Path(site)
    summaries = sorted(site.glob("orgs/*/*/summary.html"))
    if not summaries:
        raise FileNotFoundError(f"{site} has no organisation summary page: build a site first.")
    summary = summaries[0]
    themes = sorted(p for p in summary.parent.glob("*.html") if p.name not in ("summary.html", "index.html"))
    level = summary.parent.parent.name
    indicators = sorted((site / "indicators" / level).glob("*.html"))
    if not themes or not indicators:
        raise FileNotFoundError(f"{site} has no theme page for {summary.parent.name} or no indicator page "
                                f"at level {level}.")
    chosen = {"home": site / "index.html", "summary": summary, "theme": themes[0], "indicator": indicators[0]}
    return {name: str(path.relative_to(site)) for name, path in chosen.items()}


def take_screenshots(site: Path, folder: Path, chromium: str | None = None) -> dict[str, Path]:
    """Write ``home.png``, ``summary.png``, ``theme.png`` and ``indicator.png`` into ``folder``."""
    from playwright.sync_api import sync_playwright

    executable = chromium or os.environ.get("MOOPT_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")
    if not executable:
        raise FileNotFoundError("Chromium was not found: install it (apt-get install chromium) or set "
                                "MOOPT_CHROMIUM to its path.")
    site, folder = Path(site).resolve(), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            for name, relative in choose_pages(site).items():
                page.goto((site / relative).as_uri())
                page.wait_for_function(CHARTS_DRAWN, timeout=60_000)
                if name == "theme":  # past the header, to the first indicator's charts
                    page.locator("h3").first.scroll_into_view_if_needed()
                target = folder / f"{name}.png"
                page.screenshot(path=str(target))
                written[name] = target
        finally:
            browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m moopt.site.screenshots SITE_FOLDER OUTPUT_FOLDER", file=sys.stderr)
        return 2
    written = take_screenshots(Path(args[0]), Path(args[1]))
    print(json.dumps({name: f"{path} ({path.stat().st_size // 1024} KB)" for name, path in written.items()},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
