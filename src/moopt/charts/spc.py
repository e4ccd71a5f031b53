"""Statistical process control (XmR) chart in the NHS "Making Data Count" style.

The mean, process limits and point types are computed by :mod:`moopt.stats`;
this module draws them as a Vega-Lite specification. Each point type has its own
marker shape as well as its own colour, the legend names them in words, the
mean is a solid line and the process limits dashed ones, and the variation of
the latest point is written out in words in the top right corner (the text form
of the Making Data Count variation icon).

The chart reads one dataset, ``spc``: this organisation's monthly points with
their mean, limits and point types (nothing in it is shared with other pages).
The specification is a template cached per unit, decimals and improvement
direction.
"""

from __future__ import annotations

import json
from functools import lru_cache

import altair as alt
import numpy as np
import pandas as pd

from moopt.charts.base import (
    CHART_HEIGHT,
    NHS_BLUE,
    NHS_DARK_GREY,
    NHS_MID_GREY,
    NHS_ORANGE,
    NHS_PURPLE,
    NHS_WHITE,
    Chart,
    ChartData,
    check_direction,
    check_text,
    direction_sentence,
    empty_chart,
    format_period,
    format_value,
    make_chart_id,
    require_columns,
    shorten,
    single_value,
    spec_from_altair,
    unit_axis_label,
)

SPC_COLUMNS: tuple[str, ...] = (
    "period",
    "value",
    "mean",
    "lower_process_limit",
    "upper_process_limit",
    "point_type",
)
IMPROVEMENT = "special_cause_improvement"
CONCERN = "special_cause_concern"
NEUTRAL_HIGH = "special_cause_neutral_high"
NEUTRAL_LOW = "special_cause_neutral_low"
COMMON_CAUSE = "common_cause"
POINT_TYPES: tuple[str, ...] = (COMMON_CAUSE, IMPROVEMENT, CONCERN, NEUTRAL_HIGH, NEUTRAL_LOW)

# Colour AND shape (Vega-Lite symbol names) for each point type, and a symbol area in square
# pixels: special causes larger, and diamonds and triangles larger still, since Vega draws
# them with about half the ink of a square of the same size.
POINT_STYLE: dict[str, tuple[str, str, int]] = {
    COMMON_CAUSE: (NHS_MID_GREY, "circle", 60),
    IMPROVEMENT: (NHS_BLUE, "diamond", 180),
    CONCERN: (NHS_ORANGE, "square", 100),
    NEUTRAL_HIGH: (NHS_PURPLE, "triangle-up", 150),
    NEUTRAL_LOW: (NHS_PURPLE, "triangle-down", 150),
}
POINT_WORDS: dict[str, str] = {
    COMMON_CAUSE: "common cause variation",
    IMPROVEMENT: "special cause variation, improvement",
    CONCERN: "special cause variation, concern",
    NEUTRAL_HIGH: "special cause variation, higher",
    NEUTRAL_LOW: "special cause variation, lower",
}
POINT_LEGEND: dict[str, str] = {
    COMMON_CAUSE: "Common cause",
    IMPROVEMENT: "Special cause: improvement",
    CONCERN: "Special cause: concern",
    NEUTRAL_HIGH: "Special cause: high",
    NEUTRAL_LOW: "Special cause: low",
}
SPECIAL_CAUSE_SHORT: dict[str, str] = {
    IMPROVEMENT: "improvement",
    CONCERN: "concern",
    NEUTRAL_HIGH: "high",
    NEUTRAL_LOW: "low",
}
LIMIT_DASHES = [5, 3]
TRIAL_LIMIT_POINTS = 13  # fewer points than this: the limits are trial limits
SPC_DATASET = "spc"


