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


def pdf_dictionaries(pdf: bytes) -> dict[bytes, bytes]:
    """Object number -> the object's dictionary text (up to its stream, if any) in Chromium's PDF.

    Chromium (Skia) writes plain ``N 0 obj << ... >> endobj`` objects with no object streams,
    so the page tree and the named destinations can be read without a PDF library.
    """
    objects = {}
    for piece in pdf.split(b"endobj"):
        header = None
        for header in re.finditer(rb"(?:^|\s)(\d+) 0 obj\s", piece):
            pass
        if header is not None:
            objects[header.group(1)] = piece[header.end():].split(b"stream", 1)[0]
    return objects


def pdf_page_numbers(pdf: bytes) -> dict[bytes, int]:
    """Page object number -> its page number (1-based), in the order of the catalog's page tree."""
    objects = pdf_dictionaries(pdf)
    catalog = next(body for body in objects.values() if re.search(rb"/Type\s*/Catalog\b", body))
    numbers: dict[bytes, int] = {}

    def walk(ref: bytes) -> None:
        body = objects[ref]
        if re.search(rb"/Type\s*/Pages\b", body):
            kids = re.search(rb"/Kids\s*\[([^\]]*)\]", body).group(1)
            for kid in re.findall(rb"(\d+) 0 R", kids):
                walk(kid)
        else:
            numbers[ref] = len(numbers) + 1

    walk(re.search(rb"/Pages\s+(\d+) 0 R", catalog).group(1))
    return numbers


def pdf_destination_pages(pdf: bytes, prefix: str) -> dict[str, int]:
    """Named destinations starting with ``prefix`` -> the page number each one lands on."""
    numbers = pdf_page_numbers(pdf)
    return {match.group(1).decode(): numbers[match.group(2)] for match in re.finditer(
        rb"/(" + re.escape(prefix.encode()) + rb"[\w-]*)\s*\[\s*(\d+) 0 R\s*/XYZ", pdf)}


# Chromium writes a named destination for every element an internal link points to: a probe at
# the top and one at the bottom of each chart (and hidden links to them) show where it printed.
PROBE_CHARTS = """(prefix) => {
  const links = document.createElement('div');
  links.style.display = 'none';
  document.body.append(links);
  return [...document.querySelectorAll('figure.moopt-chart')].map((figure, index) => {
    for (const [where, end] of [['afterbegin', 'top'], ['beforeend', 'bottom']]) {
      const probe = document.createElement('span');
      probe.id = `${prefix}${index}-${end}`;
      probe.style.display = 'block';
      figure.insertAdjacentElement(where, probe);
      const link = document.createElement('a');
      link.href = '#' + probe.id;
      links.append(link);
    }
    return figure.id;
  });
}"""
PROBE_PREFIX = "moopt-print-probe-"


def open_summary_for_print(page, built_site: dict, site_url: str, code: str) -> None:
    page.goto(f"{site_url}orgs/{built_site['level']}/{code}/summary.html")
    wait_for_charts(page)
    page.emulate_media(media="print")


def assert_summary_prints_on_two_pages(page, what: str) -> bytes:
    pdf = page.pdf(format="A4")
    pages = pdf_pages(pdf)
    assert 1 <= pages <= 2, f"{what} printed on {pages} A4 pages, more than 2"
    return pdf


