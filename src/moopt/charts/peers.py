"""Where an organisation sits among all organisations of its level: a ranked dot plot.

Organisations are ordered from the lowest value to the highest (a "caterpillar"
plot). The selected organisation is a blue diamond with a text label naming
it; the others are small grey dots; England is a horizontal dash-dot line
labelled in words. When the rows have ``lower_95`` and ``upper_95``, the 95%
confidence intervals are drawn as vertical lines.

The rows drawn are every organisation of the level
(:func:`moopt.charts.funnel.organisation_values`), the same dataset the funnel
plot reads, stored once for all pages; the organisation to highlight is the
specification's ``org_code`` parameter.
"""

from __future__ import annotations

from functools import lru_cache

import altair as alt
import pandas as pd

from moopt.charts.base import (
    CHART_HEIGHT,
    NHS_BLUE,
    NHS_DARK_GREY,
    NHS_MID_GREY,
    NHS_WHITE,
    Chart,
    ChartData,
    check_direction,
    check_level,
    check_period_type,
    check_text,
    direction_sentence,
    empty_chart,
    format_period,
    format_value,
    level_name,
    make_chart_id,
    require_columns,
    shorten,
    single_value,
    spec_from_altair,
    to_timestamp,
    unit_axis_label,
)
from moopt.charts.funnel import (
    HIGHLIGHT_SHAPE,
    label_layers,
    organisation_values,
    point_tooltip,
    value_format,
    value_label_expr,
    values_key,
)

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
ENGLAND_DASHES: list[int] = [8, 4, 2, 4]  # dash-dot: England's line in every ranked chart
RANK_AXIS_TITLE = "Rank (1 = lowest value)"


def rank_points(points: pd.DataFrame, limits: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every row with a value, ordered by value (ties by code) and ranked from 1.

    The same frame as :func:`moopt.charts.funnel.organisation_values`: it depends
    on the rows alone, never on an organisation to highlight, so one file serves
    every page. ``limits`` places rows without stored funnel flags.
    """
    return organisation_values(points, limits)


def level_rows(table: pd.DataFrame, org_level: str, period: object, period_type: str) -> pd.DataFrame:
    """The table's rows for one level and period (every organisation, with or without a value)."""
    require_columns(table, PEER_COLUMNS, "indicator table")
    check_level(org_level)
    check_period_type(period_type)
    stamp = to_timestamp(period)
    rows = table.loc[
        (table["org_level"] == org_level)
        & (pd.to_datetime(table["period"]) == stamp)
        & (table["period_type"] == period_type)
    ]
    if "indicator_id" in rows.columns:
        single_value(rows["indicator_id"], "indicator")
    single_value(rows["england_value"], "England value")
    return rows


def calculate_peer_data(
    table: pd.DataFrame,
    org_code: str,
    org_level: str,
    period: object,
    period_type: str,
) -> pd.DataFrame:
    """Select and rank the organisations drawn by :func:`plot_peer_position`.

    ``org_code`` is checked but does not change the rows: the organisation is
    highlighted by the chart's parameter, so every page shares these rows.

    Returns
    -------
    pandas.DataFrame
        See :func:`rank_points`; organisations without a value are left out.
    """
    check_text(org_code, "organisation code")
    return rank_points(level_rows(table, org_level, period, period_type))


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
    decimals: int = 2,
) -> Chart:
    """All organisations of a level as a ranked dot plot, highlighting one.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy indicator table for one indicator (:data:`PEER_COLUMNS`, optionally
        ``lower_95``, ``upper_95``, ``numerator``, ``denominator`` and the
        funnel flags).
    org_code, org_level : str
        Organisation to highlight and the level whose organisations are ranked.
    period : date-like
        The period to show (first day of its last month).
    period_type : {"rolling_12m", "month", "quarter"}
        Kind of period.
    indicator_title, unit : str
        Indicator name and the unit of its value.
    improvement_direction : {"increase", "decrease", "neutral"}, optional
        Stated in the caption when given.
    chart_id : str, optional
        By default ``"<indicator_id>_peers"``.
    decimals : int
        Decimal places of values in tooltips and labels.

    Returns
    -------
    Chart
        One dataset, ``values`` (:func:`calculate_peer_data`), shared by every
        page of the level with the key ``{indicator}.{level}.{period_type}.{YYYY-MM}.values``;
        parameter ``org_code``.
    """
    check_text(indicator_title, "indicator title")
    check_text(unit, "unit")
    check_direction(improvement_direction, allow_none=True)
    rows = level_rows(table, org_level, period, period_type)
    check_text(org_code, "organisation code")
    data = rank_points(rows)
    indicator_id = _indicator_id_for(table, org_level, period_type)
    chart_id = chart_id or make_chart_id(indicator_id, "peers")
    stamp = to_timestamp(period)
    period_words = format_period(stamp, period_type)
    levels = level_name(org_level, plural=True)
    title = f"{indicator_title}: {levels}, {period_words}"
    if data.empty:
        return empty_chart(chart_id, title, f"no {levels} have a value for {period_words}", data)

    has_intervals = bool(data[list(INTERVAL_COLUMNS)].notna().all(axis=1).any())
    dataset = ChartData("values", data, f"every {level_name(org_level)}'s value",
                        values_key(indicator_id, org_level, period_type, stamp, "values"))
    spec = ranked_spec(unit, int(decimals), level_name(org_level).capitalize(), has_intervals,
                       period_type, "values", True)
    caption = _peer_caption(levels, has_intervals, improvement_direction)
    excluded = int(rows["value"].isna().sum())
    alt_text = _peer_alt_text(data, org_code, levels, indicator_title, unit, period_words, excluded)
    return Chart(chart_id, title, caption, alt_text, [dataset], spec,
                 params={"org_code": org_code, "labelled_codes": []})


