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
    """Site-relative paths of the pages shown, from the site's own page files.

    The summary, theme and indicator pages are of the run's own level (the one with the most
    summaries); the organisation page is the first one above it that lists organisations within it,
    and the theme overview is that theme's page with every organisation against every indicator.
    """
    site = Path(site)
    summaries = sorted(site.glob("orgs/*/*/summary.html"))
    if not summaries:
        raise FileNotFoundError(f"{site} has no organisation summary page: build a site first.")
    counts: dict[str, int] = {}
    for path in summaries:
        counts[path.parent.parent.name] = counts.get(path.parent.parent.name, 0) + 1
    level = max(counts, key=lambda lv: (counts[lv], lv))
    summary = next(p for p in summaries if p.parent.parent.name == level)
    themes = sorted(p for p in summary.parent.glob("*.html") if p.name not in ("summary.html", "index.html"))
    indicators = sorted((site / "indicators" / level).glob("*.html"))
    if not themes or not indicators:
        raise FileNotFoundError(f"{site} has no theme page for {summary.parent.name} or no indicator page "
                                f"at level {level}.")
    chosen = {"home": site / "index.html", "summary": summary, "theme": themes[0], "indicator": indicators[0]}
    listing = [p for lv in ("icb", "region", "sub_icb") for p in sorted(site.glob(f"orgs/{lv}/*/index.html"))
               if "moopt-children" in p.read_text(encoding="utf-8")]
    if listing:
        chosen["organisation"] = listing[0]
    # The theme overview with the most indicators (columns) shows the most.
    overviews = [p for p in sorted((site / "themes").glob("*.html")) if "moopt-overview" in p.read_text(encoding="utf-8")]
    if overviews:
        chosen["overview"] = max(overviews, key=lambda p: p.read_text(encoding="utf-8").count('scope="col"'))
    return {name: str(path.relative_to(site)) for name, path in chosen.items()}


def take_screenshots(site: Path, folder: Path, chromium: str | None = None) -> dict[str, Path]:
    """Write ``home.png``, ``summary.png``, ``theme.png``, ``indicator.png`` and, where the site has
    them, ``organisation.png`` (a page listing the organisations within it) and ``overview.png`` (a
    theme's organisations x indicators table) into ``folder``."""
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
                elif name == "overview":  # the organisations x indicators table of the run's own level
                    page.locator("section.moopt-overview").last.scroll_into_view_if_needed()
                elif name == "organisation":  # the organisations within it
                    page.locator("section.moopt-children").first.scroll_into_view_if_needed()
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