def calculate_spc_data(spc_table: pd.DataFrame, improvement_direction: str) -> pd.DataFrame:
    """Validate and order the SPC rows drawn by :func:`plot_spc`.

    Returns
    -------
    pandas.DataFrame
        One row per period: ``period``, ``value``, ``mean``,
        ``lower_process_limit``, ``upper_process_limit``, ``point_type`` and
        ``point_description`` (the point type in words).

    Raises
    ------
    ValueError
        For missing columns, repeated periods, unknown point types, point types
        that contradict ``improvement_direction``, or rolling 12-month periods
        (overlapping sums break the independence the SPC rules assume).
    """
    require_columns(spc_table, SPC_COLUMNS, "SPC table")
    check_direction(improvement_direction)
    if "period_type" in spc_table.columns and (spc_table["period_type"] == "rolling_12m").any():
        raise ValueError(
            "SPC rules are not valid on overlapping rolling 12-month values; "
            "use monthly (or seasonally adjusted monthly) values."
        )
    for column, what in (("indicator_id", "indicator"), ("org_code", "organisation")):
        if column in spc_table.columns:
            single_value(spc_table[column], what)
    data = spc_table.loc[:, list(SPC_COLUMNS)].copy()
    data["period"] = pd.to_datetime(data["period"])
    numeric = ["value", "mean", "lower_process_limit", "upper_process_limit"]
    data[numeric] = data[numeric].astype("float64")
    if data["period"].duplicated().any():
        raise ValueError("The SPC table has more than one row for a period.")
    with_value = data["value"].notna()
    unknown = set(data.loc[with_value, "point_type"].astype(object)) - set(POINT_TYPES)
    if unknown:
        raise ValueError(
            f"Unknown SPC point type(s) {sorted(map(str, unknown))}; "
            f"use {', '.join(POINT_TYPES)}."
        )
    present = set(data.loc[with_value, "point_type"])
    if improvement_direction == "neutral" and present & {IMPROVEMENT, CONCERN}:
        raise ValueError(
            "The indicator has no improvement direction, but the SPC table marks points as "
            "improvement or concern; recompute them with the neutral direction."
        )
    if improvement_direction != "neutral" and present & {NEUTRAL_HIGH, NEUTRAL_LOW}:
        raise ValueError(
            "The indicator has an improvement direction, but the SPC table marks points as "
            "neutral high/low; recompute them with the indicator's direction."
        )
    data = data.sort_values("period").reset_index(drop=True)
    data["point_description"] = data["point_type"].map(POINT_WORDS)
    return data