# --- specification (shared with the practice spread chart) ---------------------------------
@lru_cache(maxsize=256)
def ranked_spec(unit: str, decimals: int, noun: str, has_intervals: bool, period_type: str,
                data_name: str, highlight: bool) -> dict:
    """The ranked dot plot's Vega-Lite template (cached: nothing here depends on an organisation).

    ``highlight`` draws the row whose ``org_code`` equals the ``org_code``
    parameter as a labelled diamond with a blue interval; rows whose codes are
    in the ``labelled_codes`` parameter are labelled with their code.
    """
    fmt = value_format(decimals)
    y_title = unit_axis_label(unit)
    x = alt.X("rank:Q", title=RANK_AXIS_TITLE,
              scale=alt.Scale(zero=False, nice=False, padding=12),
              axis=alt.Axis(format="d", tickMinStep=1))
    y_scale = alt.Scale(zero=False, nice=True)
    y = alt.Y("value:Q", title=y_title, scale=y_scale)
    tooltip = point_tooltip(unit, decimals, noun, has_intervals, False, period_type=period_type)
    tooltip.insert(3, alt.Tooltip("rank:Q", title="Rank from the lowest", format="d"))

    base = alt.Chart(alt.NamedData(name=data_name))
    with_interval = base.transform_filter("isValid(datum.lower_95) && isValid(datum.upper_95)")
    interval_y = alt.Y("lower_95:Q", title=y_title, scale=y_scale)
    layers = []
    if has_intervals:
        layers.append(with_interval.mark_rule(color=NHS_MID_GREY, strokeWidth=1.2, opacity=0.6).encode(
            x=x, y=interval_y, y2="upper_95:Q", tooltip=tooltip))
    layers.append(base.mark_point(shape="circle", filled=True, size=40, color=NHS_MID_GREY,
                                  opacity=0.9).encode(x=x, y=y, tooltip=tooltip))

    england = base.transform_aggregate(england_value="max(england_value)").transform_filter(
        "isValid(datum.england_value)")
    england_y = alt.Y("england_value:Q", title=y_title, scale=y_scale)
    england_tooltip = [alt.Tooltip("england_value:Q", title=f"England ({unit})", format=fmt)]
    layers.append(england.mark_rule(color=NHS_DARK_GREY, strokeDash=ENGLAND_DASHES, strokeWidth=1.5)
                  .encode(y=england_y, tooltip=england_tooltip))
    layers.append(england.transform_calculate(
        label_text="'England: ' + " + value_label_expr(decimals, unit, None, "england_value")
    ).mark_text(align="left", baseline="bottom", dx=4, dy=-4, color=NHS_DARK_GREY, fontSize=12)
        .encode(x=alt.value(0), y=england_y, text="label_text:N"))

    params = [alt.param(name="labelled_codes", value=[])]
    top = "isValid(datum.upper_95) ? datum.upper_95 : datum.value"
    extremes = base.transform_filter("indexof(labelled_codes, datum.org_code) >= 0")
    layers += label_layers(extremes, "rank", top, "datum.org_code", NHS_DARK_GREY,
                           size=12, weight="normal", dy=-6)
    if highlight:
        params.append(alt.param(name="org_code", value=""))
        chosen = base.transform_filter("datum.org_code === org_code")
        if has_intervals:
            layers.append(chosen.transform_filter("isValid(datum.lower_95) && isValid(datum.upper_95)")
                          .mark_rule(color=NHS_BLUE, strokeWidth=2.5)
                          .encode(x=x, y=interval_y, y2="upper_95:Q", tooltip=tooltip))
        layers.append(chosen.mark_point(shape=HIGHLIGHT_SHAPE, size=220, filled=True, fill=NHS_BLUE,
                                        stroke=NHS_WHITE, strokeWidth=1.5, opacity=1)
                      .encode(x=x, y=y, tooltip=tooltip))
        layers += label_layers(
            chosen, "rank", top,
            value_label_expr(decimals, unit), NHS_BLUE, dy=-8)
    chart = alt.layer(*layers).add_params(*params).properties(width="container", height=CHART_HEIGHT)
    return spec_from_altair(chart)


