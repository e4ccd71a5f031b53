"""axe-core on every page type of a small built site, at desktop and phone widths."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

# One page of each kind the site makes ({level}/{code}: the first organisation of the build).
PAGE_TYPES = {
    "home": "index.html",
    "organisations": "orgs/index.html",
    "organisation": "orgs/{level}/{code}/index.html",
    "region (lists its ICBs)": "orgs/region/{region}/index.html",
    "ICB (lists its sub-ICB locations)": "orgs/icb/{icb}/index.html",
    "ICB theme": "orgs/icb/{icb}/antimicrobials.html",
    "summary": "orgs/{level}/{code}/summary.html",
    "organisation theme": "orgs/{level}/{code}/antimicrobials.html",
    "themes": "themes/index.html",
    "theme": "themes/antimicrobials.html",
    "about": "about.html",
    "methodology": "methodology.html",
    "indicator method": "methodology/AMR01.html",
    "downloads and data dictionary": "downloads.html",
    "file API documentation": "api.html",
    "indicator": "indicators/{level}/AMR01.html",
}
FAILING_IMPACTS = ("serious", "critical")

RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return {version: axe.version, violations: result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    targets: v.nodes.map(n => n.target.join(' '))}))};
}"""


def page_path(kind: str, built_site: dict) -> str:
    # The run's sub-ICB locations bring their ICBs' and regions' pages: take the first of each.
    first = {level: sorted(p.name for p in (built_site["site"] / "orgs" / level).iterdir())[0]
             for level in ("icb", "region") if (built_site["site"] / "orgs" / level).is_dir()}
    return PAGE_TYPES[kind].format(level=built_site["level"], code=built_site["codes"][0],
                                   icb=first.get("icb", "none"), region=first.get("region", "none"))


@pytest.mark.parametrize("width", [1280, 360])
@pytest.mark.parametrize("kind", list(PAGE_TYPES))
def test_no_serious_accessibility_violations(browser, axe_source, kind, width, built_site, site_url):
    rel = page_path(kind, built_site)
    assert (built_site["site"] / rel).is_file(), f"the build made no {kind} page at {rel}"
    context = browser.new_context(viewport={"width": width, "height": 900})
    try:
        page = context.new_page()
        response = page.goto(site_url + rel)
        assert response is not None and response.ok, f"{rel}: HTTP {response and response.status}"
        page.add_script_tag(content=axe_source)
        report = page.evaluate(RUN_AXE)
    finally:
        context.close()
    failing = [v for v in report["violations"] if v["impact"] in FAILING_IMPACTS]
    details = "\n".join(
        f"  {v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["targets"][:10])
        + (f"\n    ... and {len(v['targets']) - 10} more" if len(v["targets"]) > 10 else "")
        for v in failing)
    assert not failing, f"axe-core {report['version']} on {rel} at {width} px:\n{details}"


def test_a_wide_table_scrolls_from_the_keyboard_on_a_phone(browser, built_site, site_url):
    """The home page's England table is wider than a 360 px screen: Tab reaches its
    scrolling region and the arrow keys scroll it."""
    context = browser.new_context(viewport={"width": 360, "height": 800})
    try:
        page = context.new_page()
        page.goto(site_url + "index.html")
        wide = page.evaluate("""() => [...document.querySelectorAll('.moopt-table-scroll')]
            .findIndex(el => el.scrollWidth > el.clientWidth + 10)""")
        assert wide >= 0, "no table on the home page is wider than a 360 px screen"
        region = page.locator(".moopt-table-scroll").nth(wide)
        assert region.get_attribute("role") == "region" and region.get_attribute("aria-label")
        for _ in range(200):  # Tab through the page until the region has the focus
            page.keyboard.press("Tab")
            if region.evaluate("el => el === document.activeElement"):
                break
        else:
            pytest.fail("Tab never reached the wide table's scrolling region")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "i => document.querySelectorAll('.moopt-table-scroll')[i].scrollLeft > 0", arg=wide)
    finally:
        context.close()


def test_a_page_opened_from_the_file_system_is_styled(browser, built_site):
    """The site works without a server: a file:// page finds its stylesheet."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto((built_site["site"] / "orgs" / built_site["level"] / built_site["codes"][0]
                   / "summary.html").as_uri())
        colour = page.evaluate(
            "() => getComputedStyle(document.querySelector('.moopt-header')).backgroundColor")
        assert colour == "rgb(0, 94, 184)", f"the stylesheet did not load from file:// ({colour})"
        assert page.locator("h1").count() == 1
    finally:
        context.close()


def test_one_h1_and_the_notice_once_on_every_page_type(browser, built_site, site_url):
    context = browser.new_context()
    try:
        page = context.new_page()
        for kind in PAGE_TYPES:
            rel = page_path(kind, built_site)
            page.goto(site_url + rel)
            title = page.locator("h1").inner_text().strip()
            assert page.locator("h1").count() == 1, rel
            repeats = [h for h in page.locator("h2").all_inner_texts() if h.strip() == title]
            assert not repeats, f"{rel} repeats its h1 {title!r} as an h2"
            banner = page.locator(".moopt-banner").count()
            extra = page.locator(".moopt-synthetic-notice").count()
            assert banner == 1 and extra == 0, f"{rel}: {banner} banners, {extra} notebook notices"
    finally:
        context.close()
