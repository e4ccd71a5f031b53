"""Funnel plots: each organisation's value against its size, with control limits.

The limits themselves are statistics (computed by :mod:`moopt.stats`) and arrive
as a table of limit lines with the columns in :data:`LIMIT_COLUMNS`. Each
organisation's position against them is the stored verdict of
:mod:`moopt.results` (``funnel_flag_95`` and ``funnel_flag_99_8``), so the chart
says what the page's text and summary say; only a table without those flags is
placed by linear interpolation between the rows of the limits table, which is
how the lines are drawn.

The chart reads two datasets that are the same on every organisation's page of
a level (:func:`organisation_values`, shared with the ranked peer chart of
:mod:`moopt.charts.peers`, and :func:`funnel_line_frame`); the organisation to
highlight is the specification's ``org_code`` parameter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import altair as alt
import numpy as np
import pandas as pd

from moopt.charts.base import (
    CHART_HEIGHT,
    memo_by_content,
    NHS_BLACK,
    NHS_BLUE,
    NHS_DARK_BLUE,
    NHS_DARK_GREY,
    NHS_MID_GREY,
    NHS_WHITE,
    Chart,
    ChartData,
    check_direction,
    check_level,
    check_text,
    direction_sentence,
    empty_chart,
    format_number,
    format_value,
    level_name,
    make_chart_id,
    require_columns,
    shorten,
    single_value,
    spec_from_altair,
    unit_axis_label,
)

LIMIT_COLUMNS: tuple[str, ...] = ("denominator", "lower_95", "upper_95", "lower_99_8", "upper_99_8")
LIMIT_SERIES: tuple[str, ...] = LIMIT_COLUMNS[1:]
FUNNEL_POINT_COLUMNS: tuple[str, ...] = ("org_code", "org_name", "denominator", "value")
FLAG_COLUMNS: tuple[str, str] = ("funnel_flag_95", "funnel_flag_99_8")

WITHIN = "within 95% limits"
ABOVE_95 = "above 95% limit"
BELOW_95 = "below 95% limit"
ABOVE_99_8 = "above 99.8% limit"
BELOW_99_8 = "below 99.8% limit"
NOT_ASSESSED = "outside the range of the limits"
NOT_IN_FUNNEL = "not in the funnel"
POSITIONS: tuple[str, ...] = (WITHIN, ABOVE_95, BELOW_95, ABOVE_99_8, BELOW_99_8, NOT_ASSESSED,
                              NOT_IN_FUNNEL)

# Shape carries the position (triangles point the way out; open = 95%, filled = 99.8%);
# fill and outline colour only repeat it.
POSITION_SHAPES: tuple[str, ...] = ("circle", "triangle-up", "triangle-down", "triangle-up",
                                    "triangle-down", "cross", "square")
POSITION_FILLS: tuple[str, ...] = (NHS_MID_GREY, NHS_WHITE, NHS_WHITE, NHS_DARK_BLUE, NHS_DARK_BLUE,
                                   NHS_MID_GREY, NHS_WHITE)
POSITION_STROKES: tuple[str, ...] = (NHS_MID_GREY, NHS_DARK_GREY, NHS_DARK_GREY, NHS_DARK_BLUE,
                                     NHS_DARK_BLUE, NHS_MID_GREY, NHS_MID_GREY)
POSITION_LEGEND: dict[str, str] = {
    WITHIN: "Within 95% limits",
    ABOVE_95: "Above 95% (open)",
    BELOW_95: "Below 95% (open)",
    ABOVE_99_8: "Above 99.8% (filled)",
    BELOW_99_8: "Below 99.8% (filled)",
    NOT_ASSESSED: "Beyond the limits' range",
    NOT_IN_FUNNEL: "Not in the funnel",
}

# The columns of every organisation's row at a level (and of member practices): the same
# columns whichever chart builds them, so the peers and funnel charts share one file.
VALUE_COLUMNS: tuple[str, ...] = (
    "indicator_id", "org_level", "org_code", "org_name", "period", "period_type", "rank", "value",
    "lower_95", "upper_95", "numerator", "denominator", "england_value", *FLAG_COLUMNS, "position",
)
_TEXT_COLUMNS = ("indicator_id", "org_level", "org_code", "org_name", "period_type", *FLAG_COLUMNS)
_NUMBER_COLUMNS = ("value", "lower_95", "upper_95", "numerator", "denominator", "england_value")

# The lines' names, which are also their legend entries.
LINE_95 = "95% limits"
LINE_99_8 = "99.8% limits"
LINE_DASHES: dict[str, list[int]] = {"centre": [1, 0], LINE_95: [6, 4], LINE_99_8: [2, 2]}
HIGHLIGHT_SHAPE = "diamond"


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
            column: np.interp(x, limits["denominator"].to_numpy(), limits[column].to_numpy(),
                              left=np.nan, right=np.nan)
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


def position_from_flags(flag_95: np.ndarray, flag_99_8: np.ndarray) -> np.ndarray:
    """One of :data:`POSITIONS` from stored funnel flags ("below", "inside", "above" or missing).

    A row without flags was not in its level's funnel (no numerator or
    denominator, or too few organisations): :data:`NOT_IN_FUNNEL`.
    """
    flag_95 = np.asarray(flag_95, dtype=object)
    flag_99_8 = np.asarray(flag_99_8, dtype=object)
    return np.select(
        [flag_99_8 == "above", flag_99_8 == "below", flag_95 == "above", flag_95 == "below",
         flag_95 == "inside"],
        [ABOVE_99_8, BELOW_99_8, ABOVE_95, BELOW_95, WITHIN],
        default=NOT_IN_FUNNEL,
    )


# --- datasets ------------------------------------------------------------------------------
COMPARISON_COLUMNS: tuple[str, str] = ("comparison_95", "comparison_99_8")
_FLAG_OF_COMPARISON = {"higher": "above", "similar": "inside", "lower": "below"}


def flags_from_comparisons(rows: pd.DataFrame) -> pd.DataFrame:
    """Funnel flags from the stored verdict columns when the rows carry those rather than flags.

    ``indicator_results`` stores the one verdict as ``comparison_95`` and
    ``comparison_99_8`` (higher, similar or lower than England: the position in the
    funnel); the flags ("above", "inside", "below") say the same thing.
    """
    if set(FLAG_COLUMNS) <= set(rows.columns) or not set(COMPARISON_COLUMNS) <= set(rows.columns):
        return rows
    out = rows.copy()
    for flag, comparison in zip(FLAG_COLUMNS, COMPARISON_COLUMNS):
        out[flag] = rows[comparison].map(_FLAG_OF_COMPARISON).astype(object)
        out[flag] = out[flag].where(out[flag].notna(), None)
    return out


@memo_by_content
def organisation_values(rows: pd.DataFrame, limits: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every organisation with a value, ranked, with its funnel position: :data:`VALUE_COLUMNS`.

    This is the dataset that the peer and funnel charts of one indicator, level
    and period share, so it depends on the rows alone, never on the organisation
    a page is about.

    Parameters
    ----------
    rows : pandas.DataFrame
        One row per organisation with at least ``org_code``, ``org_name`` and
        ``value``; the other columns of :data:`VALUE_COLUMNS` are carried when
        present and left empty otherwise. Rows without a value are left out.
    limits : pandas.DataFrame, optional
        Only for a table without the stored flags (:data:`FLAG_COLUMNS`): the
        limit lines to place each point against by interpolation.

    Returns
    -------
    pandas.DataFrame
        Sorted by value (ties by code); ``rank`` is 1 for the lowest value;
        ``position`` is one of :data:`POSITIONS`.

    Raises
    ------
    ValueError
        When a required column is missing or an organisation appears twice.
    """
    require_columns(rows, ("org_code", "org_name", "value"), "table of organisations")
    rows = flags_from_comparisons(rows)
    out = pd.DataFrame(index=rows.index)
    for column in VALUE_COLUMNS:
        if column in ("rank", "position"):
            continue
        if column in rows.columns:
            values = rows[column]
        else:
            values = pd.Series(np.nan if column in _NUMBER_COLUMNS else None, index=rows.index)
        if column in _NUMBER_COLUMNS:
            out[column] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif column == "period":
            out[column] = pd.to_datetime(values)
        else:
            out[column] = values.astype(object).where(values.notna(), None)
    out = (out.dropna(subset=["value"])
           .sort_values(["value", "org_code"], kind="stable")
           .reset_index(drop=True))
    duplicated = out["org_code"].duplicated()
    if duplicated.any():
        raise ValueError(
            f"The table of organisations has {out.loc[duplicated, 'org_code'].iloc[0]} more than "
            "once for this selection; filter it to one level and period first.")
    out["rank"] = np.arange(1, len(out) + 1, dtype="int64")
    if set(FLAG_COLUMNS) <= set(rows.columns):
        out["position"] = position_from_flags(out[FLAG_COLUMNS[0]].to_numpy(),
                                              out[FLAG_COLUMNS[1]].to_numpy())
    elif limits is not None:
        out["position"] = assign_funnel_position(out["denominator"].to_numpy(),
                                                 out["value"].to_numpy(), clean_limits(limits))
    else:
        out["position"] = NOT_IN_FUNNEL
    return out.loc[:, list(VALUE_COLUMNS)]


