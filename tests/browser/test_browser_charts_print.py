"""Charts drawn in Chromium (tooltips, file://), indicator tables sorted and filtered, and print."""

from __future__ import annotations

import re

import duckdb
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

ALL_DRAWN = ("document.querySelectorAll('.moopt-vega').length > 0 && document.querySelectorAll('.moopt-vega')"
             ".length === document.querySelectorAll('.moopt-vega-ready, .moopt-vega-failed').length")


def wait_for_charts(page) -> int:
    page.wait_for_function(ALL_DRAWN, timeout=60_000)
    assert page.locator(".moopt-vega-failed").count() == 0
    drawn = page.locator(".moopt-vega-ready").count()
    # Vega marks its container (the view inside each holder) as the graphics document, around the SVG.
    assert page.locator(".moopt-vega-ready [role=graphics-document] > svg").count() == drawn
    return drawn


def level_names(built_site: dict) -> set[str]:
    con = duckdb.connect(str(built_site["outputs"] / "store" / "moopt.duckdb"), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT DISTINCT org_name FROM indicator_results WHERE org_level = ?",
                                          [built_site["level"]]).fetchall()}
    finally:
        con.close()


def test_theme_page_charts_draw_and_a_funnel_point_has_a_tooltip_naming_an_organisation(page, built_site, site_url):
    code = built_site["codes"][0]
    page.goto(f"{site_url}orgs/{built_site['level']}/{code}/antimicrobials.html")
    assert wait_for_charts(page) >= 3
    funnel = page.locator("figure#AMR01_funnel .moopt-vega-ready svg")
    funnel.scroll_into_view_if_needed()
    names = level_names(built_site)
    points = funnel.locator("g.mark-symbol path")
    assert points.count() > 0
    tooltip = page.locator("#vg-tooltip-element")
    found = None
    for index in range(points.count()):
        box = points.nth(index).bounding_box()
        if not box:
            continue
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_timeout(150)
        if tooltip.count() and tooltip.is_visible():
            text = tooltip.inner_text()
            found = next((name for name in names if name in text), None)
            if found:
                break
    assert found, f"no funnel point showed a tooltip naming one of {sorted(names)}"


def test_a_theme_page_opened_from_a_file_draws_its_charts(page, built_site):
    code = built_site["codes"][0]
    path = built_site["site"] / "orgs" / built_site["level"] / code / "safety.html"
    page.goto(path.resolve().as_uri())
    assert wait_for_charts(page) >= 3


def test_indicator_table_sorts_by_keyboard_and_filters(page, built_site, site_url):
    page.goto(f"{site_url}indicators/{built_site['level']}/AMR01.html")
    table = page.locator("table.moopt-sortable")
    value_heading = table.locator("thead th").nth(2)
    button = value_heading.get_by_role("button")
    button.focus()
    page.keyboard.press("Enter")
    assert value_heading.get_attribute("aria-sort") == "ascending"
    values = [float(v) for v in table.locator("tbody tr td:nth-child(3)").evaluate_all(
        "cells => cells.map(c => c.getAttribute('data-sort')).filter(v => v !== null)")]
    assert values == sorted(values) and len(values) >= 2
    page.keyboard.press("Space")
    assert value_heading.get_attribute("aria-sort") == "descending"
    codes = table.locator("tbody tr td:nth-child(2)").all_inner_texts()
    search = page.get_by_label(re.compile("^Filter .* by name or code$"))
    search.fill(built_site["codes"][1])
    assert table.locator("tbody tr:visible").count() == 1
    assert page.locator(".moopt-table-count").inner_text() == f"1 of {len(codes)} shown"


def pdf_pages(pdf: bytes) -> int:
    """Pages of a PDF: its /Type /Page objects (not the /Pages tree nodes)."""
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


def test_the_summary_prints_on_at_most_four_a4_pages_without_navigation(page, built_site, site_url):
    """At most 4 A4 pages, not 2: the spine chart has a fixed-height row for every indicator (about
    2.4 A4 pages tall at a readable size, src/moopt/charts/spine.py), so it cannot print unsplit
    and the print stylesheet leaves it out; the table of every indicator (the same values and
    verdicts) prints instead. With the "To discuss" list and the change since the previous quarter
    (about 30 rows) and that table (about 40 rows), the summary of the small build prints on 4."""
    code = built_site["codes"][0]
    page.goto(f"{site_url}orgs/{built_site['level']}/{code}/summary.html")
    wait_for_charts(page)
    page.emulate_media(media="print")
    assert not page.locator(".moopt-nav").is_visible() and not page.locator(".moopt-skip-link").is_visible()
    assert not page.locator("#summary_spine").is_visible()
    assert page.locator(".moopt-print-only").first.is_visible()
    pdf = page.pdf(format="A4")
    assert 1 <= pdf_pages(pdf) <= 4, pdf_pages(pdf)
