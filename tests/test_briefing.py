"""The summary page as a briefing: the ranked "To discuss" list and the changes since last quarter.

Every sentence is generated from stored results; these tests render the edge cases a real run
meets (nothing to discuss, England itself, 0% and 100%, short series, reasons for no verdict)
through the pure functions, and the whole section once through a small hand-made store.
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pandas as pd
import pytest

import moopt.report as report
from moopt.indicators.definitions import get_indicator
from moopt.report import (
    BRIEFING_LIMIT,
    briefing_items,
    quarter_changes,
    reason_words,
    value_with_unit,
    verdict_label,
)
from moopt.tables import TABLES

LATEST = pd.Timestamp("2026-09-01")


def row(indicator_id: str, value: float | None, **extra) -> pd.Series:
    """A latest-period row of indicator_results for one organisation."""
    base = {"indicator_id": indicator_id, "org_level": "sub_icb", "org_code": "A1", "org_name": "Alpha",
            "period": LATEST, "period_type": "rolling_12m", "value": value, "england_value": 1.0,
            "comparison_99_8": "similar", "assessment_99_8": "similar", "funnel_z": 0.5,
            "not_compared_reason": None, "cost_saving_10": None}
    base.update(extra)
    return pd.Series(base)


def trend(change: float, lower: float, upper: float, recent: str | None = None, points: int = 24) -> pd.Series:
    return pd.Series({"change_per_year": change, "change_per_year_lower": lower,
                      "change_per_year_upper": upper, "trend_points": points, "recent_trend": recent})


def items_for(latest: dict, trends: dict | None = None, spc: dict | None = None, limit: int = BRIEFING_LIMIT):
    indicators = [get_indicator(i) for i in sorted({*latest, *(trends or {}), *(spc or {})})]
    return briefing_items(indicators, latest, trends or {}, spc or {}, "sub_icb", limit)


# -- the ranked list --------------------------------------------------------------------------------


def test_nothing_to_discuss_gives_no_items():
    latest = {"AMR01": row("AMR01", 1.0), "MH01": row("MH01", 2.0),
              "DIA03": row("DIA03", 3.0, cost_saving_10=-50.0)}  # spending below the 10th percentile
    trends = {"AMR01": trend(0.05, -0.01, 0.11),  # interval includes no change
              "MH01": trend(0.30, 0.20, 0.40, "increasing")}  # neutral: no direction to worsen
    assert items_for(latest, trends) == []


def test_items_are_ranked_worse_then_signals_then_savings_then_differences():
    latest = {
        "AMR01": row("AMR01", 1.4, comparison_99_8="higher", assessment_99_8="worse", funnel_z=3.5),
        "AMR02": row("AMR02", 9.0, comparison_99_8="higher", assessment_99_8="worse", funnel_z=-5.0),
        "MH01": row("MH01", 2.0, comparison_99_8="lower", assessment_99_8="lower", funnel_z=-4.0),
        "DIA03": row("DIA03", 300.0, cost_saving_10=12345.6),
        "AMR07": row("AMR07", 80.0, comparison_99_8="higher", assessment_99_8="better", funnel_z=4.0),
    }
    trends = {"SAF04": trend(0.12, 0.05, 0.19)}  # opioids rising, lower preferred
    items = items_for(latest, trends)
    assert [(i.kind, i.indicator_id) for i in items] == [
        ("worse", "AMR02"), ("worse", "AMR01"), ("trend", "SAF04"), ("saving", "DIA03"), ("different", "MH01")]
    # Better than England is not a thing to discuss here.
    assert "AMR07" not in {i.indicator_id for i in items}
    worse = items[0].sentence
    assert worse.startswith(get_indicator("AMR02").title + " (AMR02): 9.0% of selected antibacterial items")
    assert "higher than England (1.0% of selected antibacterial items)" in worse
    assert "lower values are generally preferable" in worse
    assert "no preferred direction" in items[-1].sentence and "lower than England" in items[-1].sentence
    assert "£12,346 less in the 12 months to September 2026" in items[3].sentence
    assert "rising by 12.0% a year over the 24 months modelled (95% confidence interval +5.0% to +19.0%)" \
        in items[2].sentence


def test_every_kind_gets_a_place_before_a_kind_gets_a_second():
    worse = {f"AMR0{n}": row(f"AMR0{n}", 50.0, comparison_99_8="higher", assessment_99_8="worse", funnel_z=n)
             for n in range(1, 7)}
    latest = {**worse, "DIA03": row("DIA03", 300.0, cost_saving_10=10.0)}
    items = items_for(latest)
    assert len(items) == BRIEFING_LIMIT
    assert [i.kind for i in items] == ["worse"] * 4 + ["saving"]
    assert [i.indicator_id for i in items[:4]] == ["AMR06", "AMR05", "AMR04", "AMR03"]  # largest z first


def test_an_indicator_appears_once_with_its_highest_ranked_reason():
    latest = {"DIA03": row("DIA03", 300.0, comparison_99_8="higher", assessment_99_8="worse", funnel_z=3.2,
                           cost_saving_10=999.0)}
    items = items_for(latest, {"DIA03": trend(0.2, 0.1, 0.3)})
    assert [(i.kind, i.indicator_id) for i in items] == [("worse", "DIA03")]


def test_a_recent_trend_or_an_spc_concern_is_a_signal():
    spc = {"AMR07": pd.Series({"period": LATEST, "spc_point_type": "special_cause_concern",
                               "spc_rule": "outside_limits"}),
           "AMR01": pd.Series({"period": LATEST, "spc_point_type": "special_cause_improvement",
                               "spc_rule": "run"})}
    trends = {"SAF04": trend(math.nan, math.nan, math.nan, "increasing", points=13),
              "AMR07": trend(-0.02, -0.05, 0.01, "increasing")}  # AMR07: higher preferred, rising
    items = items_for({}, trends, spc)
    assert [(i.kind, i.indicator_id) for i in items] == [("trend", "SAF04"), ("spc", "AMR07")]
    assert "increasing over the last five months (test for trend at 99.8%)" in items[0].sentence
    assert ("the latest point on its SPC chart (September 2026) is an unusual value in the non-preferred "
            "direction against this organisation's own history (outside the process limits)") in items[1].sentence


def test_england_itself_has_no_verdict_and_says_why():
    england = row("AMR01", 1.0, org_level="england", org_code="ENG", comparison_99_8=None,
                  assessment_99_8=None, funnel_z=None, not_compared_reason="England is the benchmark.")
    assert items_for({"AMR01": england}) == []
    assert verdict_label(england) == "not compared: England is the benchmark"
    assert report.verdict_sentence(england) == "Not compared with England: England is the benchmark."


def test_reasons_read_after_a_colon():
    assert reason_words("Fewer than 3 organisations at this level have a value, too few to set funnel limits.") \
        == "fewer than 3 organisations at this level have a value, too few to set funnel limits"
    assert reason_words("QOF data are not published for this level.") == "QOF data are not published for this level"


@pytest.mark.parametrize("value, text", [(0.0, "0.0% of selected antibacterial items"),
                                         (100.0, "100.0% of selected antibacterial items")])
def test_zero_and_hundred_percent_read_naturally(value, text):
    assert value_with_unit(value, 1, "% of selected antibacterial items") == text
    latest = {"AMR02": row("AMR02", value, england_value=50.0, comparison_99_8="higher" if value else "lower",
                           assessment_99_8="worse", funnel_z=6.0)}
    (item,) = items_for(latest)
    assert f": {text} in the 12 months to September 2026" in item.sentence


def test_units_are_written_with_the_number():
    assert value_with_unit(1234.5, 2, "£ per 1,000 patients") == "£1,234.50 per 1,000 patients"
    assert value_with_unit(0.9381, 3, "items per STAR-PU") == "0.938 items per STAR-PU"
    assert value_with_unit(None, 1, "items per STAR-PU") == "no value"


# -- since the previous quarter -----------------------------------------------------------------------


def org_rows(values: dict[str, float], indicator_id: str = "AMR01", england: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame([{"indicator_id": indicator_id, "period": pd.Timestamp(p), "period_type": "rolling_12m",
                          "value": v, "england_value": england, "assessment_99_8": "similar",
                          "comparison_99_8": "similar", "not_compared_reason": None}
                         for p, v in values.items()])


def test_changes_are_differences_of_stored_values_three_months_apart():
    rows = org_rows({"2026-06-01": 0.9, "2026-07-01": 0.95, "2026-09-01": 1.1})
    rows.loc[rows.period == pd.Timestamp("2026-09-01"), "england_value"] = 0.98
    table = quarter_changes([get_indicator("AMR01")], {"AMR01": rows}, {"AMR01": LATEST})
    (only,) = table.to_dict("records")
    assert only["Indicator"] == get_indicator("AMR01").title + " (AMR01)"
    assert only["12 months to"] == "Jun 2026 → Sep 2026"
    assert (only["Earlier value"], only["Latest value"], only["Change"]) == ("0.900", "1.100", "+0.200")
    assert only["Change in England"] == "-0.020"
    assert only["Compared with England (earlier → latest)"] == "similar → similar"


def test_a_short_series_has_no_earlier_value_and_no_change():
    table = quarter_changes([get_indicator("AMR01")], {"AMR01": org_rows({"2026-09-01": 1.0})},
                            {"AMR01": LATEST})
    (only,) = table.to_dict("records")
    assert (only["Earlier value"], only["Change"], only["Change in England"]) == ("no value",) * 3
    assert only["Compared with England (earlier → latest)"] == "not compared: no value → similar"


def test_an_unchanged_value_says_so_and_england_reads_its_reason():
    rows = org_rows({"2026-06-01": 0.0, "2026-09-01": 0.0})
    rows["assessment_99_8"] = None
    rows["not_compared_reason"] = "England is the benchmark."
    (only,) = quarter_changes([get_indicator("AMR01")], {"AMR01": rows}, {"AMR01": LATEST}).to_dict("records")
    assert only["Change"] == "0.000"
    assert only["Compared with England (earlier → latest)"] == (
        "not compared: England is the benchmark → not compared: England is the benchmark")


def test_indicators_without_twelve_month_values_are_left_out():
    assert quarter_changes([get_indicator("AMR01")], {}, {"AMR01": LATEST}).empty


# -- the whole section from a store --------------------------------------------------------------------


def contract_table(con, name: str, rows: list[dict]) -> None:
    columns = TABLES[name].columns
    frame = pd.DataFrame([{c.name: r.get(c.name) for c in columns} for r in rows],
                         columns=[c.name for c in columns])
    con.register("incoming", frame)
    casts = ", ".join(f'CAST("{c.name}" AS {c.type}) AS "{c.name}"' for c in columns)
    con.execute(f"CREATE TABLE {name} AS SELECT {casts} FROM incoming")
    con.unregister("incoming")


def small_store(folder: Path, worse: bool) -> Path:
    path = folder / "store" / "moopt.duckdb"
    path.parent.mkdir(parents=True)
    key = {"org_level": "sub_icb", "org_code": "A1", "org_name": "Alpha"}
    results = [{**key, "indicator_id": "AMR01", "period": p, "period_type": "rolling_12m", "value": v,
                "england_value": 1.0, "comparison_99_8": c, "assessment_99_8": a, "funnel_z": z}
               for p, v, c, a, z in (("2026-06-01", 1.0, "similar", "similar", 0.1),
                                     ("2026-09-01", 1.4, *(("higher", "worse", 4.0) if worse
                                                          else ("similar", "similar", 0.2))))]
    with duckdb.connect(str(path)) as con:
        contract_table(con, "indicator_results", results)
        contract_table(con, "run_facts", [{"period_start": "2025-10-01", "period_end": "2026-09-01",
                                           "window_start": "2024-11-01", "period_months": 12,
                                           "org_level": "sub_icb", "synthetic": True, "whole_england": True,
                                           "has_rolling": True}])
        contract_table(con, "trends", [{**key, "indicator_id": "SAF04", "trend_points": 24,
                                        "change_per_year": 0.1, "change_per_year_lower": 0.05,
                                        "change_per_year_upper": 0.15}] if worse else [])
        contract_table(con, "spc_points", [])
    return path


@pytest.fixture
def shown(monkeypatch):
    html: list[str] = []
    monkeypatch.setattr(report, "_display", html.append)
    return html


def test_the_summary_page_shows_the_ranked_list_with_links(tmp_path, shown):
    page = report.SummaryPage(small_store(tmp_path, worse=True), tmp_path, "sub_icb", "A1")
    page.briefing(themes=["antimicrobials"])
    text = shown[-1]
    assert '<ol class="moopt-briefing">' in text and text.count("<li>") == 2
    assert text.index("(AMR01)") < text.index("(SAF04)")
    assert 'href="antimicrobials.html#AMR01"' in text  # its theme page is built
    assert "safety.html" not in text  # the safety theme page is not part of this run
    page.changes_since_previous_quarter()
    assert "similar → worse" in shown[-1] and "+0.400" in shown[-1]
    assert (tmp_path / "csv/sub_icb/A1/summary/changes_since_previous_quarter.csv").is_file()


def test_the_summary_page_says_when_nothing_stands_out(tmp_path, shown):
    page = report.SummaryPage(small_store(tmp_path, worse=False), tmp_path, "sub_icb", "A1")
    page.briefing(themes=["antimicrobials"])
    assert shown[-1].startswith("<p>Nothing stands out")