@memo_by_content
def funnel_line_frame(limits: pd.DataFrame, centre_value: float, centre_label: str = "England",
                      centre_extent: tuple[float, float] | None = None) -> pd.DataFrame:
    """The vertices of the funnel's lines in long form: ``series``, ``line``, ``denominator``, ``value``.

    ``series`` is "centre" or a column of :data:`LIMIT_SERIES`; ``line`` is what
    the legend calls it (``centre_label``, :data:`LINE_95` or :data:`LINE_99_8`).
    The centre line has a vertex at every denominator of the limits, so the
    lines can be cut to any range alike; with no limits it runs across
    ``centre_extent``. The frame depends only on the limits and the centre, not
    on any organisation.
    """
    if not np.isfinite(centre_value):
        raise ValueError("The funnel's centre value must be a finite number.")
    limits = clean_limits(limits)
    if limits.empty:
        grid = np.unique(np.asarray(centre_extent if centre_extent is not None else [], dtype=float))
        return pd.DataFrame({"series": "centre", "line": centre_label, "denominator": grid,
                             "value": float(centre_value)}).astype({"value": "float64"})
    frame = limits.assign(centre=float(centre_value)).melt(
        id_vars="denominator", value_vars=["centre", *LIMIT_SERIES], var_name="series")
    frame["line"] = frame["series"].map(
        {"centre": centre_label, "lower_95": LINE_95, "upper_95": LINE_95,
         "lower_99_8": LINE_99_8, "upper_99_8": LINE_99_8})
    return (frame.dropna(subset=["value"])
            .loc[:, ["series", "line", "denominator", "value"]]
            .reset_index(drop=True))


