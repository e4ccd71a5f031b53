"""The spread of an organisation's member practices for one period.

With funnel limits (from :mod:`moopt.stats`) the practices are drawn as a funnel
plot: value against denominator with England's value and the limit lines.
Without limits they are drawn as a ranked dot plot against England's value. In
both, the three practices furthest from England are labelled with their codes.
"""

from __future__ import annotations

import pandas as pd

from moopt.charts.base import (
    Chart,
    count_words,
    check_direction,
    check_level,
    check_period_type,
    check_text,
    direction_sentence,
    empty_chart,
    finish_axes,
    format_number,
    format_period,
    format_value,
    level_name,
    make_chart_id,
    new_figure,
    require_columns,
    single_value,
    styled,
    to_timestamp,
    unit_axis_label,
)
from moopt.charts.funnel import (
    ABOVE_95,
    ABOVE_99_8,
    BELOW_95,
    BELOW_99_8,
    calculate_funnel_data,
    draw_funnel,
    funnel_caption,
)
from moopt.charts.peers import draw_ranked_dots, rank_points
from moopt.orgs import ORG_LEVEL_COLUMNS

PRACTICE_COLUMNS: tuple[str, ...] = (
    "org_level",
    "org_code",
    "org_name",
    "period",
    "period_type",
    "denominator",
    "value",
    "england_value",
)
LABELLED_PRACTICES = 3


def parent_column(org_level: str) -> str | None:
    """Column of a practice row holding its parent's code at ``org_level``.

    Returns None for ``"england"`` (every practice belongs to England).

    Raises
    ------
    ValueError
        For ``"practice"``, which has no member practices, or an unknown level.
    """
    check_level(org_level)
    if org_level == "practice":
        raise ValueError(
            "A practice has no member practices: choose an organisation level above "
            "practice (pcn, sub_icb, icb, region or england)."
        )
    if org_level == "england":
        return None
    return ORG_LEVEL_COLUMNS[org_level][0]


def select_member_practices(
    practice_table: pd.DataFrame,
    org_code: str,
    org_level: str,
    period: object,
    period_type: str,
) -> pd.DataFrame:
    """Rows of the practices that belong to ``org_code`` in the period (any value)."""
    parent = parent_column(org_level)
    required = PRACTICE_COLUMNS + ((parent,) if parent else ())
    require_columns(practice_table, required, "practice table")
    check_period_type(period_type)
    check_text(org_code, "organisation code")
    selected = (
        (practice_table["org_level"] == "practice")
        & (pd.to_datetime(practice_table["period"]) == to_timestamp(period))
        & (practice_table["period_type"] == period_type)
    )
    if parent:
        selected &= practice_table[parent] == org_code
    rows = practice_table.loc[selected]
    if "indicator_id" in rows.columns:
        single_value(rows["indicator_id"], "indicator")
    return rows


