"""Indicator pages: every organisation of a level for one indicator, linked from the theme pages."""

from __future__ import annotations

import re

import pytest
from test_site import make_outputs
from test_site_downloads import result_row, write_store

from moopt.site import build_site
from moopt.site.indicator_pages import trend_words, verdict_words


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture
def site(tmp_path):
    out, _ = make_outputs(tmp_path)
    rows = [
        result_row("A1", 1.234, org_name="Alpha", lower_95=1.1, upper_95=1.4, comparison_99_8="higher",
                   assessment_99_8="worse"),
        result_row("B2", 0.9, org_name="Beta", lower_95=0.8, upper_95=1.0, comparison_99_8="similar",
                   assessment_99_8="similar"),
        result_row("C3", None, org_name="Gamma & <Co>",
                   not_compared_reason="No value for this period (no denominator, or too few months)."),
        result_row("B2", 5.0, org_name="Beta", period="2026-08-01"),  # an earlier period: not shown
        result_row("P1", 2.0, org_level="practice", org_name="Practice one"),
        result_row("ENG", 1.0, org_level="england", org_name="England"),
        result_row("R1", 1.1, org_level="region", org_name="Region one"),
    ]
    write_store(out, rows)
    return build_site(out, renderer="builtin")["site_dir"]


def test_a_page_per_indicator_and_level_but_not_practice_or_england(site):
    pages = sorted(str(p.relative_to(site)) for p in (site / "indicators").rglob("*.html"))
    assert pages == ["indicators/region/AMR01.html", "indicators/sub_icb/AMR01.html"]


def test_the_page_lists_every_organisation_with_value_interval_verdict_and_trend(site):
    html = (site / "indicators/sub_icb/AMR01.html").read_text(encoding="utf-8")
    rows = re.findall(r"<tr>(.*?)</tr>", html.split("<tbody>")[1].split("</tbody>")[0], re.S)
    cells = [[text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]
    assert cells == [
        ["Alpha", "A1", "1.234", "1.100 to 1.400", "worse: higher than England", "not modelled"],
        ["Beta", "B2", "0.900", "0.800 to 1.000", "similar to England", "not modelled"],
        ["Gamma &amp; &lt;Co&gt;", "C3", "no value", "no interval",
         "not compared: no value for this period (no denominator, or too few months)", "not modelled"],
    ]
    assert 'class="moopt-table moopt-sortable"' in html and 'data-sort-type="number"' in html
    assert 'class="moopt-table-filter"' in html and "assets/moopt-tables.js" in html
    assert (site / "assets/moopt-tables.js").is_file()
    text = text_of(html)
    assert "National distribution" in text and "Definition" in text
    assert html.count("<h1") == 1


def test_theme_pages_link_to_the_indicator_pages(site):
    html = (site / "themes/antimicrobials.html").read_text(encoding="utf-8")
    assert 'href="../indicators/sub_icb/AMR01.html"' in html
    assert 'href="../indicators/region/AMR01.html"' in html


def test_verdicts_and_trends_in_words():
    assert verdict_words({"comparison_99_8": "lower", "assessment_99_8": "lower"}) == "lower than England"
    assert verdict_words({"comparison_99_8": "lower", "assessment_99_8": "better"}) == "better: lower than England"
    assert verdict_words({"comparison_99_8": None, "not_compared_reason": "England is the benchmark."}) \
        == "not compared: England is the benchmark"
    assert verdict_words({"comparison_99_8": None, "not_compared_reason": None}) == "not compared"
    assert trend_words({"change_per_year": 0.031, "change_per_year_lower": -0.01, "change_per_year_upper": 0.07,
                        "recent_trend": "no significant change", "trend_points": 24}) \
        == "+3.1% a year (95% CI -1.0% to +7.0%); last five months: no significant change"
    assert trend_words({"change_per_year": None, "recent_trend": "cannot be calculated", "trend_points": 13}) \
        == "too short to model"