def furthest_from_centre(values: pd.DataFrame, centre_value: float, count: int,
                         limits: pd.DataFrame | None = None) -> list[str]:
    """Codes of the ``count`` points furthest from the centre (ties by code).

    With ``limits`` the distance is in units of the 99.8% limit's half-width at
    each point's size (so a small organisation is not labelled for chance
    alone); without, it is the plain difference from ``centre_value``.
    """
    if count <= 0 or values.empty or not np.isfinite(centre_value):
        return []
    y = values["value"].to_numpy(dtype=float)
    if limits is not None:
        at = interpolate_limits(values["denominator"].to_numpy(dtype=float), clean_limits(limits))
        spread = np.where(y > centre_value, at["upper_99_8"].to_numpy() - centre_value,
                          centre_value - at["lower_99_8"].to_numpy())
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = np.where(spread > 0, np.abs(y - centre_value) / spread, np.nan)
    else:
        distance = np.abs(y - centre_value)
    ranking = pd.DataFrame({"distance": np.nan_to_num(distance, nan=-np.inf),
                            "org_code": values["org_code"].to_numpy()})
    ranking = ranking.sort_values(["distance", "org_code"], ascending=[False, True], kind="stable")
    return [str(code) for code in ranking["org_code"].head(int(count))]


@dataclass(frozen=True)
class FunnelData:
    """What a funnel plot draws: its points, its lines and the codes labelled beside points."""

    points: pd.DataFrame
    lines: pd.DataFrame
    labelled_codes: tuple[str, ...] = ()


