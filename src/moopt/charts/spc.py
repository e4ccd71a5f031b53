"""Statistical process control (XmR) chart in the NHS "Making Data Count" style.

The mean, process limits and point types are computed by :mod:`moopt.stats`;
this module draws them. Each point type has its own marker shape as well as its
own colour, and the variation of the latest point is written out in words in
the top right corner (the text form of the Making Data Count variation icon).
"""

from __future__ import annotations

import pandas as pd
from matplotlib import dates as mdates
from matplotlib.lines import Line2D

from moopt.charts.base import (
    add_legend,
    NHS_BLUE,
    NHS_DARK_GREY,
    NHS_MID_GREY,
    NHS_ORANGE,
    NHS_PURPLE,
    NHS_WHITE,
    Chart,
    check_direction,
    check_text,
    direction_sentence,
    empty_chart,
    finish_axes,
    format_period,
    format_value,
    make_chart_id,
    new_figure,
    require_columns,
    shorten,
    single_value,
    styled,
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

POINT_STYLE: dict[str, dict[str, object]] = {
    COMMON_CAUSE: {"marker": "o", "s": 20, "color": NHS_MID_GREY},
    IMPROVEMENT: {"marker": "D", "s": 48, "color": NHS_BLUE},
    CONCERN: {"marker": "s", "s": 48, "color": NHS_ORANGE},
    NEUTRAL_HIGH: {"marker": "^", "s": 52, "color": NHS_PURPLE},
    NEUTRAL_LOW: {"marker": "v", "s": 52, "color": NHS_PURPLE},
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
TRIAL_LIMIT_POINTS = 13  # fewer points than this: the limits are trial limits


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
        Organisation shown, for the title and text.
    improvement_direction : {"increase", "decrease", "neutral"}
        Must agree with the point types.
    org_code : str, optional
        Organisation code for the text and the default chart id.
    chart_id : str, optional
        By default ``"<indicator_id>_spc"``.

    Returns
    -------
    Chart
        ``data`` is :func:`calculate_spc_data` plus a ``unit`` column.

    Notes
    -----
    With fewer than 13 points the limits are trial limits and the caption says so.
    """
    check_text(indicator_title, "indicator title")
    check_text(unit, "unit")
    check_text(org_name, "organisation name")
    data = calculate_spc_data(spc_table, improvement_direction).assign(unit=unit)
    indicator_id = None
    if "indicator_id" in spc_table.columns and spc_table["indicator_id"].notna().any():
        indicator_id = str(spc_table["indicator_id"].dropna().iloc[0])
    chart_id = chart_id or make_chart_id(indicator_id, "spc")
    who = f"{org_name} ({org_code})" if org_code else org_name
    title = f"{indicator_title}: {shorten(org_name, 50)}, statistical process control"
    plotted = data.dropna(subset=["value"])
    if plotted.empty:
        return empty_chart(chart_id, title, f"there are no monthly values for {who}", data)

    latest = plotted.iloc[-1]
    variation = _variation_label(latest)
    with styled():
        figure, axes = new_figure()
        x = data["period"].to_numpy()
        (values_line,) = axes.plot(
            x, data["value"].to_numpy(), color=NHS_MID_GREY, linewidth=1.2, zorder=2
        )
        values_line.set_gid("value")
        (mean_line,) = axes.plot(
            x, data["mean"].to_numpy(), color=NHS_DARK_GREY, linewidth=1.4, zorder=1,
            label="Mean",
        )
        mean_line.set_gid("mean")
        for column in ("lower_process_limit", "upper_process_limit"):
            (limit_line,) = axes.plot(
                x, data[column].to_numpy(), color=NHS_DARK_GREY, linewidth=1.1,
                linestyle=(0, (5, 3)), zorder=1, label="Process limits",
            )
            limit_line.set_gid(column)
        handles: list[object] = [
            mean_line,
            Line2D([], [], color=NHS_DARK_GREY, linestyle=(0, (5, 3)), label="Process limits"),
        ]
        for point_type in POINT_TYPES:
            rows = plotted.loc[plotted["point_type"] == point_type]
            if rows.empty:
                continue
            collection = axes.scatter(
                rows["period"].to_numpy(),
                rows["value"].to_numpy(),
                zorder=4,
                edgecolors=NHS_WHITE,
                linewidths=0.6,
                label=POINT_LEGEND[point_type],
                **POINT_STYLE[point_type],
            )
            collection.set_gid(point_type)
            handles.append(collection)
        style = POINT_STYLE[str(latest["point_type"])]
        axes.text(
            0.99,
            1.02,
            f"Latest point: {variation}",
            transform=axes.transAxes,
            ha="right",
            va="bottom",
            fontsize=9,
            fontweight="bold",
            color=NHS_DARK_GREY,
            bbox={"boxstyle": "round,pad=0.3", "facecolor": NHS_WHITE,
                  "edgecolor": style["color"], "linewidth": 1.5},
            gid="variation_label",
        )
        locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        finish_axes(axes, title, "Month", unit_axis_label(unit))
        add_legend(figure, handles)

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
    return Chart(chart_id, title, caption, alt_text, data, figure)


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