def plot_practice_spread(
    practice_table: pd.DataFrame,
    org_code: str,
    org_level: str,
    period: object,
    period_type: str,
    indicator_title: str,
    unit: str,
    *,
    limits: pd.DataFrame | None = None,
    denominator_label: str = "Denominator",
    improvement_direction: str | None = None,
    org_name: str | None = None,
    chart_id: str | None = None,
) -> Chart:
    """Draw the member practices of one organisation for one period.

    Parameters
    ----------
    practice_table : pandas.DataFrame
        Tidy indicator table rows for practices (one indicator), with
        :data:`PRACTICE_COLUMNS` and the parent code column for ``org_level``
        (e.g. ``sub_icb_code``).
    org_code, org_level : str
        The parent organisation and its level (pcn, sub_icb, icb, region, england).
    period : date-like
        Period to show (first day of its last month).
    period_type : {"rolling_12m", "month"}
        Kind of period.
    indicator_title, unit : str
        Indicator name and the unit of its value.
    limits : pandas.DataFrame, optional
        Funnel limit lines (denominator, lower_95, upper_95, lower_99_8,
        upper_99_8). With them the chart is a funnel plot; without, a ranked
        dot plot.
    denominator_label : str
        Axis label for the denominator with its unit (funnel plot only).
    improvement_direction : {"increase", "decrease", "neutral"}, optional
        Stated in the caption when given.
    org_name : str, optional
        Name of the parent organisation for the title; defaults to its code.
    chart_id : str, optional
        By default ``"<indicator_id>_practices"``.

    Returns
    -------
    Chart
        Funnel: ``data`` as :func:`moopt.charts.funnel.calculate_funnel_data`;
        dot plot: as :func:`moopt.charts.peers.rank_points`; plus ``unit``.
        The three practices furthest from England have ``is_labelled`` true.
    """
    check_text(indicator_title, "indicator title")
    check_text(unit, "unit")
    check_direction(improvement_direction, allow_none=True)
    rows = select_member_practices(practice_table, org_code, org_level, period, period_type)
    england_value = single_value(rows["england_value"], "England value")
    england_value = float(england_value) if pd.notna(england_value) else float("nan")
    indicator_id = (
        str(rows["indicator_id"].dropna().iloc[0])
        if "indicator_id" in rows.columns and rows["indicator_id"].notna().any()
        else None
    )
    chart_id = chart_id or make_chart_id(indicator_id, "practices")
    period_words = format_period(to_timestamp(period), period_type)
    parent_name = org_name or org_code
    title = f"{indicator_title}: practices in {parent_name}, {period_words}"
    practices = level_name("practice", plural=True)
    without_value = int(rows["value"].isna().sum())

    if limits is not None:
        data = calculate_funnel_data(
            rows, limits, england_value, label_extremes=LABELLED_PRACTICES
        ) if pd.notna(england_value) else _empty_funnel_frame()
    else:
        data = rank_points(rows, england_value, label_extremes=LABELLED_PRACTICES)
    data = data.assign(unit=unit)
    points = data.loc[data["series"] == "organisation"]
    if points.empty:
        return empty_chart(
            chart_id,
            title,
            f"no {practices} in {parent_name} ({level_name(org_level)}) have a value for "
            f"{period_words}",
            data,
        )

    with styled():
        figure, axes = new_figure()
        if limits is not None:
            draw_funnel(axes, data, unit, "England")
            finish_axes(axes, title, denominator_label, unit_axis_label(unit))
        else:
            draw_ranked_dots(axes, data, unit, practices, has_intervals=False)
            finish_axes(
                axes, title, "Practices ranked from lowest to highest value (rank)",
                unit_axis_label(unit),
            )
    if limits is not None:
        caption = funnel_caption(practices, "England", improvement_direction)
    else:
        caption = (
            f"Each grey dot is one of the {practices} in {parent_name}, ordered from the "
            "lowest value on the left to the highest on the right; the dash-dot line is "
            "England. The three practices furthest from England are labelled with their "
            "codes. " + direction_sentence(improvement_direction)
        ).strip()
    alt_text = _practice_alt_text(
        points, data, parent_name, org_code, indicator_title, unit, period_words,
        without_value, funnel=limits is not None,
    )
    return Chart(chart_id, title, caption, alt_text, data, figure)


def _practice_alt_text(
    points: pd.DataFrame,
    data: pd.DataFrame,
    parent_name: str,
    org_code: str,
    indicator_title: str,
    unit: str,
    period_words: str,
    without_value: int,
    funnel: bool,
) -> str:
    kind = "Funnel plot" if funnel else "Ranked dot plot"
    lowest = points.loc[points["value"].idxmin()]
    highest = points.loc[points["value"].idxmax()]
    median = points["value"].median()
    sentences = [
        f"{kind} of {indicator_title} for {count_words(len(points), 'GP practice')} in "
        f"{parent_name} "
        f"({org_code}), {period_words}.",
        f"Practice values range from {format_value(lowest['value'], unit)} "
        f"({lowest['org_code']}) to {format_value(highest['value'], unit)} "
        f"({highest['org_code']}), with a median of {format_value(median, unit)}.",
    ]
    england = data.loc[data["series"].isin(["england", "centre"]), "value"]
    if len(england):
        sentences.append(f"England is {format_value(england.iloc[0], unit)}.")
    if funnel:
        counts = points["position"].value_counts()
        beyond_99_8 = int(counts.reindex([ABOVE_99_8, BELOW_99_8]).fillna(0).sum())
        beyond_95 = beyond_99_8 + int(counts.reindex([ABOVE_95, BELOW_95]).fillna(0).sum())
        sentences.append(
            f"Outside the 95% limits: {count_words(beyond_95, 'practice')}; outside the "
            f"99.8% limits: {count_words(beyond_99_8, 'practice')}."
        )
    labelled = points.loc[points["is_labelled"]]
    if len(labelled):
        described = ", ".join(
            f"{row.org_code} ({format_value(row.value, unit)}"
            + (f", denominator {format_number(row.denominator)}" if funnel else "")
            + ")"
            for row in labelled.itertuples(index=False)
        )
        sentences.append(f"Furthest from England: {described}.")
    if without_value:
        sentences.append(
            f"Not shown for want of a value: {count_words(without_value, 'practice')}."
        )
    return " ".join(sentences)


def _empty_funnel_frame() -> pd.DataFrame:
    columns = ["series", "org_code", "org_name", "denominator", "value", "position", "is_labelled"]
    return pd.DataFrame({column: pd.Series(dtype="object") for column in columns})