def calculate_funnel_data(
    points: pd.DataFrame,
    limits: pd.DataFrame,
    centre_value: float,
    label_extremes: int = 0,
    centre_label: str = "England",
) -> FunnelData:
    """Build the two datasets of a funnel plot.

    Parameters
    ----------
    points : pandas.DataFrame
        One row per organisation with ``org_code``, ``org_name``, ``denominator``
        and ``value``; rows without a value are left out, and rows without a
        positive denominator are kept in the data but cannot be placed on the
        funnel (the chart says how many). With ``funnel_flag_95`` and
        ``funnel_flag_99_8`` (the stored verdicts of :mod:`moopt.results`) the
        points are placed by those; otherwise by interpolation between the
        limit lines.
    limits : pandas.DataFrame
        Limit lines (:data:`LIMIT_COLUMNS`); may be empty.
    centre_value : float
        Value of the centre line (usually England's).
    label_extremes : int
        How many points furthest from the centre (in units of the 99.8%
        limit's distance at their size) to label by code.
    centre_label : str
        Name of the centre line.

    Returns
    -------
    FunnelData
        ``points`` (:func:`organisation_values`), ``lines``
        (:func:`funnel_line_frame`) and ``labelled_codes``.
    """
    require_columns(points, FUNNEL_POINT_COLUMNS, "table of organisations")
    limits = clean_limits(limits)
    values = organisation_values(points, limits)
    placed = values.loc[values["denominator"] > 0]
    extent = ((float(placed["denominator"].min()), float(placed["denominator"].max()))
              if len(placed) else None)
    lines = funnel_line_frame(limits, centre_value, centre_label, centre_extent=extent)
    labelled = furthest_from_centre(placed, centre_value, label_extremes, limits)
    return FunnelData(values, lines, tuple(labelled))


def values_key(indicator_id: object, org_level: object, period_type: object, period: object,
               kind: str) -> str | None:
    """Shared-dataset key ``{indicator}.{level}.{period_type}.{YYYY-MM}.{kind}``, or None.

    None when a part is unknown: such rows cannot be told apart from another
    indicator's or period's, so they are kept in the page instead of shared.
    """
    parts = (indicator_id, org_level, period_type, period)
    if any(part is None or (not isinstance(part, str) and pd.isna(part)) for part in parts):
        return None
    return f"{indicator_id}.{org_level}.{period_type}.{pd.Timestamp(period):%Y-%m}.{kind}"


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
    decimals: int = 2,
) -> Chart:
    """A funnel plot of organisations with 95% and 99.8% limits, one highlighted.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per organisation of one level, indicator and period: ``org_code``,
        ``org_name``, ``denominator``, ``value`` (and ``england_value`` when
        ``centre_value`` is not given). Give every organisation of the level
        (the same rows as :func:`moopt.charts.peers.plot_peer_position`), so
        that both charts share one dataset.
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
        Also label this many organisations furthest from the centre by code.
    chart_id : str, optional
        File-safe identifier; by default ``"<indicator_id>_funnel"``.
    decimals : int
        Decimal places of values in tooltips and labels.

    Returns
    -------
    Chart
        Datasets ``values`` (:func:`organisation_values`, shared with the peer
        chart) and ``funnel_lines`` (:func:`funnel_line_frame`); parameters
        ``org_code`` and ``labelled_codes``.
    """
    check_text(indicator_title, "indicator title")
    check_text(unit, "unit")
    check_text(denominator_label, "denominator label")
    check_text(centre_label, "centre label")
    check_level(org_level)
    check_direction(improvement_direction, allow_none=True)
    require_columns(table, FUNNEL_POINT_COLUMNS, "table of organisations")
    identity = {column: _single(table, column, what) for column, what in (
        ("indicator_id", "indicator"), ("org_level", "organisation level"), ("period", "period"),
        ("period_type", "period type"))}
    if identity["org_level"] is not None and identity["org_level"] != org_level:
        raise ValueError(f"The table holds {identity['org_level']} rows, not {org_level} rows.")
    if centre_value is None:
        require_columns(table, ("england_value",), "table of organisations")
        centre_value = float(single_value(table["england_value"], "England value"))
    chart_id = chart_id or make_chart_id(identity["indicator_id"], "funnel")
    title = indicator_title + (f", {period_label}" if period_label else "")
    levels = level_name(org_level, plural=True)
    data = calculate_funnel_data(table, limits, centre_value, label_extremes, centre_label)
    placed = data.points.loc[data.points["denominator"] > 0]
    if placed.empty:
        return empty_chart(chart_id, title, f"there are no {levels} with a value to plot",
                           data.points)

    # Positions from the stored flags are the same on every page; positions worked out here
    # from the limits are kept with this chart (the peer chart cannot know them).
    from_flags = set(FLAG_COLUMNS) <= set(flags_from_comparisons(table).columns)
    key_parts = (identity["indicator_id"], org_level, identity["period_type"], identity["period"])
    values_data = ChartData("values", data.points, f"every {level_name(org_level)}'s value",
                            values_key(*key_parts, "values") if from_flags else None)
    lines_data = ChartData("funnel_lines", data.lines, "the funnel's lines",
                           values_key(*key_parts, "funnel_lines"))
    has_intervals = bool(data.points[["lower_95", "upper_95"]].notna().all(axis=1).any())
    spec = funnel_spec(unit, int(decimals), denominator_label, centre_label,
                       level_name(org_level).capitalize(), has_intervals, identity["period_type"],
                       "values", "funnel_lines", True, False)
    caption = funnel_caption(levels, centre_label, improvement_direction)
    alt_text = funnel_alt_text(data.points, levels, indicator_title, unit, denominator_label,
                               centre_label, centre_value, highlight_code)
    return Chart(chart_id, title, caption, alt_text, [values_data, lines_data], spec,
                 params={"org_code": highlight_code or "", "labelled_codes": list(data.labelled_codes)})


