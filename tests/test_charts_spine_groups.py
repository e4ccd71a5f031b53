"""Tests for the spine chart and the group comparison (Vega-Lite): data, words and specification."""

from __future__ import annotations

import copy
import html
import json
import re

import numpy as np
import pandas as pd
import pytest

from moopt.charts.base import NO_DATA_MESSAGE
from moopt.charts.groups import calculate_group_data, plot_group_comparison
from moopt.charts.spine import (
    ASSESSMENT_STYLE,
    calculate_spine_data,
    plot_spine,
)
from moopt.charts.web import validate_spec

TRICKY_NAME = r"The $x^$ Practice \ North_East 50% <b>&"
LONG_THEME = "National medicines optimisation opportunities 2024/25"


def make_spine_summary() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "indicator_id": ["AMR01", "MH01", "AMR02", "CVD01"],
            "short_title": ["Antibacterials per STAR-PU", "Antidepressants",
                            "Care-home medication reviews per 100 residents", "DOACs %"],
            "theme_title": ["Antimicrobial stewardship", "Mental health",
                            "Antimicrobial stewardship", LONG_THEME],
            "period": "12 months to Feb 2024",
            "value": [0.95, 1.2, 9.0, 80.0],
            "england_value": [0.85, 1.0, 10.0, 82.0],
            "minimum": [0.5, 0.6, 5.0, 60.0],
            "p25": [0.75, 0.9, 8.0, 78.0],
            "p75": [0.95, 1.1, 11.0, 86.0],
            "maximum": [1.3, 1.5, 16.0, 92.0],
            "assessment": ["worse", "higher", "better", "similar"],
            "improvement_direction": ["decrease", "neutral", "decrease", "increase"],
            "unit": ["items per STAR-PU", "ADQs per STAR-PU", "%", "%"],
            "decimals": [2, 2, 1, 1],
            "theme_order": [1, 2, 1, 3],  # not kept: only the columns the chart explains
        }
    )


def spine(summary=None, org_code="S01", org_name="Sub-ICB S01", org_level="sub_icb"):
    return plot_spine(make_spine_summary() if summary is None else summary, org_name=org_name,
                      org_code=org_code, org_level=org_level, period_label="12 months to Feb 2024")


def make_group_table(org_name: str = "Sub-ICB S01") -> pd.DataFrame:
    return pd.DataFrame({
        "indicator_id": "TOC03", "org_level": ["sub_icb", "sub_icb", "england", "england"],
        "org_code": ["S01", "S01", "ENG", "ENG"],
        "org_name": [org_name, org_name, "England", "England"],
        "period": pd.Timestamp("2024-03-01"), "period_type": "year",
        "area": [org_name, org_name, "England", "England"],
        "group": ["follow_up_completed", "follow_up_not_completed"] * 2,
        "breakdown": ["follow_up_completed", "follow_up_not_completed"] * 2,
        "value": [12.0, 18.5, 13.2, 17.9], "lower_95": [9.1, 15.0, 12.8, 17.4],
        "upper_95": [15.5, 22.4, 13.6, 18.4], "numerator": [30, 60, 3000, 6000],
        "denominator": [250, 324, 22727, 33520],
    })  # fmt: skip


def groups(table=None, **kwargs):
    return plot_group_comparison(make_group_table() if table is None else table,
                                 title="Readmission by follow-up", unit="% of referred patients",
                                 group_label="Community pharmacy follow-up",
                                 chart_id="TOC03_by_group", **kwargs)


def layers_by_mark(spec: dict, mark: str) -> list[dict]:
    return [layer for layer in spec["layer"] if layer["mark"]["type"] == mark]


def vega_of(chart) -> dict:
    import vl_convert

    compiled = vl_convert.vegalite_to_vega(chart.full_spec(720), vl_version="6.4")
    return json.loads(compiled) if isinstance(compiled, str) else compiled


def svg_texts(svg: str) -> list[str]:
    """Each <text> element's words (its lines, <tspan>s, joined by spaces)."""
    found = re.findall(r"<text[^>]*>(.*?)</text>", svg, flags=re.S)
    return [html.unescape(" ".join(re.sub(r"<[^>]+>", " ", t).split())) for t in found]