def plot_spc(
    spc_table: pd.DataFrame,
    *,
    indicator_title: str,
    unit: str,
    org_name: str,
    improvement_direction: str,
    org_code: str | None = None,
    chart_id: str | None = None,
    decimals: int = 1,
) -> Chart:
    """Draw an XmR chart: values, mean, process limits and point types.

    Parameters
    ----------
    spc_table : pandas.DataFrame
        One organisation's monthly series with the SPC columns
        (:data:`SPC_COLUMNS`), as produced by :mod:`moopt.stats`.
    indicator_title, unit : str
        Indicator name and the unit of its value.
    org_name : str
        Organisation shown, for the title, text and tooltips.
    improvement_direction : {"increase", "decrease", "neutral"}
        Must agree with the point types.
    org_code : str, optional
        Organisation code for the text, the data and the default chart id.
    chart_id : str, optional
        By default ``"<indicator_id>_spc"``.
    decimals : int, default 1
        Decimal places of values in tooltips.

    Returns
    -------
    Chart
        One dataset, ``spc``: the rows of :func:`calculate_spc_data` with the
        identifying columns ``indicator_id``, ``org_code`` and ``org_name`` in
        front, and ``variation`` (each point's variation in words, as the label
        of the latest point says it) and ``unit`` after.

    Notes
    -----
    With fewer than 13 points the limits are trial limits and the caption says so.
    """
    check_text(indicator_title, "indicator title")
    check_text(unit, "unit")
    check_text(org_name, "organisation name")
    _check_decimals(decimals)
    data = calculate_spc_data(spc_table, improvement_direction)
    indicator_id = None
    if "indicator_id" in spc_table.columns and spc_table["indicator_id"].notna().any():
        indicator_id = str(spc_table["indicator_id"].dropna().iloc[0])
    chart_id = chart_id or make_chart_id(indicator_id, "spc")
    who = f"{org_name} ({org_code})" if org_code else org_name
    title = f"{indicator_title}: {shorten(org_name, 50)}, statistical process control"
    data.insert(0, "indicator_id", indicator_id)
    data.insert(1, "org_code", org_code)
    data.insert(2, "org_name", org_name)
    data["variation"] = [
        _variation_label(row) if pd.notna(row["value"]) else None for _, row in data.iterrows()
    ]
    data["unit"] = unit
    plotted = data.dropna(subset=["value"])
    if plotted.empty:
        return empty_chart(chart_id, title, f"there are no monthly values for {who}", data)

    latest = plotted.iloc[-1]
    variation = latest["variation"]
    trial = len(plotted) < TRIAL_LIMIT_POINTS
    caption = (
        "Grey dots joined by a line are the monthly values; the solid line is their mean and "
        "the dashed lines are the process limits, within which values are expected to vary "
        "by chance alone. Points marked with a different shape and colour show special "
        "cause variation (a point outside the limits, a run of 7 on one side of the mean, "
        "7 rising or falling in a row, or 2 of 3 close to a limit)."
    )
    if trial:
        caption += (
            f" With only {len(plotted)} points these are trial limits, to be recalculated "
            "when more data arrive."
        )
    sentence = direction_sentence(improvement_direction)
    caption += f" {sentence}" if sentence else ""

    special = plotted.loc[plotted["point_type"] != COMMON_CAUSE, "point_type"].value_counts()
    special_words = (
        ", ".join(f"{count} {SPECIAL_CAUSE_SHORT[kind]}" for kind, count in special.items())
        if len(special)
        else "none"
    )
    alt_text = (
        f"Statistical process control chart of {indicator_title} for {who}, "
        f"{len(plotted)} months from {format_period(plotted['period'].iloc[0])} to "
        f"{format_period(latest['period'])}. Mean {format_value(latest['mean'], unit)}, "
        f"process limits {format_value(latest['lower_process_limit'], unit)} to "
        f"{format_value(latest['upper_process_limit'], unit)}"
        + (" (trial limits)" if trial else "")
        + f". The latest value is {format_value(latest['value'], unit)}: {variation}. "
        f"Special cause points: {special_words}."
    )
    dataset = ChartData(SPC_DATASET, data, f"{shorten(org_name, 60)}'s monthly values and limits")
    return Chart(chart_id, title, caption, alt_text, [dataset],
                 _spc_spec(unit, int(decimals), improvement_direction))


def _check_decimals(decimals: int) -> None:
    whole = isinstance(decimals, (int, np.integer)) and not isinstance(decimals, bool)
    if not whole or not 0 <= decimals <= 6:
        raise ValueError(
            f"The number of decimals must be a whole number from 0 to 6, not {decimals!r}.")


def _js(text: str) -> str:
    """``text`` as a string literal in a Vega expression."""
    return json.dumps(text)