# --- specification (shared with the practice spread chart) ---------------------------------
def value_format(decimals: int) -> str:
    """d3 format of a value with ``decimals`` places and thousands separators."""
    return f",.{int(decimals)}f"


def unit_suffix(unit: str) -> str:
    """What follows a number in text: "%" directly, other units after a space."""
    return "%" if unit.strip() in ("%", "per cent", "percent") else f" {unit}"


PERIOD_TITLES = {"rolling_12m": "12 months to", "quarter": "Quarter to", "month": "Month"}


def point_tooltip(unit: str, decimals: int, noun: str, has_intervals: bool,
                  with_denominator: bool, denominator_label: str = "Denominator",
                  period_type: str | None = None) -> list:
    """Tooltip fields of an organisation's point: name, code, period, value, interval, size, position."""
    fmt = value_format(decimals)
    fields = [alt.Tooltip("org_name:N", title=noun), alt.Tooltip("org_code:N", title="Code"),
              alt.Tooltip("period:T", timeUnit="utcyearmonth", format="%b %Y",
                          title=PERIOD_TITLES.get(period_type, "Period")),
              alt.Tooltip("value:Q", title=f"Value ({unit})", format=fmt)]
    if has_intervals:
        fields += [alt.Tooltip("lower_95:Q", title="95% interval from", format=fmt),
                   alt.Tooltip("upper_95:Q", title="95% interval to", format=fmt)]
    if with_denominator:
        fields.append(alt.Tooltip("denominator:Q", title=shorten(denominator_label, 40), format=",.0f"))
    fields.append(alt.Tooltip("position:N", title="Against the funnel limits"))
    return fields


def label_layers(base: alt.Chart, x_field: str, y_expr: str, text_expr: str, colour: str,
                 size: int = 13, weight: str = "bold", dy: int = -14) -> list[alt.Chart]:
    """A text label above each row of ``base`` on a white halo, kept inside the plot.

    Near the left or right edge the label is aligned to stay within the chart,
    and long names are cut to 60% of the plot's width, at most 300 px (the full name is in
    the tooltip).
    """
    x_px = f"scale('x', datum.{x_field})"
    align = {"expr": f"{x_px} < width * 0.3 ? 'left' : {x_px} > width * 0.7 ? 'right' : 'center'"}
    labelled = base.transform_calculate(label_text=text_expr, label_y=y_expr)
    # At most 60% of the plot's width, so that a centred label stays inside it on a phone.
    common = dict(align=align, baseline="bottom", dy=dy, fontSize=size, fontWeight=weight,
                  limit={"expr": "min(300, width * 0.6)"})
    encoding = dict(x=alt.X(f"{x_field}:Q"), y=alt.Y("label_y:Q"), text=alt.Text("label_text:N"))
    halo = labelled.mark_text(stroke=NHS_WHITE, strokeWidth=4, strokeJoin="round", **common)
    text = labelled.mark_text(color=colour, **common)
    return [halo.encode(**encoding), text.encode(**encoding)]


