"""The trend (deciles) and SPC charts as Vega-Lite: datasets are what is drawn, specs are
organisation-independent templates, meaning never rests on colour alone, words match the data."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd
import pytest

from moopt.charts import spc as spc_module
from moopt.charts import trend as trend_module
from moopt.charts.base import NO_DATA_MESSAGE, format_value, spec_data_names
from moopt.charts.spc import calculate_spc_data, plot_spc
from moopt.charts.trend import calculate_trend_data, plot_trend_with_deciles
from moopt.charts.web import validate_spec

DECILES = [f"decile_{p}" for p in range(10, 100, 10)]
PERIODS = pd.date_range("2023-01-01", periods=14, freq="MS")
SUB_ICBS = [f"S{n:02d}" for n in range(1, 21)]


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
        for code, value in zip(SUB_ICBS, values, strict=True):
            rows.append({
                "indicator_id": "AMR02", "org_level": "sub_icb", "org_code": code,
                "org_name": f"Sub-ICB {code}", "period": period, "period_type": "rolling_12m",
                "value": value, "england_value": england, **dict(zip(DECILES, deciles, strict=True)),
            })  # fmt: skip
    return pd.DataFrame(rows)


def make_spc_table(points: int = 20) -> pd.DataFrame:
    periods = pd.date_range("2022-01-01", periods=points, freq="MS")
    values = np.full(points, 50.0) + np.tile([1.0, -1.0], points // 2 + 1)[:points]
    values[-1] = 70.0  # outside the upper limit
    point_type = np.array(["common_cause"] * points, dtype=object)
    point_type[-1] = "special_cause_concern"
    return pd.DataFrame({
        "indicator_id": "SAF04", "org_code": "S01", "period": periods, "value": values,
        "mean": 51.0, "lower_process_limit": 45.0, "upper_process_limit": 57.0,
        "point_type": point_type,
    })  # fmt: skip


@pytest.fixture(scope="module")
def indicator_table() -> pd.DataFrame:
    return make_indicator_table()


def trend_chart(table: pd.DataFrame, code: str = "S01", **kwargs):
    return plot_trend_with_deciles(
        table, code, "sub_icb", "Broad-spectrum antibiotics", "%", "decrease", **kwargs)


def spc_chart(table: pd.DataFrame | None = None, **kwargs):
    arguments = {"indicator_title": "Opioid items", "unit": "items per 1,000 patients",
                 "org_name": "Sub-ICB S01", "org_code": "S01", "improvement_direction": "decrease"}
    return plot_spc(make_spc_table() if table is None else table, **{**arguments, **kwargs})


def layers(spec: dict) -> list[dict]:
    return spec["layer"]


def mark_type(layer: dict) -> str:
    mark = layer["mark"]
    return mark if isinstance(mark, str) else mark["type"]


def layer_reading(spec: dict, dataset: str, kind: str, filter_text: str = "") -> list[dict]:
    """Layers of mark ``kind`` that read ``dataset`` and whose transforms mention ``filter_text``."""
    return [layer for layer in layers(spec)
            if layer["data"]["name"] == dataset and mark_type(layer) == kind
            and filter_text in json.dumps(layer.get("transform", []))]


def tooltip_fields(layer: dict) -> list[str]:
    return [item["field"] for item in layer["encoding"]["tooltip"]]


# --- trend: datasets ---------------------------------------------------------------------------
def test_trend_datasets_are_exactly_the_calculated_rows(indicator_table):
    chart = trend_chart(indicator_table)
    calculated = calculate_trend_data(indicator_table, "S01", "sub_icb", "rolling_12m")
    organisation, national = chart.dataset("organisation").frame, chart.dataset("national").frame
    assert chart.data is organisation  # the organisation's rows are the main download
    drawn = pd.concat([organisation, national], ignore_index=True)
    columns = ["period", "series", "series_label", "value"]
    key = ["series", "period"]
    pd.testing.assert_frame_equal(
        drawn[columns].sort_values(key).reset_index(drop=True),
        calculated[columns].sort_values(key).reset_index(drop=True))
    # The organisation's values are the input values, one per period ...
    source = indicator_table.loc[indicator_table["org_code"] == "S01"].sort_values("period")
    np.testing.assert_allclose(organisation["value"], source["value"])
    assert set(organisation["org_code"]) == {"S01"} and set(organisation["org_name"]) == {"Sub-ICB S01"}
    # ... and the national rows are the deciles and England of the same periods.
    for decile in DECILES:
        np.testing.assert_allclose(national.loc[national["series"] == decile, "value"], source[decile])
    np.testing.assert_allclose(national.loc[national["series"] == "england", "value"],
                               source["england_value"])
    assert len(national) == 10 * len(PERIODS)
    for frame in (organisation, national):
        assert set(frame["indicator_id"]) == {"AMR02"} and set(frame["period_type"]) == {"rolling_12m"}
        assert set(frame["unit"]) == {"%"}
        assert not {"color", "colour", "marker", "linestyle"} & set(frame.columns)


def test_trend_national_dataset_is_shared_and_the_spec_is_one_template(indicator_table):
    first, second = trend_chart(indicator_table, "S01"), trend_chart(indicator_table, "S07")
    shared_first, shared_second = first.dataset("national"), second.dataset("national")
    assert shared_first.shared_key == "AMR02.sub_icb.rolling_12m.2024-02.deciles"
    assert shared_second.shared_key == shared_first.shared_key
    pd.testing.assert_frame_equal(shared_first.frame, shared_second.frame)
    assert shared_first.records() == shared_second.records()
    national_text = json.dumps(shared_first.records())
    for code in ("S01", "S07"):
        assert code not in national_text  # nothing names or marks the organisation
    assert not {"org_code", "org_name"} & set(shared_first.frame.columns)
    assert first.dataset("organisation").shared_key is None
    assert first.spec is second.spec  # cached template, organisation-independent
    assert first.params != second.params
    assert first.params["org_code"] == "S01" and second.params["org_code"] == "S07"
    assert "S07" not in json.dumps(first.spec) and "Sub-ICB" not in json.dumps(first.spec)
    declared = {param["name"] for param in first.spec["params"]}
    assert declared == {"org_code", "org_label"}
    page = first.page_spec(inline=False)
    assert set(page["datasets"]) == {"organisation"}  # the shared rows come from the site's file


def test_trend_spec_is_valid_reads_its_datasets_and_renders(indicator_table):
    chart = trend_chart(indicator_table, reference_line=(11.0, "National expectation: 11%"))
    assert validate_spec(chart.full_spec(720)) == []
    read = spec_data_names(chart.spec)
    assert read == {"organisation", "national"} == {d.name for d in chart.datasets}
    svg = chart.to_svg()
    assert svg.lstrip().startswith("<svg")
    assert "S01 5.0%" in svg  # the direct label: code and the hand-set latest value
    assert "National expectation: 11%" in svg  # the reference line's own label
    assert "Jan 2023" in svg and "Dec 2022" not in svg  # months read as UTC, not shifted


def test_trend_lines_differ_without_colour(indicator_table):
    chart = trend_chart(indicator_table)
    line_layers = [layer for layer in layers(chart.spec) if mark_type(layer) == "line"]
    scale = line_layers[0]["encoding"]["strokeDash"]["scale"]
    assert scale["domain"] == ["Organisation", "National decile", "National median", "England"]
    dashes = [tuple(dash) for dash in scale["range"]]
    assert len(set(dashes)) == len(dashes)  # every line has its own dash pattern
    assert dashes[scale["domain"].index("England")] == tuple(trend_module.ENGLAND_DASHES)
    for layer in line_layers:  # one merged legend: colour and pattern on the same field
        assert layer["encoding"]["strokeDash"]["field"] == layer["encoding"]["color"]["field"]
        assert layer["encoding"]["strokeDash"]["scale"] == scale
    (org_line,) = layer_reading(chart.spec, "organisation", "line", "'organisation'")
    assert org_line["mark"]["point"]  # the organisation alone has dots
    (label,) = layer_reading(chart.spec, "organisation", "text", "'organisation'")
    assert "datum.org_code" in json.dumps(label["transform"])  # the direct label names it
    legend = org_line["encoding"]["color"]["legend"]
    assert "org_label" in legend["labelExpr"]  # the legend names the organisation by parameter


def test_trend_tooltips_name_the_organisation_and_value(indicator_table):
    chart = trend_chart(indicator_table, decimals=2)
    (org_line,) = layer_reading(chart.spec, "organisation", "line", "'organisation'")
    assert {"org_name", "period", "value"} <= set(tooltip_fields(org_line))
    value_tip = next(t for t in org_line["encoding"]["tooltip"] if t["field"] == "value")
    assert value_tip["format"] == ",.2f" and value_tip["title"] == "Per cent (%)"
    national_points = layer_reading(chart.spec, "national", "point")
    assert national_points and {"series_label", "period", "value"} <= set(
        tooltip_fields(national_points[0]))
    y = org_line["encoding"]["y"]
    assert y["scale"]["zero"] is False  # rates are not squashed against zero
    x = org_line["encoding"]["x"]
    assert x["timeUnit"] == "utcyearmonth" and x["axis"]["format"] == "%b %Y"
    assert chart.spec["width"] == "container" and "title" not in chart.spec
    assert trend_chart(indicator_table, decimals=1).spec is not chart.spec
    with pytest.raises(ValueError, match="decimals"):
        trend_chart(indicator_table, decimals=-1)


def test_trend_words_come_from_the_data(indicator_table):
    chart = trend_chart(indicator_table)
    org = chart.data.loc[chart.data["series"] == "organisation"].dropna(subset=["value"])
    latest = org["value"].iloc[-1]
    assert latest == pytest.approx(5.0)
    assert "5.00%" in chart.alt_text  # the hand-set latest value, independently known
    assert format_value(latest, "%") in chart.alt_text
    assert "Sub-ICB S01 (S01)" in chart.alt_text
    national = chart.dataset("national").frame
    median = national.loc[(national["series"] == "decile_50")
                          & (national["period"] == PERIODS[-1]), "value"].iloc[0]
    assert format_value(median, "%") in chart.alt_text
    assert "decile" in chart.caption and "median" in chart.caption
    assert "sub-ICB locations" in chart.caption
    assert "Lower values are generally better" in chart.caption
    assert chart.chart_id == "AMR02_trend"
    # 5.0 is the lowest of the twenty values (the others are 800-1200 / 9000-11000 x 100),
    # and the interpolated 10th percentile lies above the lowest value.
    assert "below the national 10th percentile" in chart.alt_text


def test_trend_with_gaps_keeps_missing_points(indicator_table):
    table = indicator_table.copy()
    gap = (table["org_code"] == "S02") & (table["period"] == PERIODS[3])
    table.loc[gap, "value"] = np.nan
    chart = trend_chart(table, "S02")
    assert chart.data["value"].isna().sum() == 1
    records = chart.dataset("organisation").records()
    assert [row["value"] is None for row in records].count(True) == 1  # drawn as a gap
    assert records[3]["period"] == "2023-04-01" and records[3]["value"] is None


def test_trend_reference_line_is_a_labelled_rule_in_the_legend(indicator_table):
    chart = trend_chart(indicator_table, reference_line=(11.0, "National expectation: 11%"))
    reference = chart.data.loc[chart.data["series"] == "reference"]
    assert len(reference) == len(PERIODS) and (reference["value"] == 11.0).all()
    assert reference["org_code"].isna().all()  # the reference is not the organisation's value
    (rule,) = layer_reading(chart.spec, "organisation", "rule", "'reference'")
    assert rule["encoding"]["strokeDash"]["scale"]["domain"][-1] == "National reference"
    (label,) = layer_reading(chart.spec, "organisation", "text", "'reference'")
    assert label["encoding"]["text"]["field"] == "series_label"
    assert "national reference" in chart.caption
    plain = trend_chart(indicator_table)
    assert not layer_reading(plain.spec, "organisation", "rule")
    with pytest.raises(ValueError, match="finite"):
        trend_chart(indicator_table, reference_line=(float("nan"), "x"))


def test_trend_at_england_level_has_no_deciles():
    table = pd.DataFrame({
        "indicator_id": "ITEMS", "org_level": "england", "org_code": "ENG", "org_name": "England",
        "period": PERIODS[:3], "period_type": "month", "value": [1.0, 2.0, 3.0],
        "england_value": [1.0, 2.0, 3.0], **{decile: np.nan for decile in DECILES},
    })  # fmt: skip
    chart = plot_trend_with_deciles(
        table, "ENG", "england", "Items", "items per 1,000 patients", "neutral", "month")
    assert set(chart.dataset("national").frame["series"]) == {"england"}
    assert "deciles" not in chart.caption
    assert "3.00 items per 1,000 patients" in chart.alt_text
    domain = layers(chart.spec)[0]["encoding"]["strokeDash"]["scale"]["domain"]
    assert domain == ["Organisation", "England"]  # the legend shows only lines drawn
    assert validate_spec(chart.full_spec(360)) == []


def test_trend_decile_level_names_the_compared_level(indicator_table):
    england = (indicator_table.loc[indicator_table["org_code"] == "S01"]
               .assign(org_level="england", org_code="ENG", org_name="England"))
    chart = plot_trend_with_deciles(england, "ENG", "england", "Broad-spectrum", "%", "decrease",
                                    decile_level="sub_icb")
    assert chart.dataset("national").shared_key == "AMR02.sub_icb.rolling_12m.2024-02.deciles"
    assert "sub-ICB locations" in chart.caption
    assert set(chart.dataset("national").frame["org_level"]) == {"sub_icb"}
    with pytest.raises(ValueError, match="Unknown organisation level"):
        plot_trend_with_deciles(england, "ENG", "england", "T", "%", "decrease", decile_level="ccg")


def test_trend_empty_selection_and_errors(indicator_table):
    chart = trend_chart(indicator_table, "ZZZ")
    assert chart.data.empty and chart.spec is None
    assert NO_DATA_MESSAGE in chart.caption and "ZZZ" in chart.caption
    with pytest.raises(ValueError, match="decile_50"):
        trend_chart(indicator_table.drop(columns="decile_50"))
    with pytest.raises(ValueError, match="Unknown organisation level"):
        plot_trend_with_deciles(indicator_table, "S01", "ccg", "T", "%", "decrease")
    with pytest.raises(ValueError, match="improvement direction"):
        plot_trend_with_deciles(indicator_table, "S01", "sub_icb", "T", "%", "down")
    doubled = pd.concat([indicator_table, indicator_table.assign(indicator_id="AMR01")])
    with pytest.raises(ValueError, match="one indicator"):
        trend_chart(doubled)


# --- SPC ---------------------------------------------------------------------------------------
def test_spc_dataset_is_the_calculated_rows_and_the_spec_is_valid():
    table = make_spc_table()
    chart = spc_chart(table)
    calculated = calculate_spc_data(table, "decrease")
    assert [d.name for d in chart.datasets] == ["spc"] and chart.datasets[0].shared_key is None
    pd.testing.assert_frame_equal(chart.data[list(calculated.columns)], calculated)
    np.testing.assert_allclose(chart.data["value"], table["value"])
    assert set(chart.data["org_name"]) == {"Sub-ICB S01"} and set(chart.data["org_code"]) == {"S01"}
    assert set(chart.data["indicator_id"]) == {"SAF04"}
    assert chart.data["variation"].iloc[-1] == "special cause concern (high)"
    assert validate_spec(chart.full_spec(720)) == []
    assert spec_data_names(chart.spec) == {"spc"}
    svg = chart.to_svg()
    assert "Latest point: special cause concern (high)" in svg
    assert "Upper limit" in svg and "Mean" in svg and "Special cause: concern" in svg
    # A second organisation's chart reuses the same template.
    other = spc_chart(table.assign(org_code="S02"), org_name="Sub-ICB S02", org_code="S02")
    assert other.spec is chart.spec


def test_spc_point_types_differ_by_colour_and_shape():
    chart = spc_chart()
    (points,) = [layer for layer in layers(chart.spec) if mark_type(layer) == "point"]
    colour, shape = points["encoding"]["color"], points["encoding"]["shape"]
    assert colour["field"] == shape["field"] == "point_type"
    assert colour["scale"]["domain"] == shape["scale"]["domain"] == [
        "common_cause", "special_cause_improvement", "special_cause_concern"]
    assert len(set(colour["scale"]["range"])) == 3 and len(set(shape["scale"]["range"])) == 3
    assert "Special cause: improvement" in colour["legend"]["labelExpr"]
    assert colour["legend"] == shape["legend"]  # one legend, in words
    neutral = spc_chart(make_spc_table().assign(point_type="common_cause"),
                        improvement_direction="neutral")
    (neutral_points,) = [layer for layer in layers(neutral.spec) if mark_type(layer) == "point"]
    assert neutral_points["encoding"]["shape"]["scale"]["range"] == [
        "circle", "triangle-up", "triangle-down"]
    # Mean solid and limits dashed, each named by a direct label rather than by colour.
    (limits,) = [layer for layer in layers(chart.spec)
                 if mark_type(layer) == "line" and "fold" in json.dumps(layer.get("transform"))]
    dashes = limits["encoding"]["strokeDash"]["scale"]["range"]
    assert dashes[0] != dashes[1]


def test_spc_tooltips_name_the_organisation_and_value():
    chart = spc_chart(decimals=2)
    (points,) = [layer for layer in layers(chart.spec) if mark_type(layer) == "point"]
    fields = tooltip_fields(points)
    assert {"org_name", "period", "value", "variation", "mean", "lower_process_limit",
            "upper_process_limit"} <= set(fields)
    value_tip = next(t for t in points["encoding"]["tooltip"] if t["field"] == "value")
    assert value_tip["format"] == ",.2f" and value_tip["title"] == "Items per 1,000 patients"
    assert points["encoding"]["y"]["scale"]["zero"] is False


def test_spc_words_come_from_the_data():
    chart = spc_chart()
    assert len(chart.data) == 20
    assert "70.0 items per 1,000 patients" in chart.alt_text
    assert "special cause concern (high)" in chart.alt_text
    assert "Special cause points: 1 concern" in chart.alt_text
    assert "trial" not in chart.caption
    short = spc_chart(make_spc_table(8), unit="items", org_name="S01", org_code=None)
    assert "trial limits" in short.caption and "(trial limits)" in short.alt_text


def test_spc_rejects_bad_input():
    table = make_spc_table()
    kwargs = {"indicator_title": "T", "unit": "u", "org_name": "S01"}
    with pytest.raises(ValueError, match="neutral"):
        plot_spc(table, improvement_direction="neutral", **kwargs)
    with pytest.raises(ValueError, match="Unknown SPC point type"):
        plot_spc(table.assign(point_type="odd"), improvement_direction="decrease", **kwargs)
    with pytest.raises(ValueError, match="rolling 12-month"):
        plot_spc(table.assign(period_type="rolling_12m"), improvement_direction="decrease", **kwargs)
    with pytest.raises(ValueError, match="mean"):
        plot_spc(table.drop(columns="mean"), improvement_direction="decrease", **kwargs)
    with pytest.raises(ValueError, match="more than one row"):
        plot_spc(pd.concat([table, table.tail(1)]), improvement_direction="decrease", **kwargs)
    empty = plot_spc(table.iloc[0:0], improvement_direction="decrease", **kwargs)
    assert NO_DATA_MESSAGE in empty.caption and empty.data.empty and empty.spec is None


def test_no_matplotlib_in_these_modules():
    for module in (trend_module, spc_module):
        assert "matplotlib" not in inspect.getsource(module)
