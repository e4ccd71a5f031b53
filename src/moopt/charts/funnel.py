"""Funnel plots: each organisation's value against its size, with control limits.

The limits themselves are statistics (computed by :mod:`moopt.stats`) and arrive
as a table of limit lines with the columns in :data:`LIMIT_COLUMNS`. This module
only places each point against those lines, by linear interpolation between the
rows of the limits table, which is exactly how the lines are drawn, so a point
drawn outside a line is always reported as outside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import StrMethodFormatter

from moopt.charts.base import (
    add_legend,
    NHS_BLACK,
    NHS_BLUE,
    NHS_DARK_BLUE,
    NHS_DARK_GREY,
    NHS_MID_GREY,
    NHS_WHITE,
    Chart,
    check_level,
    check_text,
    direction_sentence,
    check_direction,
    empty_chart,
    finish_axes,
    format_number,
    format_value,
    level_name,
    make_chart_id,
    new_figure,
    require_columns,
    shorten,
    single_value,
    styled,
    unit_axis_label,
)

LIMIT_COLUMNS: tuple[str, ...] = ("denominator", "lower_95", "upper_95", "lower_99_8", "upper_99_8")
LIMIT_SERIES: tuple[str, ...] = LIMIT_COLUMNS[1:]
FUNNEL_POINT_COLUMNS: tuple[str, ...] = ("org_code", "org_name", "denominator", "value")

WITHIN = "within 95% limits"
ABOVE_95 = "above 95% limit"
BELOW_95 = "below 95% limit"
ABOVE_99_8 = "above 99.8% limit"
BELOW_99_8 = "below 99.8% limit"
NOT_ASSESSED = "outside the range of the limits"
POSITIONS: tuple[str, ...] = (WITHIN, ABOVE_95, BELOW_95, ABOVE_99_8, BELOW_99_8, NOT_ASSESSED)

# Marker shape and fill carry the position; colour only repeats it.
POSITION_STYLE: dict[str, dict[str, object]] = {
    WITHIN: {"marker": "o", "s": 22, "facecolors": NHS_MID_GREY, "edgecolors": NHS_MID_GREY},
    ABOVE_95: {"marker": "^", "s": 38, "facecolors": NHS_WHITE, "edgecolors": NHS_DARK_GREY},
    BELOW_95: {"marker": "v", "s": 38, "facecolors": NHS_WHITE, "edgecolors": NHS_DARK_GREY},
    ABOVE_99_8: {"marker": "^", "s": 42, "facecolors": NHS_DARK_BLUE, "edgecolors": NHS_DARK_BLUE},
    BELOW_99_8: {"marker": "v", "s": 42, "facecolors": NHS_DARK_BLUE, "edgecolors": NHS_DARK_BLUE},
    NOT_ASSESSED: {"marker": "X", "s": 30, "facecolors": NHS_MID_GREY, "edgecolors": NHS_MID_GREY},
}
POSITION_LEGEND: dict[str, str] = {
    WITHIN: "Within 95% limits",
    ABOVE_95: "Above 95% (open)",
    BELOW_95: "Below 95% (open)",
    ABOVE_99_8: "Above 99.8% (filled)",
    BELOW_99_8: "Below 99.8% (filled)",
    NOT_ASSESSED: "Beyond limits' range",
}
HIGHLIGHT_STYLE: dict[str, object] = {
    "marker": "D",
    "s": 80,
    "facecolors": NHS_BLUE,
    "edgecolors": NHS_WHITE,
    "linewidths": 1.2,
}
LIMIT_LINE_STYLE: dict[str, dict[str, object]] = {
    "lower_95": {"linestyle": (0, (5, 3)), "label": "95% limits"},
    "upper_95": {"linestyle": (0, (5, 3)), "label": "95% limits"},
    "lower_99_8": {"linestyle": (0, (1, 1.5)), "label": "99.8% limits"},
    "upper_99_8": {"linestyle": (0, (1, 1.5)), "label": "99.8% limits"},
}


def clean_limits(limits: pd.DataFrame) -> pd.DataFrame:
    """Validate a limits table and return it sorted by denominator.

    Raises
    ------
    ValueError
        When a column of :data:`LIMIT_COLUMNS` is missing, a denominator repeats,
        or a lower limit lies above its upper limit.
    """
    require_columns(limits, LIMIT_COLUMNS, "funnel limits table")
    clean = (
        limits.loc[:, list(LIMIT_COLUMNS)]
        .astype("float64")
        .dropna(subset=["denominator"])
        .sort_values("denominator", kind="stable")
        .reset_index(drop=True)
    )
    if clean["denominator"].duplicated().any():
        raise ValueError("The funnel limits table repeats a denominator; give one row per size.")
    for level in ("95", "99_8"):
        crossed = clean[f"lower_{level}"] > clean[f"upper_{level}"]
        if crossed.any():
            raise ValueError(
                f"The funnel limits table has lower_{level} above upper_{level} at denominator "
                f"{format_number(clean.loc[crossed, 'denominator'].iloc[0])}."
            )
    return clean


def interpolate_limits(denominator: np.ndarray, limits: pd.DataFrame) -> pd.DataFrame:
    """Limit values at each ``denominator`` by linear interpolation (NaN outside the range).

    With no limits at all (too few organisations to set them) every value is NaN.
    """
    x = np.asarray(denominator, dtype=float)
    if limits.empty:
        return pd.DataFrame({column: np.full(len(x), np.nan) for column in LIMIT_SERIES})
    return pd.DataFrame(
        {
            column: np.interp(
                x,
                limits["denominator"].to_numpy(),
                limits[column].to_numpy(),
                left=np.nan,
                right=np.nan,
            )
            for column in LIMIT_SERIES
        }
    )


def assign_funnel_position(
    denominator: np.ndarray, value: np.ndarray, limits: pd.DataFrame
) -> np.ndarray:
    """Where each point lies against the limit lines: one of :data:`POSITIONS`.

    A point exactly on a limit counts as inside it. Points whose denominator is
    beyond the range of the limits table are :data:`NOT_ASSESSED`.
    """
    at = interpolate_limits(denominator, limits)
    value = np.asarray(value, dtype=float)
    return np.select(
        [
            at["lower_95"].isna().to_numpy(),
            value > at["upper_99_8"].to_numpy(),
            value < at["lower_99_8"].to_numpy(),
            value > at["upper_95"].to_numpy(),
            value < at["lower_95"].to_numpy(),
        ],
        [NOT_ASSESSED, ABOVE_99_8, BELOW_99_8, ABOVE_95, BELOW_95],
        default=WITHIN,
    )


FLAG_COLUMNS: tuple[str, str] = ("funnel_flag_95", "funnel_flag_99_8")


def position_from_flags(flag_95: np.ndarray, flag_99_8: np.ndarray) -> np.ndarray:
    """One of :data:`POSITIONS` from stored funnel flags ("below", "inside", "above" or missing)."""
    flag_95 = np.asarray(flag_95, dtype=object)
    flag_99_8 = np.asarray(flag_99_8, dtype=object)
    return np.select(
        [flag_99_8 == "above", flag_99_8 == "below", flag_95 == "above", flag_95 == "below",
         flag_95 == "inside"],
        [ABOVE_99_8, BELOW_99_8, ABOVE_95, BELOW_95, WITHIN],
        default=NOT_ASSESSED,
    )


def calculate_funnel_data(
    points: pd.DataFrame,
    limits: pd.DataFrame,
    centre_value: float,
    highlight_code: str | None = None,
    label_extremes: int = 0,
) -> pd.DataFrame:
    """Build the long table drawn by a funnel plot.

    Parameters
    ----------
    points : pandas.DataFrame
        One row per organisation with ``org_code``, ``org_name``, ``denominator``
        and ``value``; rows missing either number are left out (not plotted).
        With ``funnel_flag_95`` and ``funnel_flag_99_8`` (the stored verdicts of
        :mod:`moopt.results`) the points are placed by those; otherwise by
        interpolation between the limit lines.
    limits : pandas.DataFrame
        Limit lines (:data:`LIMIT_COLUMNS`).
    centre_value : float
        Value of the centre line (usually England's).
    highlight_code : str, optional
        Organisation to highlight; always labelled.
    label_extremes : int
        How many of the other points furthest from the centre (in units of the
        99.8% limit's distance at their size) to label by code.

    Returns
    -------
    pandas.DataFrame
        Columns ``series`` ("organisation", "highlighted_organisation", "centre",
        "lower_95", "upper_95", "lower_99_8", "upper_99_8"), ``org_code``,
        ``org_name``, ``denominator``, ``value``, ``position`` and ``is_labelled``.
        The limit and centre rows are the vertices of the drawn lines, over the
        range of the points' denominators.
    """
    require_columns(points, FUNNEL_POINT_COLUMNS, "table of organisations")
    limits = clean_limits(limits)
    if not np.isfinite(centre_value):
        raise ValueError("The funnel's centre value must be a finite number.")
    plotted = (
        points.loc[:, list(FUNNEL_POINT_COLUMNS)]
        .assign(
            denominator=lambda frame: frame["denominator"].astype("float64"),
            value=lambda frame: frame["value"].astype("float64"),
        )
        .dropna(subset=["denominator", "value"])
        .sort_values(["denominator", "org_code"], kind="stable")
        .reset_index(drop=True)
    )
    if plotted["org_code"].duplicated().any():
        raise ValueError("The table of organisations has an organisation more than once.")
    columns = ["series", *FUNNEL_POINT_COLUMNS, "position", "is_labelled"]
    if plotted.empty:
        return pd.DataFrame({column: pd.Series(dtype="object") for column in columns})

    x = plotted["denominator"].to_numpy()
    y = plotted["value"].to_numpy()
    if set(FLAG_COLUMNS) <= set(points.columns):
        # The stored verdict (moopt.results), so the chart says what the text and summary say.
        flags = points.set_index("org_code").loc[plotted["org_code"], list(FLAG_COLUMNS)]
        plotted["position"] = position_from_flags(flags[FLAG_COLUMNS[0]].to_numpy(),
                                                  flags[FLAG_COLUMNS[1]].to_numpy())
    else:
        plotted["position"] = assign_funnel_position(x, y, limits)
    is_highlight = (plotted["org_code"] == highlight_code).to_numpy()
    plotted["series"] = np.where(is_highlight, "highlighted_organisation", "organisation")

    at = interpolate_limits(x, limits)
    above = y > centre_value
    spread = np.where(
        above,
        at["upper_99_8"].to_numpy() - centre_value,
        centre_value - at["lower_99_8"].to_numpy(),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.where(spread > 0, np.abs(y - centre_value) / spread, np.nan)
    ranking = pd.DataFrame(
        {"distance": np.nan_to_num(distance, nan=-np.inf), "org_code": plotted["org_code"]}
    )
    ranking = ranking.loc[~is_highlight].sort_values(
        ["distance", "org_code"], ascending=[False, True], kind="stable"
    )
    labelled = set(ranking["org_code"].head(max(0, int(label_extremes))))
    plotted["is_labelled"] = is_highlight | plotted["org_code"].isin(labelled).to_numpy()

    x_low, x_high = _x_range(x)
    lines = [_limit_lines(limits, x_low, x_high)] if not limits.empty else []
    lines.append(
        pd.DataFrame(
            {"series": "centre", "denominator": [x_low, x_high], "value": centre_value}
        )
    )
    frame = pd.concat([plotted, *lines], ignore_index=True)
    frame["is_labelled"] = frame["is_labelled"].eq(True)
    return frame.loc[:, columns]


def plot_funnel(
    table: pd.DataFrame,
    limits: pd.DataFrame,
    highlight_code: str | None = None,
    *,
    indicator_title: str,
    unit: str,
    org_level: str,
    denominator_label: str = "Denominator",
    centre_value: float | None = None,
    centre_label: str = "England",
    improvement_direction: str | None = None,
    period_label: str | None = None,
    label_extremes: int = 0,
    chart_id: str | None = None,
) -> Chart:
    """Draw a funnel plot of organisations with 95% and 99.8% limits.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per organisation of one level, indicator and period: ``org_code``,
        ``org_name``, ``denominator``, ``value`` (and ``england_value`` when
        ``centre_value`` is not given).
    limits : pandas.DataFrame
        Limit lines from :mod:`moopt.stats` (:data:`LIMIT_COLUMNS`).
    highlight_code : str, optional
        Organisation to highlight (blue diamond and a text label).
    indicator_title, unit : str
        Indicator name and the unit of ``value``.
    org_level : str
        Level of the organisations plotted.
    denominator_label : str
        Axis label for the denominator, with its unit, e.g. "List size (patients)".
    centre_value : float, optional
        Centre line; by default the table's single ``england_value``.
    centre_label : str
        Name of the centre line in the legend and text.
    improvement_direction : {"increase", "decrease", "neutral"}, optional
        Stated in the caption when given.
    period_label : str, optional
        Period in words for the title, e.g. "12 months to Mar 2024".
    label_extremes : int
        Also label this many other organisations furthest from the centre.
    chart_id : str, optional
        File-safe identifier; by default ``"<indicator_id>_funnel"``.

    Returns
    -------
    Chart
        ``data`` is :func:`calculate_funnel_data` plus a ``unit`` column.
    """
    check_text(indicator_title, "indicator title")
    check_text(unit, "unit")
    check_text(denominator_label, "denominator label")
    check_level(org_level)
    check_direction(improvement_direction, allow_none=True)
    require_columns(table, FUNNEL_POINT_COLUMNS, "table of organisations")
    indicator_id = _single_text(table, "indicator_id", "indicator")
    for column, what in (("org_level", "organisation level"), ("period", "period")):
        if column in table.columns:
            single_value(table[column], what)
    if centre_value is None:
        require_columns(table, ("england_value",), "table of organisations")
        centre_value = float(single_value(table["england_value"], "England value"))
    chart_id = chart_id or make_chart_id(indicator_id, "funnel")
    title = indicator_title + (f", {period_label}" if period_label else "")
    data = calculate_funnel_data(table, limits, centre_value, highlight_code, label_extremes)
    data = data.assign(unit=unit)
    levels = level_name(org_level, plural=True)
    if data.empty or not data["series"].isin(["organisation", "highlighted_organisation"]).any():
        return empty_chart(chart_id, title, f"there are no {levels} with a value to plot", data)

    with styled():
        figure, axes = new_figure()
        draw_funnel(axes, data, unit, centre_label)
        finish_axes(axes, title, denominator_label, unit_axis_label(unit))
    caption = funnel_caption(levels, centre_label, improvement_direction)
    alt_text = funnel_alt_text(
        data, levels, indicator_title, unit, denominator_label, centre_label, highlight_code
    )
    return Chart(chart_id, title, caption, alt_text, data, figure)


# --- drawing (shared with the practice spread chart) ---------------------------------------
def draw_funnel(axes: Axes, data: pd.DataFrame, unit: str, centre_label: str) -> None:
    """Draw limit lines, the centre line and the points of a funnel data frame."""
    handles: list[object] = []
    seen: set[str] = set()
    for series, style in LIMIT_LINE_STYLE.items():
        rows = data.loc[data["series"] == series]
        if rows.empty:
            continue
        (line,) = axes.plot(
            rows["denominator"].to_numpy(),
            rows["value"].to_numpy(),
            color=NHS_DARK_GREY,
            linewidth=1.1,
            linestyle=style["linestyle"],
            zorder=2,
        )
        line.set_gid(series)
        if style["label"] not in seen:
            line.set_label(style["label"])
            handles.append(line)
            seen.add(str(style["label"]))
    centre = data.loc[data["series"] == "centre"]
    if not centre.empty:
        (line,) = axes.plot(
            centre["denominator"].to_numpy(),
            centre["value"].to_numpy(),
            color=NHS_BLACK,
            linewidth=1.2,
            zorder=2,
        )
        line.set_gid("centre")
        line.set_label(f"{centre_label} ({format_value(centre['value'].iloc[0], unit)})")
        handles.append(line)

    points = data.loc[data["series"] == "organisation"]
    for position in POSITIONS:
        rows = points.loc[points["position"] == position]
        if rows.empty:
            continue
        style = dict(POSITION_STYLE[position])
        collection = axes.scatter(
            rows["denominator"].to_numpy(),
            rows["value"].to_numpy(),
            linewidths=style.pop("linewidths", 1.0),
            zorder=4,
            **style,
        )
        collection.set_gid(f"organisation:{position}")
        collection.set_label(POSITION_LEGEND[position])
        handles.append(collection)

    highlight = data.loc[data["series"] == "highlighted_organisation"]
    if not highlight.empty:
        collection = axes.scatter(
            highlight["denominator"].to_numpy(),
            highlight["value"].to_numpy(),
            zorder=6,
            **HIGHLIGHT_STYLE,
        )
        collection.set_gid("highlighted_organisation")
        collection.set_label(
            shorten(f"{highlight['org_name'].iloc[0]} ({highlight['org_code'].iloc[0]})", 40)
        )
        handles.append(collection)

    annotate_points(axes, data, "denominator", unit)
    values = data["value"].to_numpy(dtype=float)
    if np.isfinite(values).any() and np.nanmin(values) >= 0:
        axes.set_ylim(bottom=0)
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    add_legend(axes.figure, handles, columns=3)


def annotate_points(
    axes: Axes, data: pd.DataFrame, x_column: str, unit: str, top_column: str | None = None
) -> None:
    """Write codes next to labelled points: the highlight in bold blue with its value.

    With ``top_column`` (e.g. the upper end of an interval) the label sits above it.
    """
    labelled = data.loc[data["is_labelled"].astype(bool)]
    for row in labelled.itertuples(index=False):  # at most a handful of labels
        highlighted = row.series == "highlighted_organisation"
        text = f"{row.org_code}: {format_value(row.value, unit)}" if highlighted else row.org_code
        anchor = row.value
        if top_column is not None and pd.notna(getattr(row, top_column)):
            anchor = max(anchor, getattr(row, top_column))
        axes.annotate(
            text,
            xy=(getattr(row, x_column), anchor),
            xytext=(0, 13) if highlighted else (5, 4),
            textcoords="offset points",
            ha="center" if highlighted else "left",
            fontsize=9 if highlighted else 8,
            fontweight="bold" if highlighted else "normal",
            color=NHS_BLUE if highlighted else NHS_DARK_GREY,
            # A white backing keeps the highlight's label readable over other points.
            bbox={"boxstyle": "round,pad=0.15", "facecolor": NHS_WHITE, "edgecolor": "none",
                  "alpha": 0.85} if highlighted else None,
            annotation_clip=False,
            zorder=7,
        )


# --- words ---------------------------------------------------------------------------------
def funnel_caption(levels: str, centre_label: str, improvement_direction: str | None) -> str:
    parts = [
        f"Each marker is one of the {levels}, placed by its size (across) and its value (up).",
        f"The solid line is {centre_label}; the dashed and dotted funnel lines are 95% and "
        "99.8% control limits, wider for smaller organisations because their values vary "
        "more by chance.",
        "Triangles mark values beyond a limit (open: 95%, filled: 99.8%); a point beyond "
        "the 99.8% limits is unlikely to be chance alone and is worth a closer look, "
        "not a judgement.",
    ]
    sentence = direction_sentence(improvement_direction)
    if sentence:
        parts.append(sentence)
    return " ".join(parts)


def funnel_alt_text(
    data: pd.DataFrame,
    levels: str,
    indicator_title: str,
    unit: str,
    denominator_label: str,
    centre_label: str,
    highlight_code: str | None,
) -> str:
    points = data.loc[data["series"].isin(["organisation", "highlighted_organisation"])]
    counts = points["position"].value_counts()
    beyond_95 = int(counts.reindex([ABOVE_95, BELOW_95, ABOVE_99_8, BELOW_99_8]).fillna(0).sum())
    above_99_8 = int(counts.get(ABOVE_99_8, 0))
    below_99_8 = int(counts.get(BELOW_99_8, 0))
    centre = data.loc[data["series"] == "centre", "value"]
    sentences = [
        f"Funnel plot of {indicator_title} for {len(points)} {levels}: value against "
        f"{denominator_label.lower()}, with {centre_label} at "
        f"{format_value(centre.iloc[0], unit)}.",
        f"Outside the 95% limits: {beyond_95}; above the 99.8% limits: {above_99_8}; "
        f"below them: {below_99_8}.",
    ]
    if int(counts.get(NOT_ASSESSED, 0)):
        sentences.append(
            f"Beyond the range of sizes the limits cover: {int(counts[NOT_ASSESSED])}."
        )
    if highlight_code is not None:
        row = points.loc[points["org_code"] == highlight_code]
        if row.empty:
            sentences.append(f"{highlight_code} has no value to plot.")
        else:
            row = row.iloc[0]
            sentences.append(
                f"{shorten(row['org_name'], 60)} ({highlight_code}) has "
                f"{format_value(row['value'], unit)} with a denominator of "
                f"{format_number(row['denominator'])}, {row['position']}."
            )
    return " ".join(sentences)


def _limit_lines(limits: pd.DataFrame, x_low: float, x_high: float) -> pd.DataFrame:
    """Vertices of the limit lines over [x_low, x_high] cut to the limits' own range."""
    low = max(x_low, float(limits["denominator"].iloc[0]))
    high = min(x_high, float(limits["denominator"].iloc[-1]))
    if low > high:
        return pd.DataFrame(columns=["series", "denominator", "value"])
    inside = limits["denominator"].to_numpy()
    grid = np.unique(np.concatenate([[low, high], inside[(inside > low) & (inside < high)]]))
    at = interpolate_limits(grid, limits)
    at.insert(0, "denominator", grid)
    return at.melt(id_vars="denominator", var_name="series", value_name="value").loc[
        :, ["series", "denominator", "value"]
    ]


def _x_range(x: np.ndarray) -> tuple[float, float]:
    low, high = float(np.min(x)), float(np.max(x))
    if low == high:
        return low * 0.9, high * 1.1 if high else 1.0
    margin = (high - low) * 0.03
    return max(0.0, low - margin), high + margin


def _single_text(table: pd.DataFrame, column: str, what: str) -> str | None:
    if column not in table.columns or table.empty:
        return None
    value = single_value(table[column], what)
    return None if pd.isna(value) else str(value)