@lru_cache(maxsize=256)
def funnel_spec(unit: str, decimals: int, denominator_label: str, centre_label: str, noun: str,
                has_intervals: bool, period_type: str | None, points_name: str, lines_name: str,
                highlight: bool, fit_to_points: bool) -> dict:
    """The funnel plot's Vega-Lite template (cached: nothing here depends on an organisation).

    ``highlight`` draws the row whose ``org_code`` equals the ``org_code``
    parameter as a labelled diamond; ``fit_to_points`` draws only the part of
    the lines near the points' sizes (for national lines behind a few members).
    """
    fmt = value_format(decimals)
    x_scale = alt.Scale(zero=False, nice=True)
    y_scale = alt.Scale(zero=False, nice=True)
    x = alt.X("denominator:Q", title=denominator_label, scale=x_scale,
              axis=alt.Axis(format=",~s", tickCount=6))
    y = alt.Y("value:Q", title=unit_axis_label(unit), scale=y_scale)
    line_names = [centre_label, LINE_95, LINE_99_8]

    lines = alt.Chart(alt.NamedData(name=lines_name))
    params = [alt.param(name="labelled_codes", value=[])]
    if fit_to_points:
        # Vega works out the points' range, so the template stays the same for every page.
        sizes = f"pluck(data('{points_name}'), 'denominator')"
        params += [alt.param(name="size_low", expr=f"extent({sizes})[0] / 1.3"),
                   alt.param(name="size_high", expr=f"extent({sizes})[1] * 1.3")]
        lines = lines.transform_filter("datum.denominator >= size_low && datum.denominator <= size_high")
    # The lines are named by text at their ends (limits on the left, where the funnel is
    # widest; the centre on the right) and told apart by dash pattern, so they need no legend.
    line_layer = lines.mark_line(
        strokeWidth=1.6, point=alt.OverlayMarkDef(filled=True, opacity=0, size=40)
    ).encode(
        x=x, y=y, detail="series:N",
        strokeDash=alt.StrokeDash("line:N", legend=None, scale=alt.Scale(
            domain=line_names, range=[LINE_DASHES["centre"], LINE_DASHES[LINE_95], LINE_DASHES[LINE_99_8]])),
        color=alt.Color("line:N", legend=None, scale=alt.Scale(
            domain=line_names, range=[NHS_BLACK, NHS_DARK_GREY, NHS_DARK_GREY])),
        tooltip=[alt.Tooltip("line:N", title="Line"),
                 alt.Tooltip("denominator:Q", title=shorten(denominator_label, 40), format=",.0f"),
                 alt.Tooltip("value:Q", title=f"Value ({unit})", format=fmt)],
    )
    ends = lines.transform_joinaggregate(first="min(denominator)", last="max(denominator)",
                                         groupby=["series"])
    line_labels = [
        ends.transform_filter("(datum.series === 'upper_95' || datum.series === 'upper_99_8') "
                              "&& datum.denominator === datum.first")
        .mark_text(align="left", baseline="bottom", dx=3, dy=-2, fontSize=12, color=NHS_DARK_GREY)
        .encode(x=x, y=y, text="line:N"),
        ends.transform_filter("datum.series === 'centre' && datum.denominator === datum.last")
        .mark_text(align="right", baseline="bottom", dy=-3, fontSize=12, color=NHS_BLACK)
        .encode(x=x, y=y, text="line:N"),
    ]

    points = alt.Chart(alt.NamedData(name=points_name)).transform_filter(
        "isValid(datum.denominator) && datum.denominator > 0")
    tooltip = point_tooltip(unit, decimals, noun, has_intervals, True, denominator_label, period_type)
    # One legend for shape, fill and outline (identical definitions merge); the two rare
    # positions are left out of it and named in the tooltip and the alt text.
    legend = alt.Legend(values=list(POSITIONS[:5]), labelExpr=_legend_expr())

    def position(channel, colours):
        return channel("position:N", title=None, legend=legend,
                       scale=alt.Scale(domain=list(POSITIONS), range=list(colours)))

    point_layer = points.mark_point(filled=True, size=60, strokeWidth=1.5, opacity=0.9).encode(
        x=x, y=y,
        shape=position(alt.Shape, POSITION_SHAPES),
        fill=position(alt.Fill, POSITION_FILLS),
        stroke=position(alt.Stroke, POSITION_STROKES),
        tooltip=tooltip,
    )
    layers = [line_layer, *line_labels, point_layer]
    extremes = points.transform_filter("indexof(labelled_codes, datum.org_code) >= 0")
    layers += label_layers(extremes, "denominator", "datum.value", "datum.org_code",
                           NHS_DARK_GREY, size=12, weight="normal", dy=-8)
    if highlight:
        params.append(alt.param(name="org_code", value=""))
        chosen = points.transform_filter("datum.org_code === org_code")
        layers.append(chosen.mark_point(shape=HIGHLIGHT_SHAPE, size=220, filled=True, fill=NHS_BLUE,
                                        stroke=NHS_WHITE, strokeWidth=1.5, opacity=1).encode(
            x=x, y=y, tooltip=tooltip))
        layers += label_layers(
            chosen, "denominator", "datum.value",
            value_label_expr(decimals, unit), NHS_BLUE)
    chart = alt.layer(*layers).add_params(*params).properties(width="container", height=CHART_HEIGHT)
    return spec_from_altair(chart)