# --- spine: data --------------------------------------------------------------------------------
def test_spine_scaling_labels_and_words():
    chart = spine()
    data = chart.data.set_index("indicator_id")
    # AMR01: England 0.85, widest distance 0.45 (to 1.3); lower is better -> mirrored.
    assert data.loc["AMR01", "scaled_value"] == pytest.approx(-(0.95 - 0.85) / 0.45)
    assert data.loc["AMR01", "scaled_maximum"] == pytest.approx(-1.0)
    assert data.loc["AMR01", "scale_reversed"]
    # MH01 is neutral: not mirrored; widest distance 0.5 (to 1.5).
    assert data.loc["MH01", "scaled_value"] == pytest.approx(0.2 / 0.5)
    assert not data.loc["MH01", "scale_reversed"]
    assert data.loc["AMR02", "scaled_value"] == pytest.approx(1 / 6)  # (9-10)/6, mirrored
    assert dict(data["comparison_label"]) == {
        "AMR01": "higher (worse)", "MH01": "higher", "AMR02": "lower (better)", "CVD01": "similar"}
    assert "1 better, 1 worse, 1 similar, 1 higher" in chart.alt_text
    assert "0.950 items per STAR-PU against England 0.850 items per STAR-PU" in chart.alt_text
    assert "mirrored" in chart.caption and "sub-ICB locations" in chart.caption


def test_spine_groups_rows_by_theme_in_order_of_first_appearance():
    data = spine().data
    # AMR02 joins AMR01 under its theme; the order within a theme is kept.
    assert list(data["indicator_id"]) == ["AMR01", "AMR02", "MH01", "CVD01"]
    without_themes = spine(make_spine_summary().drop(columns="theme_title")).data
    assert list(without_themes["indicator_id"]) == ["AMR01", "MH01", "AMR02", "CVD01"]


def test_spine_dataset_is_the_calculated_rows_for_this_page_only():
    summary = make_spine_summary()
    chart = spine(summary)
    assert [d.name for d in chart.datasets] == ["spine"]
    assert chart.datasets[0].shared_key is None  # this organisation's rows only
    expected = calculate_spine_data(summary, org_code="S01", org_name="Sub-ICB S01")
    pd.testing.assert_frame_equal(chart.data, expected)
    assert list(chart.data.columns[:2]) == ["org_code", "org_name"]
    assert "theme_order" not in chart.data.columns  # input columns the chart does not explain
    internal = [c for c in chart.data.columns if c.startswith("_") or c in ("colour", "marker")]
    assert internal == []
    assert chart.params == {"org_code": "S01"}
    assert {"name": "org_code", "value": ""} in chart.spec["params"]
    assert validate_spec(chart.full_spec(720)) == []
    assert chart.spec["data"] == {"name": "spine"}


def test_spine_template_is_shared_between_organisations():
    first = spine(org_code="S01", org_name="Sub-ICB S01")
    second = spine(org_code="S02", org_name="Two")
    assert first.spec is second.spec  # cached template, nothing organisation-specific in it
    assert first.params != second.params
    assert "Sub-ICB S01" not in json.dumps(first.spec) and "S01" not in json.dumps(first.spec)
    pd.testing.assert_frame_equal(first.data.drop(columns=["org_code", "org_name"]),
                                  second.data.drop(columns=["org_code", "org_name"]))


def test_spine_row_without_value_has_no_marker_and_says_so():
    summary = make_spine_summary()
    summary.loc[1, ["value", "assessment"]] = [np.nan, np.nan]
    chart = spine(summary, org_code="Q01", org_name="ICB Q01", org_level="icb")
    assert chart.data.set_index("indicator_id").loc["MH01", "comparison_label"] == "no value"
    assert "no value" in chart.alt_text and "integrated care boards" in chart.caption
    (marker,) = layers_by_mark(chart.spec, "point")
    assert "isValid(datum.value)" in json.dumps(marker["transform"])  # no marker without a value


def test_spine_errors_and_empty():
    summary = make_spine_summary()
    with pytest.raises(ValueError, match="Unknown assessment"):
        spine(summary.assign(assessment="great"))
    with pytest.raises(ValueError, match="p25"):
        spine(summary.drop(columns="p25"))
    with pytest.raises(ValueError, match="more than once: AMR01"):
        spine(pd.concat([summary, summary.iloc[[0]]]))
    with pytest.raises(ValueError, match="improvement direction"):
        spine(summary.assign(improvement_direction="up"))
    empty = spine(summary.iloc[0:0])
    assert NO_DATA_MESSAGE in empty.caption and empty.spec is None and empty.data.empty
    not_compared = spine(summary.assign(assessment=np.nan))
    assert set(not_compared.data["comparison_label"]) == {"not compared"}


