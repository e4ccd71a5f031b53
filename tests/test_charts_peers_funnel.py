"""Tests for the peer, funnel and practice spread charts (Vega-Lite).

Each chart is checked for what it draws (its datasets equal what its calculate
function returns), for valid Vega-Lite, for shared datasets that do not depend
on the highlighted organisation, and for words that match the data.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from moopt.charts.base import NO_DATA_MESSAGE, format_value
from moopt.charts.funnel import (
    ABOVE_99_8,
    BELOW_99_8,
    NOT_IN_FUNNEL,
    VALUE_COLUMNS,
    assign_funnel_position,
    calculate_funnel_data,
    funnel_line_frame,
    organisation_values,
    plot_funnel,
)
from moopt.charts.peers import calculate_peer_data, plot_peer_position
from moopt.charts.practices import plot_practice_spread, select_member_practices
from moopt.charts.web import validate_spec

PERIODS = pd.date_range("2023-01-01", periods=3, freq="MS")
SUB_ICBS = [f"S{n:02d}" for n in range(1, 21)]
LATEST = PERIODS[-1]


# --- hand-built tables ---------------------------------------------------------------------
def make_indicator_table() -> pd.DataFrame:
    """Twenty sub-ICB locations x 3 rolling 12-month periods with 95% intervals."""
    rng = np.random.default_rng(20240301)
    frames = []
    for index, period in enumerate(PERIODS):
        numerators = rng.integers(800, 1200, size=len(SUB_ICBS)).astype(float)
        denominators = rng.integers(9000, 11000, size=len(SUB_ICBS)).astype(float)
        if index == len(PERIODS) - 1:
            numerators[0], denominators[0] = 50.0, 1000.0  # S01's latest value: 5.0, the lowest
        values = numerators / denominators * 100
        frames.append(pd.DataFrame({
            "indicator_id": "AMR02", "org_level": "sub_icb", "org_code": SUB_ICBS,
            "org_name": [f"Sub-ICB {code}" for code in SUB_ICBS], "period": period,
            "period_type": "rolling_12m", "numerator": numerators, "denominator": denominators,
            "value": values, "lower_95": values - 0.5, "upper_95": values + 0.5,
            "england_value": numerators.sum() / denominators.sum() * 100,
        }))
    return pd.concat(frames, ignore_index=True)


def with_flags(table: pd.DataFrame) -> pd.DataFrame:
    """Stored funnel flags as moopt.results writes them (S01 far below, S03 above, S20 none)."""
    flag_95 = np.where(table["org_code"] == "S01", "below",
                       np.where(table["org_code"].isin(["S03", "S04"]), "above", "inside"))
    flag_99_8 = np.where(table["org_code"] == "S01", "below",
                         np.where(table["org_code"] == "S03", "above", "inside"))
    out = table.assign(funnel_flag_95=flag_95.astype(object), funnel_flag_99_8=flag_99_8.astype(object))
    out.loc[out["org_code"] == "S20", ["funnel_flag_95", "funnel_flag_99_8"]] = None
    return out


def make_practice_table() -> pd.DataFrame:
    """Eight practices of S01 and four of S02 in one period; one practice has no value."""
    codes = [f"P{n:04d}" for n in range(1, 13)]
    return pd.DataFrame({
        "indicator_id": "AMR02", "org_level": "practice", "org_code": codes,
        "org_name": [f"Practice {code}" for code in codes], "period": LATEST,
        "period_type": "rolling_12m",
        "denominator": np.array([1000, 2500, 4000, 6000, 8000, 10000, 12000, 0, 3000, 5000, 7000, 9000],
                                dtype=float),
        "value": [14.0, 9.5, 11.0, 10.2, 3.0, 10.8, 18.5, np.nan, 10, 11, 12, 9],
        "england_value": 10.0, "sub_icb_code": ["S01"] * 8 + ["S02"] * 4,
    })


def make_limits(centre: float = 10.0) -> pd.DataFrame:
    """Symmetric proportion limits (per cent) around ``centre`` on a denominator grid."""
    grid = np.linspace(500, 15000, 60)
    p = centre / 100
    spread = np.sqrt(p * (1 - p) / grid) * 100
    return pd.DataFrame({
        "denominator": grid,
        "lower_95": centre - 1.959964 * spread, "upper_95": centre + 1.959964 * spread,
        "lower_99_8": centre - 3.090232 * spread, "upper_99_8": centre + 3.090232 * spread,
    })


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return with_flags(make_indicator_table())


def latest_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table.loc[table["period"] == LATEST]


def peer_chart(table, code="S05", **kwargs):
    return plot_peer_position(table, code, "sub_icb", LATEST, "rolling_12m",
                              "Broad-spectrum antibiotics", "%", **kwargs)


def funnel_chart(table, code="S02", limits=None, **kwargs):
    rows = latest_rows(table)
    limits = make_limits(float(rows["england_value"].iloc[0])) if limits is None else limits
    return plot_funnel(rows, limits, code, indicator_title="Broad-spectrum antibiotics", unit="%",
                       org_level="sub_icb", denominator_label="Antibacterial items (count)", **kwargs)


def practice_chart(limits=None, code="S01", level="sub_icb", table=None):
    table = make_practice_table() if table is None else table
    return plot_practice_spread(table, code, level, LATEST, "rolling_12m",
                                "Broad-spectrum antibiotics", "%", limits=limits,
                                denominator_label="Antibacterial items (count)")


# --- spec helpers ----------------------------------------------------------------------------
def layers(spec: dict) -> list[dict]:
    return spec.get("layer", [spec])


def data_name(spec: dict, layer: dict) -> str:
    """The dataset a layer reads (Altair moves data shared by every layer to the top)."""
    return layer.get("data", spec.get("data"))["name"]


def mark_type(layer: dict) -> str:
    mark = layer["mark"]
    return mark if isinstance(mark, str) else mark["type"]


def tooltip_fields(layer: dict) -> list[str]:
    tooltip = layer.get("encoding", {}).get("tooltip", [])
    return [item.get("field") for item in (tooltip if isinstance(tooltip, list) else [tooltip])]


def filters(layer: dict) -> list[str]:
    return [step["filter"] for step in layer.get("transform", []) if "filter" in step]


def assert_valid(chart) -> None:
    assert validate_spec(chart.full_spec(720)) == []
    assert validate_spec(chart.full_spec(360)) == []


# --- peer position ---------------------------------------------------------------------------
def test_peer_chart_draws_every_organisation_ranked(table):
    chart = peer_chart(table)
    assert_valid(chart)
    values = chart.dataset("values")
    pd.testing.assert_frame_equal(values.frame, calculate_peer_data(
        table, "S05", "sub_icb", LATEST, "rolling_12m"))
    assert values.shared_key == "AMR02.sub_icb.rolling_12m.2023-03.values"
    latest = latest_rows(table)
    assert len(values.frame) == len(SUB_ICBS)
    np.testing.assert_allclose(values.frame["value"], np.sort(latest["value"]))
    assert list(values.frame["rank"]) == list(range(1, 21))
    assert list(values.frame.columns) == list(VALUE_COLUMNS)
    # Every layer reads the one dataset; the highlight is the row matching the parameter.
    assert {data_name(chart.spec, layer) for layer in layers(chart.spec)} == {"values"}
    highlighted = [layer for layer in layers(chart.spec)
                   if "datum.org_code === org_code" in filters(layer)]
    assert {mark_type(layer) for layer in highlighted} == {"rule", "point", "text"}
    diamond = next(layer for layer in highlighted if mark_type(layer) == "point")
    assert diamond["mark"]["shape"] == "diamond" and diamond["mark"]["size"] > 100
    assert chart.params["org_code"] == "S05"
    # Tooltips on the dots name the organisation and give the value and interval.
    for layer in layers(chart.spec):
        if mark_type(layer) == "point":
            assert {"org_name", "value", "lower_95", "upper_95", "period"} <= set(tooltip_fields(layer))
    s05 = values.frame.set_index("org_code").loc["S05"]
    rank = int((latest["value"] < s05["value"]).sum()) + 1  # worked out independently
    assert f"ranked {rank} of 20" in chart.alt_text
    assert f"England is {format_value(latest['england_value'].iloc[0], '%')}" in chart.alt_text
    assert "95% interval" in chart.alt_text and "confidence intervals" in chart.caption
    assert chart.chart_id == "AMR02_peers"


def test_peer_chart_england_line_and_no_intervals(table):
    chart = peer_chart(table.drop(columns=["lower_95", "upper_95"]))
    assert_valid(chart)
    assert chart.data["lower_95"].isna().all()
    marks = [mark_type(layer) for layer in layers(chart.spec)]
    rules = [layer for layer in layers(chart.spec) if mark_type(layer) == "rule"]
    # Without intervals the only rule is England's line, dash-dot and labelled in words.
    assert len(rules) == 1 and rules[0]["encoding"]["y"]["field"] == "england_value"
    assert len(rules[0]["mark"]["strokeDash"]) == 4
    assert "text" in marks and "confidence intervals" not in chart.caption


def test_peer_chart_missing_org_and_empty(table):
    chart = peer_chart(table, code="NOPE")
    assert "NOPE has no value" in chart.alt_text
    pd.testing.assert_frame_equal(chart.data, peer_chart(table).data)
    empty = plot_peer_position(table, "S01", "sub_icb", "2030-01-01", "rolling_12m", "T", "%")
    assert empty.data.empty and empty.spec is None and NO_DATA_MESSAGE in empty.caption
    with pytest.raises(ValueError, match="england_value"):
        peer_chart(table.drop(columns="england_value"))
    with pytest.raises(ValueError, match="Unknown organisation level"):
        plot_peer_position(table, "S01", "ccg", LATEST, "rolling_12m", "T", "%")
    doubled = pd.concat([table, latest_rows(table).iloc[[0]]])
    with pytest.raises(ValueError, match="more than once"):
        peer_chart(doubled)


def test_peers_and_funnel_share_one_dataset_whoever_is_highlighted(table):
    peers = [peer_chart(table, code) for code in ("S05", "S11")]
    funnels = [funnel_chart(table, code) for code in ("S05", "S11")]
    shared = [chart.dataset("values") for chart in (*peers, *funnels)]
    for item in shared[1:]:
        pd.testing.assert_frame_equal(item.frame, shared[0].frame)
        assert item.shared_key == shared[0].shared_key
        assert item.records() == shared[0].records()
    # The template is the same object for both organisations; only the parameters differ.
    assert peers[0].spec is peers[1].spec and funnels[0].spec is funnels[1].spec
    assert peers[0].params["org_code"] != peers[1].params["org_code"]
    assert funnels[0].params["org_code"] == "S05" and funnels[1].params["org_code"] == "S11"
    lines = [chart.dataset("funnel_lines") for chart in funnels]
    pd.testing.assert_frame_equal(lines[0].frame, lines[1].frame)
    assert lines[0].shared_key == "AMR02.sub_icb.rolling_12m.2023-03.funnel_lines"
    # Nothing about either organisation is written into the template.
    for chart in (*peers, *funnels):
        text = json.dumps(chart.spec)
        assert "S05" not in text and "S11" not in text and "Sub-ICB" not in text
        assert {"name": "org_code", "value": ""} in chart.spec["params"]


def test_shared_values_have_nothing_organisation_specific(table):
    rows = latest_rows(table)
    values = organisation_values(rows)
    assert not any(column.startswith(("is_", "highlight", "series")) for column in values.columns)
    # Shuffling the input rows changes nothing: the order is by value, then code.
    shuffled = organisation_values(rows.sample(frac=1.0, random_state=7))
    pd.testing.assert_frame_equal(values, shuffled)


# --- funnel ------------------------------------------------------------------------------------
def test_funnel_positions_come_from_the_stored_flags(table):
    chart = funnel_chart(table, "S02", label_extremes=2)
    assert_valid(chart)
    rows = latest_rows(table)
    limits = make_limits(float(rows["england_value"].iloc[0]))
    expected = calculate_funnel_data(rows, limits, float(rows["england_value"].iloc[0]), 2)
    pd.testing.assert_frame_equal(chart.dataset("values").frame, expected.points)
    pd.testing.assert_frame_equal(chart.dataset("funnel_lines").frame, expected.lines)
    assert chart.params["labelled_codes"] == list(expected.labelled_codes)
    # Furthest from England in units of the 99.8% half-width at each size, worked out here.
    centre = float(rows["england_value"].iloc[0])
    upper = np.interp(rows["denominator"], limits["denominator"], limits["upper_99_8"])
    lower = np.interp(rows["denominator"], limits["denominator"], limits["lower_99_8"])
    distance = np.where(rows["value"] > centre, (rows["value"] - centre) / (upper - centre),
                        (centre - rows["value"]) / (centre - lower))
    furthest = rows["org_code"].to_numpy()[np.argsort(-distance)[:2]]
    assert expected.labelled_codes == tuple(furthest)
    positions = chart.data.set_index("org_code")["position"]
    assert positions["S01"] == BELOW_99_8 and positions["S03"] == ABOVE_99_8
    assert positions["S04"] == "above 95% limit" and positions["S20"] == NOT_IN_FUNNEL
    assert (positions.drop(["S01", "S03", "S04", "S20"]) == "within 95% limits").all()
    assert "Outside the 95% limits: 3; above the 99.8% limits: 1; below them: 1." in chart.alt_text
    assert "Not in the funnel (no limits for them): 1." in chart.alt_text
    s02 = chart.data.set_index("org_code").loc["S02"]
    assert f"Sub-ICB S02 (S02) has {format_value(s02['value'], '%')}" in chart.alt_text
    assert chart.chart_id == "AMR02_funnel"


def test_funnel_spec_marks_positions_by_shape_and_lines_by_dash(table):
    chart = funnel_chart(table)
    spec_layers = layers(chart.spec)
    points = next(layer for layer in spec_layers
                  if mark_type(layer) == "point" and "shape" in layer["encoding"])
    shapes = points["encoding"]["shape"]["scale"]
    assert len(set(shapes["range"])) >= 5 and shapes["domain"][0] == "within 95% limits"
    assert {"org_name", "value", "denominator", "position"} <= set(tooltip_fields(points))
    line = next(layer for layer in spec_layers if mark_type(layer) == "line")
    dashes = line["encoding"]["strokeDash"]["scale"]
    assert dashes["domain"] == ["England", "95% limits", "99.8% limits"]
    assert len({json.dumps(dash) for dash in dashes["range"]}) == 3
    assert data_name(chart.spec, line) == "funnel_lines"
    assert data_name(chart.spec, points) == "values"
    assert {"line", "denominator", "value"} <= set(tooltip_fields(line))
    highlight = next(layer for layer in spec_layers if mark_type(layer) == "point"
                     and "datum.org_code === org_code" in filters(layer))
    assert highlight["mark"]["shape"] == "diamond"
    # Rates are not forced to start at zero.
    assert points["encoding"]["y"]["scale"]["zero"] is False


def test_funnel_without_flags_places_points_on_the_lines(table):
    rows = latest_rows(table).drop(columns=["funnel_flag_95", "funnel_flag_99_8"]).copy()
    rows.loc[rows["org_code"] == "S03", "value"] = 25.0
    chart = funnel_chart(rows, "S02")
    positions = chart.data.set_index("org_code")["position"]
    assert positions["S03"] == ABOVE_99_8
    # S01: 5.0 at n = 1000, centre about 10: the 99.8% lower limit is about 7.1.
    assert positions["S01"] == BELOW_99_8
    # Positions worked out from these limits are this chart's own, so not shared.
    assert chart.dataset("values").shared_key is None
    assert chart.dataset("funnel_lines").shared_key is not None


def test_funnel_lines_frame():
    limits = make_limits()
    lines = funnel_line_frame(limits, 10.0)
    assert list(lines.columns) == ["series", "line", "denominator", "value"]
    assert lines.groupby("series").size().to_dict() == {
        "centre": 60, "lower_95": 60, "lower_99_8": 60, "upper_95": 60, "upper_99_8": 60}
    upper = lines.loc[lines["series"] == "upper_99_8"].reset_index(drop=True)
    np.testing.assert_allclose(upper["value"], limits["upper_99_8"])
    assert set(lines.loc[lines["series"] == "centre", "value"]) == {10.0}
    with pytest.raises(ValueError, match="finite"):
        funnel_line_frame(limits, float("nan"))


def test_funnel_position_boundaries_and_bad_limits():
    limits = pd.DataFrame({"denominator": [0.0, 100.0], "lower_95": [4.0, 4.0], "upper_95": [6.0, 6.0],
                           "lower_99_8": [3.0, 3.0], "upper_99_8": [7.0, 7.0]})
    positions = assign_funnel_position(
        np.array([50, 50, 50, 50, 50, 50, 200]), np.array([6, 6.1, 7, 7.1, 3.9, 2, 5]), limits)
    assert list(positions) == [
        "within 95% limits", "above 95% limit", "above 95% limit", "above 99.8% limit",
        "below 95% limit", "below 99.8% limit", "outside the range of the limits",
    ]
    points = pd.DataFrame({"org_code": ["A"], "org_name": ["A"], "denominator": [1.0], "value": [1.0]})
    with pytest.raises(ValueError, match="upper_99_8"):
        calculate_funnel_data(points, limits.drop(columns="upper_99_8"), 5.0)
    with pytest.raises(ValueError, match="lower_95 above upper_95"):
        calculate_funnel_data(points, limits.assign(lower_95=9.0), 5.0)
    with pytest.raises(ValueError, match="repeats a denominator"):
        calculate_funnel_data(points, pd.concat([limits, limits]), 5.0)


def test_funnel_empty_and_rows_without_a_denominator(table):
    rows = latest_rows(table).copy()
    rows.loc[rows["org_code"] == "S07", "denominator"] = np.nan
    chart = funnel_chart(rows)
    assert "S07" in set(chart.data["org_code"])  # kept in the shared rows ...
    points = next(layer for layer in layers(chart.spec) if mark_type(layer) == "point")
    assert "datum.denominator > 0" in filters(points)[0]  # ... but not placed on the funnel
    assert "Not shown for want of a denominator: 1." in chart.alt_text
    assert "for 19 sub-ICB locations" in chart.alt_text
    empty = funnel_chart(rows.assign(value=np.nan))
    assert empty.spec is None and NO_DATA_MESSAGE in empty.caption


def test_funnel_static_copy_renders(table):
    svg = funnel_chart(table, "S02").to_svg(width=480)
    assert svg.lstrip().startswith("<svg") and "Sub-ICB S02" in svg and "99.8% limits" in svg


# --- practice spread ---------------------------------------------------------------------------
def test_practice_funnel_draws_member_practices():
    limits = make_limits()
    chart = practice_chart(limits)
    assert_valid(chart)
    practices = chart.dataset("practices")
    assert practices.shared_key is None
    members = select_member_practices(make_practice_table(), "S01", "sub_icb", LATEST, "rolling_12m")
    pd.testing.assert_frame_equal(practices.frame, organisation_values(members, limits))
    # S01 has eight practices; P0008 has no value, so seven are drawn.
    assert sorted(practices.frame["org_code"]) == [f"P{n:04d}" for n in range(1, 8)]
    # Half-widths: 95% = 58.8 / sqrt(n), 99.8% = 92.7 / sqrt(n) percentage points.
    assert dict(practices.frame.set_index("org_code")["position"]) == {
        "P0001": "above 99.8% limit",  # 14.0 at n = 1000: 99.8% limit 12.93
        "P0002": "within 95% limits",  # 9.5 at n = 2500: 95% limits 8.82-11.18
        "P0003": "above 95% limit",  # 11.0 at n = 4000: 95% 10.93, 99.8% 11.47
        "P0004": "within 95% limits",  # 10.2 at n = 6000: 95% limit 10.76
        "P0005": "below 99.8% limit",  # 3.0 at n = 8000: 99.8% limit 8.96
        "P0006": "above 95% limit",  # 10.8 at n = 10000: 95% 10.59, 99.8% 10.93
        "P0007": "above 99.8% limit",  # 18.5 at n = 12000: 99.8% limit 10.85
    }
    # Furthest in units of the 99.8% half-width: P0007 (10.0), P0005 (6.8), P0001 (1.4).
    assert chart.params == {"labelled_codes": ["P0007", "P0005", "P0001"]}
    lines = chart.dataset("practice_funnel_lines")
    pd.testing.assert_frame_equal(lines.frame, funnel_line_frame(limits, 10.0))
    assert lines.shared_key == "AMR02.practice.rolling_12m.2023-03.funnel_lines"
    # The national lines are cut to the members' sizes by Vega, not in the shared rows.
    line = next(layer for layer in layers(chart.spec) if mark_type(layer) == "line")
    assert "size_low" in filters(line)[0]
    assert "7 GP practices" in chart.alt_text
    assert "Outside the 95% limits: 5 practices; outside the 99.8% limits: 3 practices." in chart.alt_text
    assert "Not shown for want of a value or a denominator: 1 practice." in chart.alt_text
    assert "Furthest from England: P0007 (18.5%" in chart.alt_text


def test_practice_lines_shared_between_parents():
    limits = make_limits()
    first, second = practice_chart(limits, "S01"), practice_chart(limits, "S02")
    pd.testing.assert_frame_equal(first.dataset("practice_funnel_lines").frame,
                                  second.dataset("practice_funnel_lines").frame)
    assert first.spec is second.spec
    assert set(second.dataset("practices").frame["org_code"]) == {"P0009", "P0010", "P0011", "P0012"}


def test_practice_dot_plot_without_limits():
    chart = practice_chart()
    assert_valid(chart)
    data = chart.dataset("practices").frame
    assert len(data) == 7 and data["value"].is_monotonic_increasing
    furthest = (data["value"] - 10.0).abs().sort_values(ascending=False)
    assert set(chart.params["labelled_codes"]) == set(data.loc[furthest.index[:3], "org_code"])
    assert [d.name for d in chart.datasets] == ["practices"]
    labels = [layer for layer in layers(chart.spec)
              if "indexof(labelled_codes, datum.org_code) >= 0" in filters(layer)]
    assert labels and all(mark_type(layer) == "text" for layer in labels)
    assert "3.00%" in chart.alt_text and "18.5%" in chart.alt_text
    # Empty limits are no limits.
    assert practice_chart(make_limits().iloc[0:0]).spec is chart.spec


def test_practice_spread_levels_and_empty():
    table = make_practice_table()
    assert len(practice_chart(level="england", code="ENG", table=table).data) == 11
    empty = practice_chart(code="S99")
    assert empty.data.empty and NO_DATA_MESSAGE in empty.caption
    with pytest.raises(ValueError, match="no member practices"):
        practice_chart(level="practice", code="P0001")
    with pytest.raises(ValueError, match="sub_icb_code"):
        practice_chart(table=table.drop(columns="sub_icb_code"))
    with pytest.raises(ValueError, match="Unknown organisation level"):
        practice_chart(level="ccg")


def test_positions_come_from_the_stored_verdict_columns_of_indicator_results():
    from moopt.charts.funnel import BELOW_99_8, ABOVE_95, WITHIN, NOT_IN_FUNNEL, organisation_values

    rows = pd.DataFrame({
        "org_code": ["A", "B", "C", "D"], "org_name": ["a", "b", "c", "d"], "value": [1.0, 2.0, 3.0, 4.0],
        "comparison_95": ["lower", "higher", "similar", None],
        "comparison_99_8": ["lower", "similar", "similar", None],
    })
    positions = organisation_values(rows).set_index("org_code")["position"].to_dict()
    assert positions == {"A": BELOW_99_8, "B": ABOVE_95, "C": WITHIN, "D": NOT_IN_FUNNEL}
