"""Trend of one organisation against the national deciles (OpenPrescribing's decile chart).

The grammar follows OpenPrescribing in NHS colours: the organisation is an NHS-blue
solid line with dots and a direct label; the national deciles are grey dotted
lines; the national median is a black long-dashed line; the England value (the
ratio of national sums, not the median) is a thin dark dash-dot line. The four
line patterns stay distinct when printed in greyscale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator

from moopt.charts.base import (
    add_legend,
    NHS_BLACK,
    NHS_BLUE,
    NHS_DARK_GREY,
    NHS_MID_GREY,
    NHS_PURPLE,
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
    ordinal,
    require_columns,
    shorten,
    single_value,
    styled,
    unit_axis_label,
)

DECILE_COLUMNS: tuple[str, ...] = tuple(f"decile_{percent}" for percent in range(10, 100, 10))

TREND_COLUMNS: tuple[str, ...] = (
    "org_level",
    "org_code",
    "org_name",
    "period",
    "period_type",
    "value",
    "england_value",
    *DECILE_COLUMNS,
)

# Line patterns: (offset, (on, off, ...)) in points; each one distinct in greyscale.
DECILE_DASHES = (0, (1, 2))
MEDIAN_DASHES = (0, (8, 4))
ENGLAND_DASHES = (0, (6, 2, 1, 2))
REFERENCE_DASHES = (0, (3, 1.5))  # short, dense dashes in purple: unlike the median's long black dashes


def calculate_trend_data(
    table: pd.DataFrame,
    org_code: str,
    org_level: str,
    period_type: str = "rolling_12m",
) -> pd.DataFrame:
    """Select the rows drawn by :func:`plot_trend_with_deciles`, in long form.

    Parameters
    ----------
    table : pandas.DataFrame
        The engine's tidy indicator table (one indicator), with the columns in
        :data:`TREND_COLUMNS`.
    org_code : str
        Code of the organisation to show.
    org_level : str
        Level of that organisation (one of :data:`moopt.orgs.ORG_LEVELS`).
    period_type : {"rolling_12m", "month"}
        Which kind of period to show.

    Returns
    -------
    pandas.DataFrame
        Columns ``period``, ``series`` ("organisation", "england", "decile_10" ...
        "decile_90"), ``series_label`` and ``value``; one row per plotted point, in
        drawing order. Series with no values at all (deciles at England level) are
        left out; missing values inside a series are kept as NaN (drawn as gaps).
    """
    require_columns(table, TREND_COLUMNS, "indicator table")
    check_level(org_level)
    check_period_type(period_type)
    check_text(org_code, "organisation code")
    rows = table.loc[
        (table["org_level"] == org_level)
        & (table["org_code"] == org_code)
        & (table["period_type"] == period_type)
    ]
    if "indicator_id" in rows.columns:
        single_value(rows["indicator_id"], "indicator")
    if rows["period"].duplicated().any():
        raise ValueError(
            f"The indicator table has more than one row per period for {org_code}; "
            "pass one indicator at a time."
        )
    org_name = str(single_value(rows["org_name"], "organisation name")) if len(rows) else org_code
    wide = (
        rows.loc[:, ["period", "value", "england_value", *DECILE_COLUMNS]]
        .rename(columns={"value": "organisation", "england_value": "england"})
        .assign(period=lambda frame: pd.to_datetime(frame["period"]))
        .sort_values("period")
    )
    long = wide.melt(id_vars="period", var_name="series", value_name="value")
    long["value"] = long["value"].astype("float64")
    has_values = long.groupby("series", sort=False)["value"].transform(lambda v: v.notna().any())
    long = long.loc[has_values | (long["series"] == "organisation")].reset_index(drop=True)
    labels = {
        "organisation": f"{org_name} ({org_code})",
        "england": "England",
        "decile_50": "National median",
        **{
            column: f"National {ordinal(int(column.split('_')[1]))} percentile"
            for column in DECILE_COLUMNS
            if column != "decile_50"
        },
    }
    long.insert(2, "series_label", long["series"].map(labels))
    return long


def plot_trend_with_deciles(
    table: pd.DataFrame,
    org_code: str,
    org_level: str,
    indicator_title: str,
    unit: str,
    improvement_direction: str,
    period_type: str = "rolling_12m",
    *,
    chart_id: str | None = None,
    reference_line: tuple[float, str] | None = None,
) -> Chart:
    """Draw an organisation's trend against national deciles, the median and England.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy indicator table for one indicator (see :data:`TREND_COLUMNS`).
    org_code, org_level : str
        The organisation to show and its level.
    indicator_title : str
        Indicator name, used in the title and alt text.
    unit : str
        Unit of the value, e.g. ``"%"`` or ``"items per 1,000 patients"``.
    improvement_direction : {"increase", "decrease", "neutral"}
        Which way is generally better; stated in the caption.
    period_type : {"rolling_12m", "month"}
        Kind of period shown.
    chart_id : str, optional
        File-safe identifier; by default ``"<indicator_id>_trend"``.
    reference_line : (float, str), optional
        A national target or expectation and its label: drawn as a horizontal dashed
        line with the label, and included in ``data`` as the series ``"reference"``.

    Returns
    -------
    Chart
        ``data`` has the columns of :func:`calculate_trend_data` plus ``unit``.

    Notes
    -----
    The deciles are those of the organisation's own level (the ``decile_*``
    columns of its rows), so a sub-ICB location is compared with sub-ICB
    locations. An empty selection gives a "No data for this selection" chart.
    """
    check_text(indicator_title, "indicator title")
    check_text(unit, "unit")
    check_direction(improvement_direction)
    data = calculate_trend_data(table, org_code, org_level, period_type)
    if reference_line is not None:
        data = _with_reference(data, reference_line)
    selection = table.loc[
        (table["org_level"] == org_level)
        & (table["org_code"] == org_code)
        & (table["period_type"] == period_type)
    ]
    indicator_id = _indicator_id(selection)
    chart_id = chart_id or make_chart_id(indicator_id, "trend")
    org_rows = data.loc[data["series"] == "organisation"]
    org_name = _org_name(table, org_code, org_level)
    title = f"{indicator_title}: {org_name}"
    data = data.assign(unit=unit)
    if org_rows.empty:
        return empty_chart(
            chart_id,
            title,
            f"there are no {_period_words(period_type)} values for {org_name} ({org_code})",
            data,
        )

    levels = level_name(org_level, plural=True)
    figure = _draw_trend(data, org_code, title, unit, period_type)
    caption = _trend_caption(data, org_name, levels, improvement_direction, period_type)
    alt_text = _trend_alt_text(data, org_name, org_code, levels, indicator_title, unit, period_type)
    return Chart(chart_id, title, caption, alt_text, data, figure)


def _with_reference(data: pd.DataFrame, reference_line: tuple[float, str]) -> pd.DataFrame:
    """``data`` plus the reference value at every period, as the series ``"reference"``."""
    value, label = reference_line
    if not np.isfinite(float(value)):
        raise ValueError(f"The reference line value must be a finite number, not {value!r}.")
    check_text(label, "reference line label")
    periods = data["period"].drop_duplicates()
    rows = pd.DataFrame({"period": periods, "series": "reference", "series_label": label,
                         "value": float(value)})
    return pd.concat([data, rows], ignore_index=True)


# --- drawing ------------------------------------------------------------------------------
def _draw_trend(data: pd.DataFrame, org_code: str, title: str, unit: str, period_type: str):
    with styled():
        figure, axes = new_figure()
        legend_handles: list[Line2D] = []
        for series, rows in data.groupby("series", sort=False):
            x, y = rows["period"].to_numpy(), rows["value"].to_numpy()
            if series == "organisation":
                continue  # drawn last, on top
            if series == "reference":
                level = float(y[0])
                line = axes.axhline(level, color=NHS_PURPLE, linestyle=REFERENCE_DASHES, linewidth=1.8, zorder=4)
                line.set_label("National reference")
                axes.annotate(
                    rows["series_label"].iloc[0], xy=(0, level), xycoords=("axes fraction", "data"),
                    xytext=(4, 3), textcoords="offset points", ha="left", va="bottom", fontsize=8,
                    color=NHS_PURPLE)
            elif series == "decile_50":
                (line,) = axes.plot(
                    x, y, color=NHS_BLACK, linestyle=MEDIAN_DASHES, linewidth=1.4, zorder=3
                )
                line.set_label("National median")
            elif series == "england":
                (line,) = axes.plot(
                    x, y, color=NHS_DARK_GREY, linestyle=ENGLAND_DASHES, linewidth=1.1, zorder=3
                )
                line.set_label("England")
            else:
                (line,) = axes.plot(
                    x, y, color=NHS_MID_GREY, linestyle=DECILE_DASHES, linewidth=1.1, zorder=2
                )
                line.set_label("National decile")
            line.set_gid(series)
            if line.get_label() not in [handle.get_label() for handle in legend_handles]:
                legend_handles.append(line)

        org = data.loc[data["series"] == "organisation"]
        (org_line,) = axes.plot(
            org["period"].to_numpy(),
            org["value"].to_numpy(),
            color=NHS_BLUE,
            linestyle="-",
            linewidth=2.2,
            marker="o",
            markersize=4,
            zorder=5,
        )
        org_line.set_gid("organisation")
        org_line.set_label(org["series_label"].iloc[0])

        # Direct label at the last point with a value, so the reader needs no legend.
        last = org.dropna(subset=["value"]).tail(1)
        if not last.empty:
            axes.annotate(
                f"{org_code}\n{format_value(last['value'].iloc[0], unit)}",
                xy=(last["period"].iloc[0], last["value"].iloc[0]),
                xytext=(8, 0),
                textcoords="offset points",
                va="center",
                ha="left",
                color=NHS_BLUE,
                fontweight="bold",
                fontsize=9,
                annotation_clip=False,
            )
        # Room on the right for the direct label.
        periods = data["period"]
        span = (periods.max() - periods.min()) or pd.Timedelta(days=60)
        axes.set_xlim(periods.min() - span * 0.02, periods.max() + span * 0.16)
        values = data["value"].to_numpy(dtype=float, na_value=np.nan)
        if np.isfinite(values).any() and np.nanmin(values) >= 0:
            axes.set_ylim(bottom=0)
        # Ticks only under the data, not in the room left for the direct label.
        auto = mdates.AutoDateLocator(minticks=4, maxticks=9)
        ticks = auto.tick_values(periods.min(), periods.max())
        last = mdates.date2num(periods.max())
        locator = FixedLocator([tick for tick in ticks if tick <= last + 1e-9])
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(auto))
        x_label = "12 months ending (month)" if period_type == "rolling_12m" else "Month"
        finish_axes(axes, title, x_label, unit_axis_label(unit))
        legend_order = ["National decile", "National median", "England", "National reference"]
        legend_handles.sort(key=lambda handle: legend_order.index(handle.get_label()))
        add_legend(figure, legend_handles)
    return figure


# --- words --------------------------------------------------------------------------------
def _trend_caption(
    data: pd.DataFrame,
    org_name: str,
    levels: str,
    improvement_direction: str,
    period_type: str,
) -> str:
    parts = [f"The blue solid line with dots is {org_name}."]
    if data["series"].str.startswith("decile_").any():
        parts.append(
            "The grey dotted lines are national deciles: they split "
            f"{levels} in England into ten groups of equal size, so one in ten lies between "
            "each pair of neighbouring lines. The black dashed line is the national median "
            f"(half of {levels} are above it)."
        )
    if (data["series"] == "england").any():
        parts.append(
            "The dark dash-dot line is the value for England as a whole, which can "
            "differ from the median because large organisations weigh more in it."
        )
    reference = data.loc[data["series"] == "reference"]
    if not reference.empty:
        parts.append(f"The purple dashed horizontal line marks the national reference: "
                     f"{reference['series_label'].iloc[0]}.")
    if period_type == "rolling_12m":
        parts.append("Each point covers the 12 months ending in that month.")
    sentence = direction_sentence(improvement_direction)
    if sentence:
        parts.append(sentence)
    return " ".join(parts)


def _trend_alt_text(
    data: pd.DataFrame,
    org_name: str,
    org_code: str,
    levels: str,
    indicator_title: str,
    unit: str,
    period_type: str,
) -> str:
    org = data.loc[data["series"] == "organisation"].dropna(subset=["value"])
    periods = data["period"]
    opening = (
        f"Line chart of {indicator_title} for {org_name} ({org_code}) from "
        f"{format_period(periods.min())} to {format_period(periods.max())}."
    )
    if org.empty:
        return f"{opening} {org_name} has no values in this time; only national lines are shown."
    latest = org.iloc[-1]
    first = org.iloc[0]
    latest_period = latest["period"]
    sentences = [
        opening,
        f"The latest value, for the {format_period(latest_period, period_type)}, is "
        f"{format_value(latest['value'], unit)}",
    ]
    if len(org) > 1:
        sentences[-1] += (
            f", compared with {format_value(first['value'], unit)} in "
            f"{format_period(first['period'])}."
        )
    else:
        sentences[-1] += "."
    at_latest = data.loc[data["period"] == latest_period].set_index("series")["value"]
    if "england" in at_latest.index and pd.notna(at_latest["england"]):
        sentences.append(f"England's value then was {format_value(at_latest['england'], unit)}.")
    reference = data.loc[data["series"] == "reference"]
    if not reference.empty:
        sentences.append(f"A horizontal line marks the national reference of "
                         f"{format_value(reference['value'].iloc[0], unit)} ({reference['series_label'].iloc[0]}).")
    deciles = at_latest.reindex(list(DECILE_COLUMNS)).to_numpy(dtype=float)
    if np.isfinite(deciles).all():
        sentences.append(
            f"The national median of {levels} was {format_value(deciles[4], unit)}, and "
            f"{org_name} was {_decile_band(latest['value'], deciles)}."
        )
    return " ".join(sentences)


def _decile_band(value: float, deciles: np.ndarray) -> str:
    """Where ``value`` sits among the nine national deciles, in words."""
    at_or_below = int(np.searchsorted(np.sort(deciles), value, side="right"))
    if at_or_below == 0:
        return "below the national 10th percentile (in the lowest tenth)"
    if at_or_below == len(deciles):
        return "at or above the national 90th percentile (in the highest tenth)"
    lower, upper = at_or_below * 10, (at_or_below + 1) * 10
    return f"between the national {ordinal(lower)} and {ordinal(upper)} percentiles"


def _indicator_id(table: pd.DataFrame) -> str | None:
    if "indicator_id" not in table.columns or table.empty:
        return None
    value = single_value(table["indicator_id"], "indicator")
    return None if pd.isna(value) else str(value)


def _org_name(table: pd.DataFrame, org_code: str, org_level: str) -> str:
    names = table.loc[
        (table["org_level"] == org_level) & (table["org_code"] == org_code), "org_name"
    ].dropna()
    return shorten(str(names.iloc[0]), 80) if len(names) else org_code


def _period_words(period_type: str) -> str:
    return "rolling 12-month" if period_type == "rolling_12m" else "monthly"