# --- spine: what is drawn ----------------------------------------------------------------------
def test_spine_assessment_is_shown_by_shape_and_colour_in_one_key():
    chart = spine()
    (marker,) = layers_by_mark(chart.spec, "point")
    encoding = marker["encoding"]
    shape, fill = encoding["shape"]["scale"], encoding["fill"]["scale"]
    assert encoding["shape"]["field"] == encoding["fill"]["field"] == encoding["stroke"]["field"]
    assert shape["domain"] == fill["domain"] == list(ASSESSMENT_STYLE)
    assert {"better", "worse", "similar", "higher", "lower", "not compared"} == set(shape["domain"])
    assert len(set(shape["range"])) == len(shape["range"])  # every comparison its own shape
    # The markers' shape, fill and stroke make one key; the range and middle half another.
    legends = vega_of(chart)["legends"]
    assert len(legends) == 2
    key = next(legend for legend in legends if "shape" in legend)
    assert key["fill"] and key["stroke"] and "Not compared" in json.dumps(key)


def test_spine_tooltips_name_the_organisation_and_the_values():
    chart = spine()
    for layer in chart.spec["layer"][1:]:  # every layer but the theme headers
        fields = {item["field"]: item["title"] for item in layer["encoding"]["tooltip"]}
        assert fields["org_name"] == "Organisation"
        wanted = {"short_title", "period", "_value_text", "_england_text", "comparison_label"}
        assert wanted <= set(fields)
    no_period = spine(make_spine_summary().drop(columns="period"))
    assert "period" not in json.dumps(no_period.spec["layer"][1]["encoding"]["tooltip"])


@pytest.mark.parametrize(
    ("directions", "left", "right", "caption_words"),
    [
        (["decrease", "increase", "decrease", "increase"], "Worse", "Better",
         "better is to the right"),
        (["neutral"] * 4, "Lower", "Higher", "higher values are to the right"),
        (["decrease", "neutral", "decrease", "increase"], "Worse, or lower", "Better, or higher",
         "neither direction is better, higher values are to the right"),
    ],
)
def test_spine_axis_words_match_the_mirroring(directions, left, right, caption_words):
    summary = make_spine_summary().assign(improvement_direction=directions)
    chart = spine(summary)
    axis = layers_by_mark(chart.spec, "bar")[0]["encoding"]["x"]["axis"]
    assert f"'\u2190 {left}'" in axis["labelExpr"] and f"'{right} \u2192'" in axis["labelExpr"]
    assert caption_words in chart.caption
    mirrored = chart.data["scale_reversed"]
    assert list(mirrored) == [d == "decrease" for d in chart.data["improvement_direction"]]
    if not mirrored.any():
        assert "mirrored" not in chart.caption


def test_spine_static_copy_at_phone_width_keeps_every_label_whole():
    """At 360 px long names wrap onto more lines; every word is drawn and nothing is cut."""
    summary = make_spine_summary()
    summary.loc[2, "short_title"] = TRICKY_NAME + " and a long tail of extra words here"
    chart = spine(summary, org_name=TRICKY_NAME)
    spec = chart.full_spec(360)
    spec.pop("title")  # the page shows the title as HTML above the chart
    import vl_convert

    svg = vl_convert.vegalite_to_svg(spec, vl_version="6.4")
    texts = svg_texts(svg)
    drawn = " ".join(texts)
    assert "…" not in drawn
    wanted = [*summary["short_title"], *summary["theme_title"], "(lower is better)",
              "(higher is better)", "England", "Better, or higher"]
    for words in wanted:
        for word in words.split():
            assert word in drawn, word
    assert len([t for t in texts if t == "Antimicrobial stewardship"]) == 1  # one header per theme
    height = float(re.search(r'<svg[^>]*height="([\d.]+)"', svg).group(1))
    assert height > 20 * (len(summary) * 2 + 3)  # grows with the rows (and their wrapped lines)


