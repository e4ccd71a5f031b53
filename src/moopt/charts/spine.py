"""Spine chart: one organisation across many indicators, each against England.

Each row is one indicator. England sits on the centre line; the pale bar runs
from the lowest to the highest organisation and the darker middle part from the
25th to the 75th percentile. Each row is scaled on its own so that England is at
0 and the widest distance from England (of the range and the organisation) is 1.
When an ``improvement_direction`` column is present, rows whose lower values are
better are mirrored so that better is always to the right. The organisation's
marker shape and colour both encode the comparison with England, which is also
written out at the right ("higher (better)").
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import transforms
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from moopt.charts.base import (
    add_legend,
    NHS_BLACK,
    NHS_DARK_GREY,
    NHS_GREEN,
    NHS_MID_GREY,
    NHS_PALE_GREY,
    NHS_PURPLE,
    NHS_RED,
    NHS_WHITE,
    FIGURE_HEIGHT_INCHES,
    Chart,
    IMPROVEMENT_DIRECTIONS,
    check_level,
    check_text,
    empty_chart,
    finish_axes,
    format_number,
    format_value,
    level_name,
    make_chart_id,
    new_figure,
    require_columns,
    shorten,
    styled,
)

SPINE_COLUMNS: tuple[str, ...] = (
    "indicator_id",
    "short_title",
    "value",
    "england_value",
    "minimum",
    "p25",
    "p75",
    "maximum",
    "assessment",
)
ASSESSMENTS: tuple[str, ...] = ("better", "worse", "similar", "higher", "lower")
NOT_COMPARED = "not compared"

ASSESSMENT_STYLE: dict[str, dict[str, object]] = {
    "better": {"marker": "o", "facecolor": NHS_GREEN, "edgecolor": NHS_GREEN},
    "worse": {"marker": "s", "facecolor": NHS_RED, "edgecolor": NHS_RED},
    "similar": {"marker": "D", "facecolor": NHS_WHITE, "edgecolor": NHS_DARK_GREY},
    "higher": {"marker": "^", "facecolor": NHS_PURPLE, "edgecolor": NHS_PURPLE},
    "lower": {"marker": "v", "facecolor": NHS_PURPLE, "edgecolor": NHS_PURPLE},
    NOT_COMPARED: {"marker": "X", "facecolor": NHS_MID_GREY, "edgecolor": NHS_MID_GREY},
}
ASSESSMENT_LEGEND: dict[str, str] = {
    "better": "Better than England",
    "worse": "Worse than England",
    "similar": "Similar to England",
    "higher": "Higher (no judgement)",
    "lower": "Lower (no judgement)",
    NOT_COMPARED: "Not compared",
}
SCALED_COLUMNS = ("minimum", "p25", "p75", "maximum", "value")


def calculate_spine_data(summary: pd.DataFrame) -> pd.DataFrame:
    """Scale each indicator's row so England is 0 and the widest distance is 1.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per indicator with :data:`SPINE_COLUMNS`; optional ``unit`` and
        ``improvement_direction`` columns. ``assessment`` may be missing (NaN)
        where the organisation was not compared.

    Returns
    -------
    pandas.DataFrame
        The input columns in input order plus ``scale_reversed`` (bool),
        ``scaled_minimum``, ``scaled_p25``, ``scaled_p75``, ``scaled_maximum``,
        ``scaled_value`` (the drawn positions, -1 to 1) and ``comparison_label``
        (the words written beside the marker).
    """
    require_columns(summary, SPINE_COLUMNS, "spine summary table")
    if summary["indicator_id"].duplicated().any():
        raise ValueError("The spine summary table has an indicator more than once.")
    optional = [c for c in ("unit", "improvement_direction") if c in summary.columns]
    data = summary.loc[:, [*SPINE_COLUMNS, *optional]].reset_index(drop=True)
    numbers = ["value", "england_value", "minimum", "p25", "p75", "maximum"]
    data[numbers] = data[numbers].astype("float64")
    assessed = data["assessment"].notna()
    unknown = set(data.loc[assessed, "assessment"].astype(object)) - set(ASSESSMENTS)
    if unknown:
        raise ValueError(
            f"Unknown assessment(s) {sorted(map(str, unknown))}; use {', '.join(ASSESSMENTS)}."
        )
    if "improvement_direction" in data.columns:
        bad = set(data["improvement_direction"].dropna()) - set(IMPROVEMENT_DIRECTIONS)
        if bad:
            raise ValueError(f"Unknown improvement direction(s) {sorted(map(str, bad))}.")
        reversed_rows = (data["improvement_direction"] == "decrease").to_numpy()
    else:
        reversed_rows = np.zeros(len(data), dtype=bool)
    england = data["england_value"].to_numpy()
    offsets = data[list(SCALED_COLUMNS)].to_numpy() - england[:, None]
    with np.errstate(invalid="ignore"):
        half_width = np.nanmax(np.abs(offsets), axis=1, initial=0.0)
    half_width = np.where(np.isfinite(half_width) & (half_width > 0), half_width, 1.0)
    sign = np.where(reversed_rows, -1.0, 1.0)
    scaled = offsets / half_width[:, None] * sign[:, None]
    data["scale_reversed"] = reversed_rows
    for index, column in enumerate(SCALED_COLUMNS):
        data[f"scaled_{column}"] = scaled[:, index]
    data["comparison_label"] = _comparison_labels(data)
    return data


def plot_spine(
    summary: pd.DataFrame,
    *,
    org_name: str,
    org_code: str,
    org_level: str,
    period_label: str,
    title: str | None = None,
    chart_id: str | None = None,
) -> Chart:
    """Draw a spine chart of one organisation across several indicators.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per indicator (:data:`SPINE_COLUMNS`, optional ``unit`` and
        ``improvement_direction``), drawn top to bottom in the given order.
        ``minimum``..``maximum`` describe the organisations of ``org_level``;
        ``assessment`` is the comparison with England from :mod:`moopt.stats`.
    org_name, org_code, org_level : str
        The organisation shown and its level.
    period_label : str
        The period in words, e.g. "12 months to Mar 2024".
    title : str, optional
        Defaults to "<org_name> compared with England, <period_label>".
    chart_id : str, optional
        Defaults to ``"spine"``.

    Returns
    -------
    Chart
        ``data`` is :func:`calculate_spine_data`.
    """
    check_text(org_name, "organisation name")
    check_text(org_code, "organisation code")
    check_text(period_label, "period label")
    check_level(org_level)
    data = calculate_spine_data(summary)
    chart_id = chart_id or make_chart_id("spine")
    title = title or f"{org_name} compared with England, {period_label}"
    check_text(title, "title")
    levels = level_name(org_level, plural=True)
    if data.empty:
        return empty_chart(chart_id, title, f"there are no indicators for {org_name}", data)

    count = len(data)
    with styled():
        figure, axes = new_figure(max(FIGURE_HEIGHT_INCHES, 0.42 * count + 1.9))
        y = np.arange(count)[::-1].astype(float)  # first indicator at the top
        axes.barh(
            y,
            (data["scaled_maximum"] - data["scaled_minimum"]).to_numpy(),
            left=data["scaled_minimum"].to_numpy(),
            height=0.55, color=NHS_PALE_GREY, zorder=1, gid="range",
        )
        axes.barh(
            y,
            (data["scaled_p75"] - data["scaled_p25"]).to_numpy(),
            left=data["scaled_p25"].to_numpy(),
            height=0.55, color=NHS_MID_GREY, zorder=2, gid="interquartile_range",
        )
        axes.axvline(0, color=NHS_BLACK, linewidth=1.4, zorder=3, gid="england")
        keys = data["assessment"].astype(object).fillna(NOT_COMPARED)
        for key, style in ASSESSMENT_STYLE.items():
            rows = (keys == key).to_numpy() & data["value"].notna().to_numpy()
            if not rows.any():
                continue
            collection = axes.scatter(
                data.loc[rows, "scaled_value"].to_numpy(),
                y[rows],
                s=70,
                marker=style["marker"],
                facecolors=style["facecolor"],
                edgecolors=style["edgecolor"],
                linewidths=1.4,
                zorder=5,
                label=ASSESSMENT_LEGEND[key],
            )
            collection.set_gid(f"organisation:{key}")
        # Values and the comparison in words, to the right of the plot area.
        text_transform = transforms.blended_transform_factory(axes.transAxes, axes.transData)
        for position, row in zip(y, data.itertuples(index=False), strict=True):
            # Numbers without units here to keep the chart narrow; units are in the data.
            words = (
                f"{format_number(row.value)} (England {format_number(row.england_value)}): "
                f"{row.comparison_label}"
            )
            axes.text(
                1.02, position, words, transform=text_transform, va="center", ha="left",
                fontsize=8.5, color=NHS_BLACK,
            )
        axes.set_yticks(y)
        axes.set_yticklabels([shorten(text, 34) for text in data["short_title"]])
        axes.set_xlim(-1.08, 1.08)
        axes.set_ylim(-0.7, count - 0.3)
        axes.set_xticks([-1, 0, 1])
        axes.set_xticklabels(["Furthest below", "England", "Furthest above"])
        axes.grid(False)
        axes.spines["left"].set_visible(False)
        axes.tick_params(axis="y", length=0)
        finish_axes(
            axes,
            title,
            "Distance from England, scaled per indicator (no units)",
            "",
        )
        handles = [
            Patch(facecolor=NHS_PALE_GREY, label=f"Range of {levels}"),
            Patch(facecolor=NHS_MID_GREY, label="25th to 75th percentile"),
            Line2D([], [], color=NHS_BLACK, linewidth=1.4, label="England"),
        ]
        for key in keys[data["value"].notna()].unique():
            style = ASSESSMENT_STYLE[key]
            handles.append(
                Line2D(
                    [], [], linestyle="none", marker=style["marker"], markersize=8,
                    markerfacecolor=style["facecolor"], markeredgecolor=style["edgecolor"],
                    label=ASSESSMENT_LEGEND[key],
                )
            )
        add_legend(figure, handles, columns=3)

    caption = (
        "Each row is one indicator. The black centre line is England; the pale grey bar "
        f"runs from the lowest to the highest of the {levels} and the darker middle section "
        f"covers the middle half of them (25th to 75th percentile). The marker is {org_name}: "
        "its shape and colour show how it compares with England, which is also written at "
        "the right with the values. Each row has its own scale, so compare positions within "
        "a row, not lengths between rows."
    )
    if data["scale_reversed"].any():
        caption += (
            " Rows where lower values are better are mirrored, so better is always to the right."
        )
    alt_text = _spine_alt_text(data, org_name, org_code, period_label)
    return Chart(chart_id, title, caption, alt_text, data, figure)


def _comparison_labels(data: pd.DataFrame) -> pd.Series:
    """Words for each row's comparison, e.g. "higher (better)" or "similar"."""
    difference = data["value"] - data["england_value"]
    side = pd.Series(
        np.select([difference > 0, difference < 0], ["higher", "lower"], default=""),
        index=data.index,
        dtype="str",
    )
    assessment = data["assessment"].astype(object)
    labels = assessment.fillna(NOT_COMPARED).astype("str")
    # "better"/"worse" gain the side of England they are on: "lower (better)".
    sided = assessment.isin(["better", "worse"]) & (side != "")
    labels = labels.where(~sided, side + " (" + labels + ")")
    return labels.where(data["value"].notna(), "no value")


def _number(value: float, unit: str) -> str:
    return format_value(value, unit) if unit else format_value(value, "").strip()


def _spine_alt_text(data: pd.DataFrame, org_name: str, org_code: str, period_label: str) -> str:
    tally = data.loc[data["value"].notna(), "assessment"].value_counts()
    summary_words = ", ".join(
        f"{int(tally[word])} {word}" for word in ASSESSMENTS if word in tally.index
    ) or "no comparisons"
    sentences = [
        f"Spine chart of {len(data)} indicators for {org_name} ({org_code}), {period_label}, "
        f"each compared with England: {summary_words}.",
    ]
    units = data["unit"] if "unit" in data.columns else pd.Series([""] * len(data))
    details = [
        f"{row.short_title}: {_number(row.value, unit if isinstance(unit, str) else '')} "
        f"against England {_number(row.england_value, unit if isinstance(unit, str) else '')}, "
        f"{row.comparison_label}"
        for row, unit in zip(data.head(12).itertuples(index=False), units.head(12), strict=True)
    ]
    sentences.append("; ".join(details) + ".")
    if len(data) > 12:
        sentences.append(f"The other {len(data) - 12} indicators are in the data table.")
    return " ".join(sentences)