# --- words ---------------------------------------------------------------------------------
def _peer_caption(levels: str, has_intervals: bool, improvement_direction: str | None) -> str:
    parts = [
        f"Each grey dot is one of the {levels}, ordered from the lowest value on the left "
        "to the highest on the right; hover over a dot for its name and figures. The selected "
        "organisation is the blue diamond, labelled with its name and value, and the dash-dot "
        "line is England.",
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
    lowest, highest = data.iloc[0], data.iloc[-1]
    sentences = [
        f"Ranked dot plot of {indicator_title} for {len(data)} {levels}, {period_words}.",
        f"Values range from {format_value(lowest['value'], unit)} ({lowest['org_code']}) to "
        f"{format_value(highest['value'], unit)} ({highest['org_code']}).",
    ]
    england = data["england_value"].dropna()
    if len(england):
        sentences.append(f"England is {format_value(england.iloc[0], unit)}.")
    selected = data.loc[data["org_code"] == org_code]
    if selected.empty:
        sentences.append(f"{org_code} has no value for this period, so it is not highlighted.")
    else:
        row = selected.iloc[0]
        sentence = (
            f"{shorten(row['org_name'], 60)} ({org_code}) has "
            f"{format_value(row['value'], unit)}, ranked {int(row['rank'])} of {len(data)} "
            "from the lowest"
        )
        if pd.notna(row["lower_95"]) and pd.notna(row["upper_95"]) and len(england):
            lower, upper, benchmark = row["lower_95"], row["upper_95"], england.iloc[0]
            sentence += (
                f", with a 95% interval of {format_value(lower, unit)} to "
                f"{format_value(upper, unit)}, "
                + ("above England" if lower > benchmark
                   else "below England" if upper < benchmark
                   else "which includes England's value")
            )
        sentences.append(sentence + ".")
    if excluded:
        sentences.append(f"Not shown for want of a value: {excluded}.")
    return " ".join(sentences)


def _indicator_id_for(table: pd.DataFrame, org_level: str, period_type: str) -> str | None:
    if "indicator_id" not in table.columns:
        return None
    ids = table.loc[
        (table["org_level"] == org_level) & (table["period_type"] == period_type), "indicator_id"
    ].dropna()
    return str(ids.iloc[0]) if len(ids) else None