def test_spine_tooltip_texts_have_decimals_and_units():
    """The tooltip's formatted fields, drawn as text through Vega: decimals and units per row."""
    chart = spine()
    spec = chart.full_spec(900)
    spec.pop("title")
    probe = copy.deepcopy(layers_by_mark(spec, "point")[0])
    probe["mark"] = {"type": "text", "align": "left"}
    probe["encoding"] = {"y": probe["encoding"]["y"], "x": {"value": 0},
                         "text": {"field": "_probe", "type": "nominal"}}
    probe["transform"] = probe.get("transform", []) + [{"calculate": (
        "datum.indicator_id + '|' + datum._value_text + '|' + datum._england_text + '|' "
        "+ datum._range_text + '|' + datum._right_means"), "as": "_probe"}]
    spec["layer"] = [probe]
    spec.pop("height", None)
    import vl_convert

    texts = set(svg_texts(vl_convert.vegalite_to_svg(spec, vl_version="6.4")))
    assert "AMR01|0.95 items per STAR-PU|0.85 items per STAR-PU|0.50 items per STAR-PU to 1.30 " \
           "items per STAR-PU|better (lower values; row mirrored)" in texts
    assert "AMR02|9.0%|10.0%|5.0% to 16.0%|better (lower values; row mirrored)" in texts
    assert "MH01|1.20 ADQs per STAR-PU|1.00 ADQs per STAR-PU|0.60 ADQs per STAR-PU to 1.50 " \
           "ADQs per STAR-PU|higher values" in texts


# --- group comparison ----------------------------------------------------------------------------
def test_groups_dataset_spec_and_words():
    table = make_group_table()
    chart = groups(table)
    pd.testing.assert_frame_equal(chart.data, calculate_group_data(table))
    assert [d.name for d in chart.datasets] == ["groups"] and chart.datasets[0].shared_key is None
    assert list(chart.data.columns) == [
        "indicator_id", "org_level", "org_code", "org_name", "period", "period_type", "area",
        "group", "value", "lower_95", "upper_95", "numerator", "denominator"]
    assert validate_spec(chart.full_spec(720)) == []
    assert "follow up completed 12.0 (95% interval 9.1 to 15.5, 30 of 250)" in chart.alt_text
    assert "England: follow up completed 13.2" in chart.alt_text
    assert "circles Sub-ICB S01 and squares England" in chart.caption
    y = layers_by_mark(chart.spec, "point")[0]["encoding"]["y"]
    assert y["scale"]["zero"] is False  # a rate: the axis follows the data


def test_groups_template_is_shared_and_has_one_key_of_shape_and_colour():
    first, second = groups(make_group_table("One")), groups(make_group_table("Two"))
    assert first.spec is second.spec
    assert "One" not in json.dumps(first.spec)
    (marker,) = layers_by_mark(first.spec, "point")
    assert marker["encoding"]["shape"]["field"] == marker["encoding"]["color"]["field"] == "area"
    assert marker["encoding"]["shape"]["sort"] is None  # organisation first, then England
    assert len(vega_of(first)["legends"]) == 1
    tooltip = {item["field"]: item for item in marker["encoding"]["tooltip"]}
    assert tooltip["area"]["title"] == "Area" and tooltip["value"]["format"] == ",.1f"
    assert {"lower_95", "upper_95", "numerator", "denominator", "period"} <= set(tooltip)
    assert groups(decimals=2).spec["layer"][1]["encoding"]["tooltip"][3]["format"] == ",.2f"


def test_groups_static_copy_draws_names_and_values_literally():
    chart = groups(make_group_table(TRICKY_NAME))
    texts = svg_texts(chart.to_svg(width=360))
    assert TRICKY_NAME in texts and "12.0" in texts and "17.9" in texts
    assert "follow up not completed" in texts  # group names without underscores


def test_groups_errors_and_empty():
    table = make_group_table()
    with pytest.raises(ValueError, match="upper_95"):
        groups(table.drop(columns="upper_95"))
    with pytest.raises(ValueError, match="repeated area and group"):
        groups(pd.concat([table, table.iloc[[0]]]))
    with pytest.raises(ValueError, match="decimals"):
        groups(decimals=-1)
    empty = groups(table.assign(value=np.nan))
    assert NO_DATA_MESSAGE in empty.caption and empty.spec is None


def test_modules_import_without_matplotlib():
    import moopt.charts.groups as groups_module
    import moopt.charts.spine as spine_module

    for module in (groups_module, spine_module):
        source = open(module.__file__, encoding="utf-8").read()
        assert "matplotlib" not in source