@lru_cache(maxsize=256)
def _spc_spec(unit: str, decimals: int, improvement_direction: str) -> dict:
    """The SPC chart's Vega-Lite template; nothing in it depends on the organisation."""
    number = f",.{decimals}f"
    value_title = unit_axis_label(unit)
    x = alt.X("period:T", timeUnit="utcyearmonth", title="Month",
              axis=alt.Axis(format="%b %Y", labelLimit=120))
    y_title = alt.Y("value:Q", title=value_title, scale=alt.Scale(zero=False))
    base = alt.Chart(alt.NamedData(name=SPC_DATASET))

    # Mean and limits folded into one long table, each line named by a direct label at its
    # right end (solid mean, dashed limits), so the chart needs no second legend.
    folded = (
        base.transform_fold(["mean", "lower_process_limit", "upper_process_limit"],
                            as_=["limit", "limit_value"])
        .transform_calculate(line="datum.limit === 'mean' ? 'Mean' : 'Process limits'")
    )
    limit_y = alt.Y("limit_value:Q", title=value_title, scale=alt.Scale(zero=False))
    limit_lines = folded.mark_line(strokeWidth=1.4, color=NHS_DARK_GREY).encode(
        x=x,
        y=limit_y,
        detail="limit:N",
        strokeDash=alt.StrokeDash("line:N", legend=None, scale=alt.Scale(
            domain=["Mean", "Process limits"], range=[[1, 0], LIMIT_DASHES])),
    )
    limit_labels = (
        folded.transform_filter("isValid(datum.limit_value) && isFinite(datum.limit_value)")
        .transform_window(recency="row_number()", groupby=["limit"],
                          sort=[alt.SortField("period", order="descending")])
        .transform_filter("datum.recency === 1")
        .transform_calculate(label="datum.limit === 'mean' ? 'Mean' : datum.limit === "
                                   "'upper_process_limit' ? 'Upper limit' : 'Lower limit'")
        .mark_text(align="left", baseline="middle", dx=9, color=NHS_DARK_GREY)
        .encode(x=x, y=limit_y, text="label:N")
    )
    values_line = base.mark_line(strokeWidth=1.2, color=NHS_MID_GREY).encode(x=x, y=y_title)

    kinds = ([COMMON_CAUSE, NEUTRAL_HIGH, NEUTRAL_LOW] if improvement_direction == "neutral"
             else [COMMON_CAUSE, IMPROVEMENT, CONCERN])
    label_expr = " : ".join(f"datum.label === {_js(kind)} ? {_js(POINT_LEGEND[kind])}"
                            for kind in kinds)
    # One column: the three entries fit at 360 px without cutting their words.
    legend = alt.Legend(title=None, columns=1, labelExpr=f"{label_expr} : datum.label")
    size_expr = " : ".join(f"datum.point_type === {_js(kind)} ? {POINT_STYLE[kind][2]}"
                           for kind in kinds)
    points = (
        base.transform_filter("isValid(datum.value) && isFinite(datum.value)")
        .transform_calculate(symbol_size=f"{size_expr} : {POINT_STYLE[COMMON_CAUSE][2]}")
        .mark_point(filled=True, stroke=NHS_WHITE, strokeWidth=0.6, opacity=1)
        .encode(
            x=x,
            y=y_title,
            color=alt.Color("point_type:N", legend=legend, scale=alt.Scale(
                domain=kinds, range=[POINT_STYLE[kind][0] for kind in kinds])),
            shape=alt.Shape("point_type:N", legend=legend, scale=alt.Scale(
                domain=kinds, range=[POINT_STYLE[kind][1] for kind in kinds])),
            size=alt.Size("symbol_size:Q", scale=None),
            tooltip=[
                alt.Tooltip("org_name:N", title="Organisation"),
                alt.Tooltip("period:T", timeUnit="utcyearmonth", format="%b %Y", title="Month"),
                alt.Tooltip("value:Q", format=number, title=value_title),
                alt.Tooltip("variation:N", title="Variation"),
                alt.Tooltip("mean:Q", format=number, title="Mean"),
                alt.Tooltip("lower_process_limit:Q", format=number, title="Lower process limit"),
                alt.Tooltip("upper_process_limit:Q", format=number, title="Upper process limit"),
            ],
        )
    )
    # The latest point's variation in words, above the top right corner of the plot.
    latest_label = (
        base.transform_filter("isValid(datum.value) && isFinite(datum.value)")
        .transform_window(recency="row_number()",
                          sort=[alt.SortField("period", order="descending")])
        .transform_filter("datum.recency === 1")
        .transform_calculate(label="'Latest point: ' + datum.variation")
        .mark_text(align="right", baseline="bottom", dy=-6, fontWeight="bold", color=NHS_DARK_GREY,
                   limit={"expr": "width"})  # cut on a phone, never past the plot's left edge
        .encode(x=alt.value("width"), y=alt.value(0), text="label:N")
    )
    chart = alt.layer(limit_lines, limit_labels, values_line, points, latest_label).properties(
        width="container", height=CHART_HEIGHT)
    return spec_from_altair(chart)


def _variation_label(latest: pd.Series) -> str:
    """The latest point's variation in words, e.g. "special cause improvement (high)"."""
    point_type = str(latest["point_type"])
    if point_type == COMMON_CAUSE:
        return "common cause variation"
    side = "high" if latest["value"] > latest["mean"] else "low"
    if point_type == IMPROVEMENT:
        return f"special cause improvement ({side})"
    if point_type == CONCERN:
        return f"special cause concern ({side})"
    return "special cause variation (high)" if point_type == NEUTRAL_HIGH else (
        "special cause variation (low)"
    )
