"""Where an organisation sits among all organisations of its level: a ranked dot plot.

Organisations are ordered from the lowest value to the highest (a "caterpillar"
plot). The selected organisation is a blue diamond with a text label; the others
are small grey dots; England is a horizontal dash-dot line. When the table has
``lower_95`` and ``upper_95`` columns, the 95% confidence intervals are drawn as
vertical lines.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from moopt.charts.base import (
    add_legend,
    NHS_BLUE,
    NHS_DARK_GREY,
    NHS_MID_GREY,
    Chart,
    check_direction,
    check_level,
    check_period_type,
    check_text,
    direction_sentence,
    empty_chart,
    finish_axes,
    format_period,
    format_value,
    level_name,
    make_chart_id,
    new_figure,
    require_columns,
    shorten,
    single_value,
    styled,
    to_timestamp,
    unit_axis_label,
)
from moopt.charts.funnel import HIGHLIGHT_STYLE, annotate_points
from moopt.charts.trend import ENGLAND_DASHES
from moopt.orgs import ENGLAND_CODE, ENGLAND_NAME

PEER_COLUMNS: tuple[str, ...] = (
    "org_level",
    "org_code",
    "org_name",
    "period",
    "period_type",
    "value",
    "england_value",
)
INTERVAL_COLUMNS: tuple[str, str] = ("lower_95", "upper_95")


def rank_points(
    points: pd.DataFrame,
    centre_value: float,
    highlight_code: str | None = None,
    label_extremes: int = 0,
) -> pd.DataFrame:
    """Order points by value and mark the highlighted and most extreme ones.

    Parameters
    ----------
    points : pandas.DataFrame
        ``org_code``, ``org_name``, ``value`` (rows with a missing value are
        dropped) and optionally ``denominator``, ``lower_95`` and ``upper_95``.
    centre_value : float
        Reference value (England); also the line drawn across the chart.
    highlight_code : str, optional
        Organisation to highlight.
    label_extremes : int
        Label this many other organisations furthest from ``centre_value``
        (ties broken by code).

    Returns
    -------
    pandas.DataFrame
        ``series`` ("organisation", "highlighted_organisation", "england"),
        ``rank`` (1 = lowest value; ties ordered by code), ``org_code``,
        ``org_name``, ``value``, the optional columns present, and
        ``is_labelled``. The last row is the England reference line.
    """
    optional = [c for c in ("denominator", *INTERVAL_COLUMNS) if c in points.columns]
    columns = ["org_code", "org_name", "value", *optional]
    ranked = (
        points.loc[:, columns]
        .astype({column: "float64" for column in ["value", *optional]})
        .dropna(subset=["value"])
        .sort_values(["value", "org_code"], kind="stable")
        .reset_index(drop=True)
    )
    if ranked["org_code"].duplicated().any():
        raise ValueError("The table has an organisation more than once for this selection.")
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1, dtype="float64"))
    is_highlight = (ranked["org_code"] == highlight_code).to_numpy()
    ranked.insert(0, "series", np.where(is_highlight, "highlighted_organisation", "organisation"))
    distance = (ranked["value"] - centre_value).abs()
    others = ranked.loc[~is_highlight].assign(distance=distance)
    extremes = others.sort_values(
        ["distance", "org_code"], ascending=[False, True], kind="stable"
    ).head(max(0, int(label_extremes)))
    ranked["is_labelled"] = is_highlight | ranked["org_code"].isin(extremes["org_code"]).to_numpy()
    england = pd.DataFrame(
        {
            "series": ["england"],
            "rank": [np.nan],
            "org_code": [ENGLAND_CODE],
            "org_name": [ENGLAND_NAME],
            "value": [float(centre_value)],
            "is_labelled": [False],
        }
    )
    if not np.isfinite(centre_value):
        england = england.iloc[0:0]
    return pd.concat([ranked, england], ignore_index=True).loc[:, ranked.columns]


def calculate_peer_data(
    table: pd.DataFrame,
    org_code: str,
    org_level: str,
    period: object,
    period_type: str,
) -> pd.DataFrame:
    """Select and rank the organisations drawn by :func:`plot_peer_position`.

    Returns
    -------
    pandas.DataFrame
        See :func:`rank_points`; organisations without a value are left out.
    """
    require_columns(table, PEER_COLUMNS, "indicator table")
    check_level(org_level)
    check_period_type(period_type)
    check_text(org_code, "organisation code")
    stamp = to_timestamp(period)
    rows = table.loc[
        (table["org_level"] == org_level)
        & (pd.to_datetime(table["period"]) == stamp)
        & (table["period_type"] == period_type)
    ]
    if "indicator_id" in rows.columns:
        single_value(rows["indicator_id"], "indicator")
    england_value = single_value(rows["england_value"], "England value")
    england_value = float(england_value) if pd.notna(england_value) else np.nan
    return rank_points(rows, england_value, highlight_code=org_code)


def plot_peer_position(
    table: pd.DataFrame,
    org_code: str,
    org_level: str,
    period: object,
    period_type: str,
    indicator_title: str,
    unit: str,
    *,
    improvement_direction: str | None = None,
    chart_id: str | None = None,
) -> Chart:
    """Draw all organisations of a level as a ranked dot plot, highlighting one.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy indicator table for one indicator (:data:`PEER_COLUMNS`, optionally
        ``lower_95`` and ``upper_95``).
    org_code, org_level : str
        Organisation to highlight and the level whose organisations are ranked.
    period : date-like
        The period to show (first day of its last month).
    period_type : {"rolling_12m", "month"}
        Kind of period.
    indicator_title, unit : str
        Indicator name and the unit of its value.
    improvement_direction : {"increase", "decrease", "neutral"}, optional
        Stated in the caption when given.
    chart_id : str, optional
        By default ``"<indicator_id>_peers"``.

    Returns
    -------
    Chart
        ``data`` is :func:`calculate_peer_data` plus a ``unit`` column.
    """
    check_text(indicator_title, "indicator title")
    check_text(unit, "unit")
    check_direction(improvement_direction, allow_none=True)
    data = calculate_peer_data(table, org_code, org_level, period, period_type).assign(unit=unit)
    indicator_id = _indicator_id_for(table, org_level, period_type)
    chart_id = chart_id or make_chart_id(indicator_id, "peers")
    period_words = format_period(to_timestamp(period), period_type)
    levels = level_name(org_level, plural=True)
    title = f"{indicator_title}: {levels}, {period_words}"
    points = data.loc[data["series"] != "england"]
    if points.empty:
        return empty_chart(chart_id, title, f"no {levels} have a value for {period_words}", data)

    has_intervals = all(column in data.columns for column in INTERVAL_COLUMNS)
    with styled():
        figure, axes = new_figure()
        draw_ranked_dots(axes, data, unit, levels, has_intervals)
        finish_axes(
            axes,
            title,
            f"{levels[:1].upper()}{levels[1:]} ranked from lowest to highest value (rank)",
            unit_axis_label(unit),
        )
    caption = _peer_caption(levels, has_intervals, improvement_direction)
    excluded = _count_without_value(table, org_level, period, period_type)
    alt_text = _peer_alt_text(data, org_code, levels, indicator_title, unit, period_words, excluded)
    return Chart(chart_id, title, caption, alt_text, data, figure)


def draw_ranked_dots(
    axes: Axes, data: pd.DataFrame, unit: str, levels: str, has_intervals: bool
) -> None:
    """Draw a ranked dot plot from a :func:`rank_points` frame."""
    others = data.loc[data["series"] == "organisation"]
    highlight = data.loc[data["series"] == "highlighted_organisation"]
    england = data.loc[data["series"] == "england"]
    count = len(others) + len(highlight)
    handles: list[object] = []
    if has_intervals:
        axes.vlines(
            others["rank"].to_numpy(),
            others["lower_95"].to_numpy(),
            others["upper_95"].to_numpy(),
            color=NHS_MID_GREY,
            alpha=0.6,
            linewidth=0.8 if count > 150 else 1.2,
            zorder=2,
            gid="organisation_interval",
        )
        if not highlight.empty:
            axes.vlines(
                highlight["rank"].to_numpy(),
                highlight["lower_95"].to_numpy(),
                highlight["upper_95"].to_numpy(),
                color=NHS_BLUE,
                linewidth=2.2,
                zorder=5,
                gid="highlighted_interval",
            )
        handles.append(Line2D([], [], color=NHS_MID_GREY, linewidth=1.2, label="95% interval"))
    dots = axes.scatter(
        others["rank"].to_numpy(),
        others["value"].to_numpy(),
        marker="o",
        s=26 if count <= 150 else 8,
        color=NHS_MID_GREY,
        zorder=3,
        label=f"Other {levels}" if not highlight.empty else levels[:1].upper() + levels[1:],
    )
    dots.set_gid("organisation")
    handles.insert(0, dots)
    if not highlight.empty:
        marker = axes.scatter(
            highlight["rank"].to_numpy(),
            highlight["value"].to_numpy(),
            zorder=6,
            label=shorten(f"{highlight['org_name'].iloc[0]} ({highlight['org_code'].iloc[0]})", 40),
            **HIGHLIGHT_STYLE,
        )
        marker.set_gid("highlighted_organisation")
        handles.insert(0, marker)
    if not england.empty:
        line = axes.axhline(
            england["value"].iloc[0],
            color=NHS_DARK_GREY,
            linestyle=ENGLAND_DASHES,
            linewidth=1.2,
            zorder=4,
            label=f"England ({format_value(england['value'].iloc[0], unit)})",
        )
        line.set_gid("england")
        handles.append(line)
    annotate_points(axes, data, "rank", unit, "upper_95" if has_intervals else None)
    pad = max(0.6, count * 0.02)
    axes.set_xlim(1 - pad, count + pad)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    values = data["value"].to_numpy(dtype=float)
    if has_intervals:
        values = np.concatenate([values, data["lower_95"].to_numpy(dtype=float)])
    if np.isfinite(values).any() and np.nanmin(values) >= 0:
        axes.set_ylim(bottom=0)
    add_legend(axes.figure, handles)


def _peer_caption(levels: str, has_intervals: bool, improvement_direction: str | None) -> str:
    parts = [
        f"Each grey dot is one of the {levels}, ordered from the lowest value on the left "
        "to the highest on the right. The selected organisation is the blue diamond, "
        "labelled with its code and value, and the dash-dot line is England.",
    ]
    if has_intervals:
        parts.append(
            "Vertical lines are 95% confidence intervals: where one does not cross the "
            "England line, the difference is unlikely to be chance alone (statistically "
            "different, not necessarily important)."
        )
    sentence = direction_sentence(improvement_direction)
    if sentence:
        parts.append(sentence)
    return " ".join(parts)


def _peer_alt_text(
    data: pd.DataFrame,
    org_code: str,
    levels: str,
    indicator_title: str,
    unit: str,
    period_words: str,
    excluded: int,
) -> str:
    points = data.loc[data["series"] != "england"]
    lowest, highest = points.iloc[0], points.iloc[-1]
    sentences = [
        f"Ranked dot plot of {indicator_title} for {len(points)} {levels}, {period_words}.",
        f"Values range from {format_value(lowest['value'], unit)} ({lowest['org_code']}) to "
        f"{format_value(highest['value'], unit)} ({highest['org_code']}).",
    ]
    england = data.loc[data["series"] == "england", "value"]
    if len(england):
        sentences.append(f"England is {format_value(england.iloc[0], unit)}.")
    selected = points.loc[points["series"] == "highlighted_organisation"]
    if selected.empty:
        sentences.append(f"{org_code} has no value for this period, so it is not highlighted.")
    else:
        row = selected.iloc[0]
        sentence = (
            f"{shorten(row['org_name'], 60)} ({org_code}) has "
            f"{format_value(row['value'], unit)}, ranked {int(row['rank'])} of {len(points)} "
            "from the lowest"
        )
        if "lower_95" in row.index and pd.notna(row["lower_95"]) and len(england):
            lower, upper, benchmark = row["lower_95"], row["upper_95"], england.iloc[0]
            sentence += (
                f", with a 95% interval of {format_value(lower, unit)} to "
                f"{format_value(upper, unit)}, "
                + (
                    "above England"
                    if lower > benchmark
                    else "below England"
                    if upper < benchmark
                    else "which includes England's value"
                )
            )
        sentences.append(sentence + ".")
    if excluded:
        sentences.append(f"Not shown for want of a value: {excluded}.")
    return " ".join(sentences)


def _count_without_value(
    table: pd.DataFrame, org_level: str, period: object, period_type: str
) -> int:
    rows = table.loc[
        (table["org_level"] == org_level)
        & (pd.to_datetime(table["period"]) == to_timestamp(period))
        & (table["period_type"] == period_type)
    ]
    return int(rows["value"].isna().sum())


def _indicator_id_for(table: pd.DataFrame, org_level: str, period_type: str) -> str | None:
    if "indicator_id" not in table.columns:
        return None
    ids = table.loc[
        (table["org_level"] == org_level) & (table["period_type"] == period_type), "indicator_id"
    ].dropna()
    return str(ids.iloc[0]) if len(ids) else None