def js_string(text: str) -> str:
    """``text`` as a string literal in a Vega expression (quotes and backslashes escaped)."""
    return json.dumps(str(text), ensure_ascii=False)


def value_label_expr(decimals: int, unit: str, name_field: str | None = "org_name",
                     value_field: str = "value") -> str:
    """Vega expression for "<name>: <value><unit>" (or just the value with its unit)."""
    number = (f"format(datum.{value_field}, {js_string(value_format(decimals))}) + "
              f"{js_string(unit_suffix(unit))}")
    # Long names are cut so that the value always shows; the tooltip has the full name.
    return f"truncate(datum.{name_field}, 28) + ': ' + {number}" if name_field else number


def _legend_expr() -> str:
    """Vega expression turning a position into its legend words (:data:`POSITION_LEGEND`)."""
    cases = " : ".join(f"datum.label === {js_string(key)} ? {js_string(words)}"
                       for key, words in POSITION_LEGEND.items())
    return f"{cases} : datum.label"


# --- words ---------------------------------------------------------------------------------
def funnel_caption(levels: str, centre_label: str, improvement_direction: str | None) -> str:
    parts = [
        f"Each marker is one of the {levels}, placed by its size (across) and its value (up); "
        "hover over a marker for its name and figures.",
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
    points: pd.DataFrame,
    levels: str,
    indicator_title: str,
    unit: str,
    denominator_label: str,
    centre_label: str,
    centre_value: float,
    highlight_code: str | None,
) -> str:
    """Text alternative of a funnel plot: counts by position and the highlighted organisation."""
    placed = points.loc[points["denominator"] > 0]
    counts = placed["position"].value_counts()
    beyond_95 = int(counts.reindex([ABOVE_95, BELOW_95, ABOVE_99_8, BELOW_99_8]).fillna(0).sum())
    above_99_8 = int(counts.get(ABOVE_99_8, 0))
    below_99_8 = int(counts.get(BELOW_99_8, 0))
    sentences = [
        f"Funnel plot of {indicator_title} for {len(placed)} {levels}: value against "
        f"{denominator_label.lower()}, with {centre_label} at {format_value(centre_value, unit)}.",
        f"Outside the 95% limits: {beyond_95}; above the 99.8% limits: {above_99_8}; "
        f"below them: {below_99_8}.",
    ]
    for position, words in ((NOT_ASSESSED, "Beyond the range of sizes the limits cover"),
                            (NOT_IN_FUNNEL, "Not in the funnel (no limits for them)")):
        if int(counts.get(position, 0)):
            sentences.append(f"{words}: {int(counts[position])}.")
    unplaced = len(points) - len(placed)
    if unplaced:
        sentences.append(f"Not shown for want of a denominator: {unplaced}.")
    if highlight_code is not None:
        row = points.loc[points["org_code"] == highlight_code]
        if row.empty or not row["denominator"].iloc[0] > 0:
            sentences.append(f"{highlight_code} has no value to plot.")
        else:
            row = row.iloc[0]
            sentences.append(
                f"{shorten(row['org_name'], 60)} ({highlight_code}) has "
                f"{format_value(row['value'], unit)} with a denominator of "
                f"{format_number(row['denominator'])}, {row['position']}."
            )
    return " ".join(sentences)


def _single(table: pd.DataFrame, column: str, what: str) -> object:
    """The single value of ``column`` (None when the column is absent or empty)."""
    if column not in table.columns or table.empty:
        return None
    value = single_value(table[column], what)
    if pd.isna(value):
        return None
    return pd.Timestamp(value) if column == "period" else str(value)
