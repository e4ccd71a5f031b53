"""Tests for moopt.charts: the data frame is what is drawn, and the words match the data."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from moopt import charts
from moopt.charts import base as chart_base
from moopt.charts.base import NO_DATA_MESSAGE, format_value

DECILES = [f"decile_{p}" for p in range(10, 100, 10)]
PERIODS = pd.date_range("2023-01-01", periods=14, freq="MS")
SUB_ICBS = [f"S{n:02d}" for n in range(1, 21)]


# --- hand-built tidy tables ------------------------------------------------------------------
def make_indicator_table() -> pd.DataFrame:
    """Twenty sub-ICB locations x 14 rolling 12-month periods, deciles from numpy."""
    rng = np.random.default_rng(20240301)
    rows = []
    for period_index, period in enumerate(PERIODS):
        numerators = rng.integers(800, 1200, size=len(SUB_ICBS)).astype(float)
        denominators = rng.integers(9000, 11000, size=len(SUB_ICBS)).astype(float)
        if period_index == len(PERIODS) - 1:
            numerators[0], denominators[0] = 50.0, 1000.0  # S01's latest value: 5.0, the lowest
        values = numerators / denominators * 100
        england = numerators.sum() / denominators.sum() * 100
        deciles = np.quantile(values, np.arange(0.1, 1.0, 0.1))
        for code, numerator, denominator, value in zip(
            SUB_ICBS, numerators, denominators, values, strict=True
        ):
            rows.append(
                {
                    "indicator_id": "AMR02",
                    "org_level": "sub_icb",
                    "org_code": code,
                    "org_name": f"Sub-ICB {code}",
                    "period": period,
                    "period_type": "rolling_12m",
                    "numerator": numerator,
                    "denominator": denominator,
                    "value": value,
                    "multiplier": 100.0,
                    "england_value": england,
                    **dict(zip(DECILES, deciles, strict=True)),
                }
            )
    return pd.DataFrame(rows)


def make_practice_table() -> pd.DataFrame:
    """Eight practices of S01 and four of S02 in one period; one practice has no value."""
    period = PERIODS[-1]
    codes = [f"P{n:04d}" for n in range(1, 13)]
    parents = ["S01"] * 8 + ["S02"] * 4
    denominators = [1000, 2500, 4000, 6000, 8000, 10000, 12000, 0, 3000, 5000, 7000, 9000]
    values = [14.0, 9.5, 11.0, 10.2, 3.0, 10.8, 18.5, np.nan, 10, 11, 12, 9]
    return pd.DataFrame(
        {
            "indicator_id": "AMR02",
            "org_level": "practice",
            "org_code": codes,
            "org_name": [f"Practice {code}" for code in codes],
            "period": period,
            "period_type": "rolling_12m",
            "denominator": np.array(denominators, dtype=float),
            "value": values,
            "england_value": 10.0,
            "sub_icb_code": parents,
        }
    )


def make_limits(centre: float = 10.0) -> pd.DataFrame:
    """Symmetric proportion limits (per cent) around ``centre`` on a denominator grid."""
    grid = np.linspace(500, 15000, 60)
    p = centre / 100
    spread = np.sqrt(p * (1 - p) / grid) * 100
    return pd.DataFrame(
        {
            "denominator": grid,
            "lower_95": centre - 1.959964 * spread,
            "upper_95": centre + 1.959964 * spread,
            "lower_99_8": centre - 3.090232 * spread,
            "upper_99_8": centre + 3.090232 * spread,
        }
    )


def make_spc_table(points: int = 20) -> pd.DataFrame:
    periods = pd.date_range("2022-01-01", periods=points, freq="MS")
    values = np.full(points, 50.0) + np.tile([1.0, -1.0], points // 2 + 1)[:points]
    values[-1] = 70.0  # outside the upper limit
    point_type = np.array(["common_cause"] * points, dtype=object)
    point_type[-1] = "special_cause_concern"
    return pd.DataFrame(
        {
            "indicator_id": "SAF04",
            "org_code": "S01",
            "period": periods,
            "value": values,
            "mean": 51.0,
            "lower_process_limit": 45.0,
            "upper_process_limit": 57.0,
            "point_type": point_type,
        }
    )


def make_spine_summary() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "indicator_id": ["AMR01", "AMR02", "MH01", "CVD01"],
            "short_title": ["Antibacterials per STAR-PU", "Broad-spectrum %", "Antidepressants",
                            "DOACs %"],
            "value": [0.95, 9.0, 1.2, 80.0],
            "england_value": [0.85, 10.0, 1.0, 82.0],
            "minimum": [0.5, 5.0, 0.6, 60.0],
            "p25": [0.75, 8.0, 0.9, 78.0],
            "p75": [0.95, 11.0, 1.1, 86.0],
            "maximum": [1.3, 16.0, 1.5, 92.0],
            "assessment": ["worse", "better", "higher", "similar"],
            "improvement_direction": ["decrease", "decrease", "neutral", "increase"],
            "unit": ["items per STAR-PU", "%", "ADQs per STAR-PU", "%"],
        }
    )


@pytest.fixture(scope="module")
def indicator_table() -> pd.DataFrame:
    return make_indicator_table()


def lines_by_gid(chart: charts.Chart) -> dict[str, list]:
    found: dict[str, list] = {}
    for line in chart.figure.axes[0].get_lines():
        found.setdefault(line.get_gid(), []).append(line)
    return found


def collection_by_gid(chart: charts.Chart, gid: str) -> PathCollection:
    matches = [c for c in chart.figure.axes[0].collections if c.get_gid() == gid]
    assert len(matches) == 1, f"expected one collection {gid!r}, found {len(matches)}"
    return matches[0]


def same_marker(first: PathCollection, second: PathCollection) -> bool:
    """True when two scatter collections draw the same marker shape."""
    a, b = first.get_paths()[0].vertices, second.get_paths()[0].vertices
    return a.shape == b.shape and np.allclose(a, b)


# --- trend chart -----------------------------------------------------------------------------
def trend_chart(table: pd.DataFrame, code: str = "S01") -> charts.Chart:
    return charts.plot_trend_with_deciles(
        table, code, "sub_icb", "Broad-spectrum antibiotics", "%", "decrease"
    )


def test_trend_data_is_what_is_drawn(indicator_table):
    chart = trend_chart(indicator_table)
    lines = lines_by_gid(chart)
    source = indicator_table.loc[indicator_table["org_code"] == "S01"].sort_values("period")
    org = chart.data.loc[chart.data["series"] == "organisation"]
    # The data frame carries the input values ...
    np.testing.assert_allclose(org["value"].to_numpy(), source["value"].to_numpy())
    # ... and the organisation line draws exactly those points.
    np.testing.assert_allclose(lines["organisation"][0].get_ydata(), org["value"].to_numpy())
    assert len(lines["organisation"][0].get_xdata()) == len(PERIODS)
    for decile in DECILES:
        drawn = lines[decile][0].get_ydata()
        np.testing.assert_allclose(drawn, source[decile].to_numpy())
        np.testing.assert_allclose(
            drawn, chart.data.loc[chart.data["series"] == decile, "value"].to_numpy()
        )
    np.testing.assert_allclose(lines["england"][0].get_ydata(), source["england_value"])
    # One row per drawn point: organisation, England and nine deciles per period.
    assert len(chart.data) == 11 * len(PERIODS)
    assert set(chart.data.columns) >= {"period", "series", "value", "unit"}


def test_trend_lines_differ_without_colour(indicator_table):
    lines = lines_by_gid(trend_chart(indicator_table))
    patterns = [
        (str(line._unscaled_dash_pattern), line.get_marker())  # the dash sequence drawn
        for line in (lines[g][0] for g in ("organisation", "decile_10", "decile_50", "england"))
    ]
    assert len(set(patterns)) == 4, patterns
    assert lines["organisation"][0].get_marker() == "o"
    legend = [t.get_text() for t in lines["organisation"][0].figure.legends[0].get_texts()]
    assert legend == ["National decile", "National median", "England"]


def test_trend_words_come_from_the_data(indicator_table):
    chart = trend_chart(indicator_table)
    org = chart.data.loc[chart.data["series"] == "organisation"].dropna(subset=["value"])
    latest = org["value"].iloc[-1]
    assert latest == pytest.approx(5.0)
    assert "5.00%" in chart.alt_text  # the hand-set latest value, independently known
    assert format_value(latest, "%") in chart.alt_text
    assert "Sub-ICB S01 (S01)" in chart.alt_text
    median = chart.data.loc[
        (chart.data["series"] == "decile_50") & (chart.data["period"] == PERIODS[-1]), "value"
    ].iloc[0]
    assert format_value(median, "%") in chart.alt_text
    assert "decile" in chart.caption and "median" in chart.caption
    assert "Lower values are generally better" in chart.caption
    assert chart.chart_id == "AMR02_trend"
    # 5.0 is the lowest of the twenty values (the others are 800-1200 / 9000-11000 x 100),
    # and the interpolated 10th percentile lies above the lowest value.
    assert "below the national 10th percentile" in chart.alt_text


def test_trend_direct_label_shows_latest_value(indicator_table):
    chart = trend_chart(indicator_table)
    texts = [t.get_text() for t in chart.figure.axes[0].texts]
    assert any(text.startswith("S01") and "5.00%" in text for text in texts)


def test_trend_with_gaps_keeps_missing_points(indicator_table):
    table = indicator_table.copy()
    gap = (table["org_code"] == "S02") & (table["period"] == PERIODS[3])
    table.loc[gap, "value"] = np.nan
    chart = trend_chart(table, "S02")
    org = chart.data.loc[chart.data["series"] == "organisation"]
    assert org["value"].isna().sum() == 1
    assert np.isnan(lines_by_gid(chart)["organisation"][0].get_ydata()).sum() == 1


def test_trend_at_england_level_has_no_deciles():
    table = pd.DataFrame(
        {
            "org_level": "england",
            "org_code": "ENG",
            "org_name": "England",
            "period": PERIODS[:3],
            "period_type": "month",
            "value": [1.0, 2.0, 3.0],
            "england_value": [1.0, 2.0, 3.0],
            **{decile: np.nan for decile in DECILES},
        }
    )
    chart = charts.plot_trend_with_deciles(
        table, "ENG", "england", "Items", "items per 1,000 patients", "neutral", "month"
    )
    assert set(chart.data["series"]) == {"organisation", "england"}
    assert "deciles" not in chart.caption
    assert "3.00 items per 1,000 patients" in chart.alt_text


def test_trend_empty_selection_and_errors(indicator_table):
    chart = trend_chart(indicator_table, "ZZZ")
    assert chart.data.empty
    assert NO_DATA_MESSAGE in chart.caption
    assert any(NO_DATA_MESSAGE in t.get_text() for t in chart.figure.axes[0].texts)
    with pytest.raises(ValueError, match="decile_50"):
        trend_chart(indicator_table.drop(columns="decile_50"))
    with pytest.raises(ValueError, match="Unknown organisation level"):
        charts.plot_trend_with_deciles(indicator_table, "S01", "ccg", "T", "%", "decrease")
    with pytest.raises(ValueError, match="improvement direction"):
        charts.plot_trend_with_deciles(indicator_table, "S01", "sub_icb", "T", "%", "down")
    doubled = pd.concat([indicator_table, indicator_table.assign(indicator_id="AMR01")])
    with pytest.raises(ValueError, match="one indicator"):
        trend_chart(doubled)


# --- Chart outputs ---------------------------------------------------------------------------
def test_csv_is_atomic_and_round_trips(indicator_table, tmp_path, monkeypatch):
    chart = trend_chart(indicator_table)
    target = tmp_path / "nested" / "AMR02_trend.csv"
    written = chart.to_csv(target)
    assert written == target
    back = pd.read_csv(target, parse_dates=["period"])
    expected = chart.data.assign(period=chart.data["period"].astype("datetime64[ns]"))
    back = back.assign(period=back["period"].astype("datetime64[ns]"))
    pd.testing.assert_frame_equal(back, expected, check_dtype=False, rtol=1e-12)
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left

    # A failure while moving into place leaves the old file intact and no temp file.
    target.write_text("old contents")

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(chart_base.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        chart.to_csv(target)
    assert target.read_text() == "old contents"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_html_escapes_text_and_embeds_png(indicator_table):
    chart = trend_chart(indicator_table)
    chart.title = '<script>alert("x")</script> & title'
    chart.caption = "Values <b>bold</b>"
    html_text = chart.to_html("data/AMR02 trend.csv?x=1&y=<2>")
    assert "<script>" not in html_text
    assert html.escape(chart.title) in html_text
    assert "&lt;b&gt;bold&lt;/b&gt;" in html_text
    assert 'href="data/AMR02 trend.csv?x=1&amp;y=&lt;2&gt;"' in html_text
    assert "Download the data (CSV)" in html_text
    assert f'alt="{html.escape(chart.alt_text, quote=True)}"' in html_text
    encoded = html_text.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(encoded)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Download the data" not in chart.to_html(None)
    with pytest.raises(ValueError, match="scheme"):
        chart.to_html("javascript:alert(1)")


def test_figures_are_not_left_open(indicator_table):
    before = plt.get_fignums()
    chart = trend_chart(indicator_table)
    chart.to_html("x.csv")
    assert plt.get_fignums() == before
    assert chart.figure.axes == []  # released after rendering
    assert chart.to_png_base64()  # the rendered image is kept
    assert chart.to_html(None).count("<figure") == 1


def test_png_has_the_agreed_size(indicator_table):
    png = trend_chart(indicator_table).to_png_bytes()
    width = int.from_bytes(png[16:20], "big")
    height = int.from_bytes(png[20:24], "big")
    # 8 x 4.5 inches at 100 dpi, trimmed or grown a little by the tight bounding box.
    assert 700 <= width <= 900 and 380 <= height <= 560


def test_chart_rejects_unsafe_id():
    figure = chart_base.new_figure()[0]
    with pytest.raises(ValueError, match="file name"):
        charts.Chart("../etc/passwd", "t", "c", "a", pd.DataFrame(), figure)
    assert charts.make_chart_id("AMR 01", "trend/x") == "AMR_01_trend_x"


# --- peer position ---------------------------------------------------------------------------
def peer_chart(table, code="S05", **kwargs):
    return charts.plot_peer_position(
        table, code, "sub_icb", PERIODS[-1], "rolling_12m", "Broad-spectrum antibiotics", "%",
        **kwargs,
    )


def test_peer_plot_ranks_and_highlights(indicator_table):
    chart = peer_chart(indicator_table)
    latest = indicator_table.loc[indicator_table["period"] == PERIODS[-1]]
    points = chart.data.loc[chart.data["series"] != "england"]
    assert len(points) == len(SUB_ICBS)
    assert points["value"].is_monotonic_increasing
    np.testing.assert_allclose(np.sort(latest["value"]), points["value"])
    others = collection_by_gid(chart, "organisation")
    highlight = collection_by_gid(chart, "highlighted_organisation")
    drawn = np.vstack([others.get_offsets(), highlight.get_offsets()])
    drawn = drawn[np.argsort(drawn[:, 0])]
    np.testing.assert_allclose(drawn[:, 0], points["rank"])
    np.testing.assert_allclose(drawn[:, 1], points["value"])
    # Highlighted by marker shape and a text label, not colour alone.
    assert not same_marker(highlight, others)
    s05 = points.loc[points["org_code"] == "S05"].iloc[0]
    label = f"S05: {format_value(s05['value'], '%')}"
    assert label in [t.get_text() for t in chart.figure.axes[0].texts]
    rank = int((latest["value"] < s05["value"]).sum()) + 1  # rank worked out independently
    assert f"ranked {rank} of 20" in chart.alt_text
    england = chart.data.loc[chart.data["series"] == "england", "value"].iloc[0]
    assert england == pytest.approx(latest["england_value"].iloc[0])
    assert chart.chart_id == "AMR02_peers"


def test_peer_plot_draws_intervals(indicator_table):
    table = indicator_table.assign(
        lower_95=indicator_table["value"] - 0.5, upper_95=indicator_table["value"] + 0.5
    )
    chart = peer_chart(table)
    segments = [
        c for c in chart.figure.axes[0].collections if c.get_gid() == "organisation_interval"
    ]
    assert len(segments[0].get_segments()) == len(SUB_ICBS) - 1
    assert "95% interval" in chart.alt_text and "confidence intervals" in chart.caption


def test_peer_plot_missing_org_and_empty(indicator_table):
    chart = peer_chart(indicator_table, code="NOPE")
    assert "NOPE has no value" in chart.alt_text
    assert not (chart.data["series"] == "highlighted_organisation").any()
    empty = charts.plot_peer_position(
        indicator_table, "S01", "sub_icb", "2030-01-01", "rolling_12m", "T", "%"
    )
    assert empty.data.empty and NO_DATA_MESSAGE in empty.caption
    with pytest.raises(ValueError, match="england_value"):
        peer_chart(indicator_table.drop(columns="england_value"))


# --- practice spread ---------------------------------------------------------------------------
def practice_chart(limits=None, code="S01", level="sub_icb", table=None):
    table = make_practice_table() if table is None else table
    return charts.plot_practice_spread(
        table, code, level, PERIODS[-1], "rolling_12m", "Broad-spectrum antibiotics", "%",
        limits=limits, denominator_label="Antibacterial items (count)",
    )


def test_practice_funnel_plots_member_practices():
    limits = make_limits()
    chart = practice_chart(limits)
    points = chart.data.loc[chart.data["series"] == "organisation"]
    # S01 has eight practices; P0008 has no value (zero denominator), so seven are drawn.
    assert sorted(points["org_code"]) == [f"P{n:04d}" for n in range(1, 8)]
    drawn = np.vstack(
        [c.get_offsets() for c in chart.figure.axes[0].collections
         if str(c.get_gid()).startswith("organisation:")]
    )
    assert len(drawn) == len(points)
    assert sorted(map(tuple, drawn)) == sorted(
        zip(points["denominator"], points["value"], strict=True)
    )
    # Positions worked out by hand from p = 0.1: the 99.8% half-width is
    # 3.090232 * sqrt(0.09 / n) * 100 -> n = 8000: 1.036, value 3.0 is far below.
    positions = points.set_index("org_code")["position"]
    # Half-widths: 95% = 58.8 / sqrt(n), 99.8% = 92.7 / sqrt(n) percentage points.
    assert dict(positions) == {
        "P0001": "above 99.8% limit",  # 14.0 at n = 1000: 99.8% limit 12.93
        "P0002": "within 95% limits",  # 9.5 at n = 2500: 95% limits 8.82-11.18
        "P0003": "above 95% limit",  # 11.0 at n = 4000: 95% 10.93, 99.8% 11.47
        "P0004": "within 95% limits",  # 10.2 at n = 6000: 95% limit 10.76
        "P0005": "below 99.8% limit",  # 3.0 at n = 8000: 99.8% limit 8.96
        "P0006": "above 95% limit",  # 10.8 at n = 10000: 95% 10.59, 99.8% 10.93
        "P0007": "above 99.8% limit",  # 18.5 at n = 12000: 99.8% limit 10.85
    }
    # Furthest in units of the 99.8% half-width: P0007 (10.0), P0005 (6.8), P0001 (1.4).
    labelled = set(points.loc[points["is_labelled"], "org_code"])
    assert labelled == {"P0007", "P0005", "P0001"}
    drawn_labels = {t.get_text() for t in chart.figure.axes[0].texts}
    assert labelled <= drawn_labels
    for series in ("lower_95", "upper_95", "lower_99_8", "upper_99_8", "centre"):
        line = lines_by_gid(chart)[series][0]
        rows = chart.data.loc[chart.data["series"] == series]
        np.testing.assert_allclose(line.get_ydata(), rows["value"])
        np.testing.assert_allclose(line.get_xdata(), rows["denominator"])
    assert "7 GP practices" in chart.alt_text
    assert "Not shown for want of a value: 1 practice." in chart.alt_text


def test_practice_dot_plot_without_limits():
    chart = practice_chart()
    points = chart.data.loc[chart.data["series"] == "organisation"]
    assert len(points) == 7
    assert points["value"].is_monotonic_increasing
    furthest = (points["value"] - 10.0).abs().sort_values(ascending=False)
    expected = set(points.loc[furthest.index[:3], "org_code"])
    assert set(points.loc[points["is_labelled"], "org_code"]) == expected
    drawn = collection_by_gid(chart, "organisation").get_offsets()
    np.testing.assert_allclose(drawn[:, 1], points["value"])
    assert "3.00%" in chart.alt_text and "18.5%" in chart.alt_text


def test_practice_spread_levels_and_empty():
    table = make_practice_table()
    assert len(practice_chart(level="england", code="ENG", table=table).data.query(
        "series == 'organisation'")) == 11
    empty = practice_chart(code="S99")
    assert empty.data.empty and NO_DATA_MESSAGE in empty.caption
    with pytest.raises(ValueError, match="no member practices"):
        practice_chart(level="practice", code="P0001")
    with pytest.raises(ValueError, match="sub_icb_code"):
        practice_chart(table=table.drop(columns="sub_icb_code"))
    with pytest.raises(ValueError, match="Unknown organisation level"):
        practice_chart(level="ccg")


# --- funnel ------------------------------------------------------------------------------------
def test_funnel_highlight_and_positions(indicator_table):
    latest = indicator_table.loc[indicator_table["period"] == PERIODS[-1]].copy()
    latest.loc[latest["org_code"] == "S03", ["value"]] = 25.0
    centre = float(latest["england_value"].iloc[0])
    limits = make_limits(centre).assign(denominator=lambda f: f["denominator"] * 1)
    chart = charts.plot_funnel(
        latest, limits, "S02", indicator_title="Broad-spectrum antibiotics", unit="%",
        org_level="sub_icb", denominator_label="Antibacterial items (count)",
    )
    points = chart.data.loc[chart.data["series"].isin(["organisation", "highlighted_organisation"])]
    assert len(points) == len(SUB_ICBS)
    assert points.set_index("org_code").loc["S03", "position"] == "above 99.8% limit"
    # S01: 5.0 at n = 1000, centre about 10: the 99.8% lower limit is about 7.1.
    assert points.set_index("org_code").loc["S01", "position"] == "below 99.8% limit"
    highlight = collection_by_gid(chart, "highlighted_organisation")
    row = points.loc[points["org_code"] == "S02"].iloc[0]
    np.testing.assert_allclose(highlight.get_offsets()[0], [row["denominator"], row["value"]])
    ordinary = [c for c in chart.figure.axes[0].collections
                if str(c.get_gid()).startswith("organisation:")]
    assert ordinary and not any(same_marker(highlight, c) for c in ordinary)
    texts = [t.get_text() for t in chart.figure.axes[0].texts]
    assert f"S02: {format_value(row['value'], '%')}" in texts
    above = int((points["position"] == "above 99.8% limit").sum())
    assert f"above the 99.8% limits: {above};" in chart.alt_text
    assert chart.chart_id == "AMR02_funnel"


def test_funnel_position_boundaries():
    limits = pd.DataFrame(
        {"denominator": [0.0, 100.0], "lower_95": [4.0, 4.0], "upper_95": [6.0, 6.0],
         "lower_99_8": [3.0, 3.0], "upper_99_8": [7.0, 7.0]}
    )
    positions = charts.assign_funnel_position(
        np.array([50, 50, 50, 50, 50, 50, 200]), np.array([6, 6.1, 7, 7.1, 3.9, 2, 5]), limits
    )
    assert list(positions) == [
        "within 95% limits", "above 95% limit", "above 95% limit", "above 99.8% limit",
        "below 95% limit", "below 99.8% limit", "outside the range of the limits",
    ]
    points = pd.DataFrame(
        {"org_code": ["A"], "org_name": ["A"], "denominator": [1.0], "value": [1.0]}
    )
    with pytest.raises(ValueError, match="upper_99_8"):
        charts.calculate_funnel_data(points, limits.drop(columns="upper_99_8"), 5.0)
    with pytest.raises(ValueError, match="lower_95 above upper_95"):
        charts.calculate_funnel_data(points, limits.assign(lower_95=9.0), 5.0)


# --- SPC ---------------------------------------------------------------------------------------
def test_spc_chart_marks_point_types():
    table = make_spc_table()
    chart = charts.plot_spc(
        table, indicator_title="Opioid items", unit="items per 1,000 patients",
        org_name="Sub-ICB S01", org_code="S01", improvement_direction="decrease",
    )
    assert len(chart.data) == 20
    lines = lines_by_gid(chart)
    np.testing.assert_allclose(lines["value"][0].get_ydata(), table["value"])
    np.testing.assert_allclose(lines["upper_process_limit"][0].get_ydata(), 57.0)
    concern = collection_by_gid(chart, "special_cause_concern")
    common = collection_by_gid(chart, "common_cause")
    assert len(concern.get_offsets()) == 1 and len(common.get_offsets()) == 19
    assert concern.get_offsets()[0][1] == 70.0
    assert not same_marker(concern, common)
    labels = [t.get_text() for t in chart.figure.axes[0].texts]
    assert "Latest point: special cause concern (high)" in labels
    assert "70.0 items per 1,000 patients" in chart.alt_text
    assert "trial" not in chart.caption
    short = charts.plot_spc(
        make_spc_table(8), indicator_title="Opioid items", unit="items",
        org_name="S01", improvement_direction="decrease",
    )
    assert "trial limits" in short.caption


def test_spc_rejects_bad_input():
    table = make_spc_table()
    kwargs = {"indicator_title": "T", "unit": "u", "org_name": "S01"}
    with pytest.raises(ValueError, match="neutral"):
        charts.plot_spc(table, improvement_direction="neutral", **kwargs)
    with pytest.raises(ValueError, match="Unknown SPC point type"):
        charts.plot_spc(table.assign(point_type="odd"), improvement_direction="decrease", **kwargs)
    with pytest.raises(ValueError, match="rolling 12-month"):
        charts.plot_spc(table.assign(period_type="rolling_12m"), improvement_direction="decrease",
                        **kwargs)
    with pytest.raises(ValueError, match="mean"):
        charts.plot_spc(table.drop(columns="mean"), improvement_direction="decrease", **kwargs)
    empty = charts.plot_spc(table.iloc[0:0], improvement_direction="decrease", **kwargs)
    assert NO_DATA_MESSAGE in empty.caption and empty.data.empty


# --- spine -------------------------------------------------------------------------------------
def test_spine_scaling_labels_and_markers():
    summary = make_spine_summary()
    chart = charts.plot_spine(
        summary, org_name="Sub-ICB S01", org_code="S01", org_level="sub_icb",
        period_label="12 months to Feb 2024",
    )
    data = chart.data.set_index("indicator_id")
    # AMR01: England 0.85, widest distance 0.45 (to 1.3); lower is better -> mirrored.
    assert data.loc["AMR01", "scaled_value"] == pytest.approx(-(0.95 - 0.85) / 0.45)
    assert data.loc["AMR01", "scaled_maximum"] == pytest.approx(-1.0)
    # MH01 is neutral: not mirrored; widest distance 0.5 (to 1.5).
    assert data.loc["MH01", "scaled_value"] == pytest.approx(0.2 / 0.5)
    assert list(chart.data["comparison_label"]) == [
        "higher (worse)", "lower (better)", "higher", "similar"
    ]
    texts = [t.get_text() for t in chart.figure.axes[0].texts]
    assert any(text.endswith("higher (worse)") and text.startswith("0.950") for text in texts)
    worse = collection_by_gid(chart, "organisation:worse")
    better = collection_by_gid(chart, "organisation:better")
    np.testing.assert_allclose(worse.get_offsets()[0][0], data.loc["AMR01", "scaled_value"])
    assert not same_marker(worse, better)
    assert "1 better, 1 worse, 1 similar, 1 higher" in chart.alt_text
    assert "mirrored" in chart.caption
    # The bars drawn span exactly the scaled range and interquartile range, top row first.
    patches = chart.figure.axes[0].patches
    ranges = [p for p in patches if p.get_gid() == "range"]
    middles = [p for p in patches if p.get_gid() == "interquartile_range"]
    assert len(ranges) == len(middles) == 4
    ordered = sorted(ranges, key=lambda p: -p.get_y())
    np.testing.assert_allclose(
        [min(p.get_x(), p.get_x() + p.get_width()) for p in ordered],
        np.minimum(chart.data["scaled_minimum"], chart.data["scaled_maximum"]),
    )


def test_spine_row_without_value_has_no_marker():
    summary = make_spine_summary()
    summary.loc[2, ["value", "assessment"]] = [np.nan, np.nan]
    chart = charts.plot_spine(
        summary, org_name="S01", org_code="S01", org_level="icb", period_label="x"
    )
    assert chart.data.loc[2, "comparison_label"] == "no value"
    drawn = sum(
        len(c.get_offsets()) for c in chart.figure.axes[0].collections
        if str(c.get_gid()).startswith("organisation:")
    )
    assert drawn == 3
    assert "no value" in chart.alt_text and "integrated care boards" in chart.caption


def test_spine_errors_and_empty():
    summary = make_spine_summary()
    kwargs = {"org_name": "S01", "org_code": "S01", "org_level": "sub_icb", "period_label": "x"}
    with pytest.raises(ValueError, match="Unknown assessment"):
        charts.plot_spine(summary.assign(assessment="great"), **kwargs)
    with pytest.raises(ValueError, match="p25"):
        charts.plot_spine(summary.drop(columns="p25"), **kwargs)
    empty = charts.plot_spine(summary.iloc[0:0], **kwargs)
    assert NO_DATA_MESSAGE in empty.caption
    not_compared = charts.plot_spine(summary.assign(assessment=np.nan), **kwargs)
    assert set(not_compared.data["comparison_label"]) == {"not compared"}


def test_every_chart_closes_cleanly(indicator_table, tmp_path):
    before = plt.get_fignums()
    built = [
        trend_chart(indicator_table),
        peer_chart(indicator_table),
        practice_chart(make_limits()),
        practice_chart(),
        charts.plot_spc(make_spc_table(), indicator_title="T", unit="u", org_name="S01",
                        improvement_direction="decrease"),
        charts.plot_spine(make_spine_summary(), org_name="S01", org_code="S01",
                          org_level="sub_icb", period_label="x"),
    ]
    for chart in built:
        assert chart.caption.strip() and chart.alt_text.strip() and chart.title.strip()
        path = chart.to_csv(tmp_path / f"{chart.chart_id}.csv")
        assert len(pd.read_csv(path)) == len(chart.data)
        assert "<figure" in chart.to_html(os.fspath(path.name))
    assert plt.get_fignums() == before
    assert len({chart.chart_id for chart in built}) == 5  # practices twice
    assert Path(tmp_path).exists()


# --- text from data is drawn literally (issue 10) ------------------------------------------------
# "$...$" would start matplotlib mathtext ("$x^$" is not even valid mathtext, so drawing fails);
# backslashes, underscores and per cent signs are mathtext syntax too.
TRICKY_NAME = r"The $x^$ Practice \ North_East 50%"


def _texts_drawn(chart: charts.Chart) -> list:
    """Every text artist of a rendered chart: titles, labels, tick labels, annotations, legends."""
    from matplotlib.text import Text

    chart.to_png_bytes()  # tick labels exist only once drawn
    return [t for t in chart.figure.findobj(Text) if t.get_text()]


def _charts_with_tricky_names() -> list[charts.Chart]:
    table = make_indicator_table()
    table["org_name"] = table["org_name"].where(table["org_code"] != "S05", TRICKY_NAME)
    practices = make_practice_table().assign(org_name=TRICKY_NAME)
    latest = table.loc[table["period"] == PERIODS[-1]]
    spine = make_spine_summary().assign(short_title=TRICKY_NAME)
    groups = pd.DataFrame({
        "area": [TRICKY_NAME, "England"], "group": ["age_$x^$", "age_$x^$"], "value": [10.0, 12.0],
        "lower_95": [9.0, 11.5], "upper_95": [11.0, 12.5], "numerator": [10, 120],
        "denominator": [100, 1000],
    })  # fmt: skip
    return [
        charts.plot_trend_with_deciles(table, "S05", "sub_icb", TRICKY_NAME, "%", "decrease"),
        charts.plot_peer_position(table, "S05", "sub_icb", PERIODS[-1], "rolling_12m",
                                  TRICKY_NAME, "% of $x^$ items"),
        charts.plot_practice_spread(practices, "S01", "sub_icb", PERIODS[-1], "rolling_12m",
                                    TRICKY_NAME, "%", limits=make_limits(),
                                    denominator_label="$x^$ items"),
        charts.plot_funnel(latest, make_limits(float(latest["england_value"].iloc[0])), "S05",
                           indicator_title=TRICKY_NAME, unit="%", org_level="sub_icb",
                           denominator_label="$x^$ items"),
        charts.plot_spc(make_spc_table(), indicator_title=TRICKY_NAME, unit="$x^$ items",
                        org_name=TRICKY_NAME, org_code="S01", improvement_direction="decrease"),
        charts.plot_spine(spine, org_name=TRICKY_NAME, org_code="S01", org_level="sub_icb",
                          period_label="x"),
        charts.plot_group_comparison(groups, title=TRICKY_NAME, unit="$x^$ per cent",
                                     group_label="Age_band", chart_id="groups"),
    ]


def test_text_from_data_is_drawn_literally_not_as_mathtext():
    for chart in _charts_with_tricky_names():
        texts = _texts_drawn(chart)  # raised ValueError (mathtext parse) before the fix
        assert [t for t in texts if t.get_parse_math()] == [], chart.chart_id
        drawn = " ".join(t.get_text() for t in texts)
        assert "$x^$" in drawn, chart.chart_id


def test_chart_csv_download_cannot_carry_a_spreadsheet_formula(tmp_path):
    """A PCN named like a formula is written as text; values, negative ones too, stay numbers."""
    formula = '=HYPERLINK("http://example.invalid","PCN")'
    table = make_indicator_table()
    table["org_name"] = table["org_name"].where(table["org_code"] != "S05", formula)
    table["value"] = table["value"] - 10.0  # some values negative
    chart = charts.plot_peer_position(table, "S05", "sub_icb", PERIODS[-1], "rolling_12m",
                                      "Change in broad-spectrum share", "%")
    assert (chart.data["value"] < 0).any()
    back = pd.read_csv(chart.to_csv(tmp_path / "peers.csv"))
    names = back.loc[back["org_code"] == "S05", "org_name"]
    assert list(names) == ["'" + formula]
    assert not back["org_name"].astype(str).str.match(r"[=+\-@]").any()
    assert back["value"].dtype == float
    np.testing.assert_allclose(back["value"], chart.data["value"])