def test_the_summary_prints_on_at_most_two_a4_pages_with_what_a_reader_needs(page, built_site, site_url):
    """Title, the "To discuss" list, the change since the previous quarter and a table of every
    indicator (value, England, verdict in words) print; controls, navigation, the spine chart
    (a one-line note stands in for it) and the list of child organisations do not."""
    for code in built_site["codes"]:
        open_summary_for_print(page, built_site, site_url, code)
        assert code in page.locator("h1").inner_text()
        for hidden in (".moopt-nav", ".moopt-skip-link", ".moopt-finder", ".moopt-breadcrumb", ".moopt-footer",
                       "#summary_spine", "a[download]", 'a[href$=".csv"]'):
            assert not page.locator(hidden).first.is_visible(), f"{hidden} prints on the summary of {code}"
        assert page.locator("ol.moopt-briefing li").first.is_visible() or page.get_by_text("Nothing stands out").is_visible()
        assert page.locator("table.moopt-quarter-changes tbody tr").first.is_visible()
        every = page.locator("table.moopt-every-indicator")
        headings = [h.strip() for h in every.locator("thead th").evaluate_all(
            "cells => cells.filter(c => c.offsetParent !== null).map(c => c.innerText)")]
        assert {"Indicator", "Value", "England", "Compared with England"} <= set(headings), headings
        rows = every.locator("tbody tr")
        assert rows.count() >= 10 and rows.evaluate_all("rows => rows.every(r => r.offsetParent !== null)")
        note = page.locator(".moopt-print-only")
        assert note.is_visible() and "web page" in note.inner_text()
        note_lines = note.evaluate("e => e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight)")
        assert note_lines < 1.5, f"the spine chart's printed note takes {note_lines:.1f} lines"
        # Another section lists the organisation's child organisations (class moopt-children): it is
        # for browsing, so it must not print however long it is.
        page.evaluate("""() => {
          const section = document.createElement('section');
          section.className = 'moopt-children';
          section.innerHTML = '<h2>Lists down</h2><table><tbody>' +
            '<tr><td>A child organisation with a long name</td><td>1.0</td></tr>'.repeat(80) + '</tbody></table>';
          document.querySelector('main').append(section);
        }""")
        assert not page.locator(".moopt-children").is_visible()
        assert_summary_prints_on_two_pages(page, f"the summary of {code}")


def test_a_summary_with_a_long_name_and_five_long_items_to_discuss_still_prints_on_two_pages(page, built_site,
                                                                                           site_url):
    """National-like lengths: the summaries of the small build have every indicator already; here the
    organisation's name is as long as the longest ICB names and the "To discuss" list has its
    maximum of five items, each as long as the longest one on the page."""
    code = built_site["codes"][0]
    open_summary_for_print(page, built_site, site_url, code)
    page.evaluate("""() => {
      const heading = document.querySelector('h1');
      heading.textContent = 'Summary: NHS Bedfordshire, Luton and Milton Keynes Integrated Care Board - M1J4Y';
      const list = document.querySelector('ol.moopt-briefing');
      const longest = [...list.children].reduce((a, b) => (b.innerHTML.length > a.innerHTML.length ? b : a));
      list.replaceChildren(...Array.from({length: 5}, () => longest.cloneNode(true)));
    }""")
    assert page.locator("ol.moopt-briefing li").count() == 5
    assert_summary_prints_on_two_pages(page, "a summary with a long name and five long items to discuss")


def test_every_theme_page_prints_every_chart_whole_on_one_page(page, built_site, site_url):
    code = built_site["codes"][0]
    folder = built_site["site"] / "orgs" / built_site["level"] / code
    themes = sorted(p.stem for p in folder.glob("*.html") if p.stem not in ("index", "summary"))
    assert themes, f"no theme pages in {folder}"
    for theme in themes:
        page.goto(f"{site_url}orgs/{built_site['level']}/{code}/{theme}.html")
        drawn = wait_for_charts(page)
        page.emulate_media(media="print")
        breaks = page.locator("figure.moopt-chart").evaluate_all(
            "figures => figures.map(f => getComputedStyle(f).breakInside)")
        assert len(breaks) >= drawn >= 3 and set(breaks) == {"avoid"}, (theme, breaks)
        figures = page.evaluate(PROBE_CHARTS, PROBE_PREFIX)
        pdf = page.pdf(format="A4")
        where = pdf_destination_pages(pdf, PROBE_PREFIX)
        assert len(where) == 2 * len(figures), f"{theme}: {len(where)} chart probes in the PDF for {len(figures)} charts"
        split = [(figure, where[f"{PROBE_PREFIX}{index}-top"], where[f"{PROBE_PREFIX}{index}-bottom"])
                 for index, figure in enumerate(figures)
                 if where[f"{PROBE_PREFIX}{index}-top"] != where[f"{PROBE_PREFIX}{index}-bottom"]]
        assert not split, f"{theme}: charts split across pages (chart, first page, last page): {split}"
        assert max(where.values()) <= pdf_pages(pdf)
