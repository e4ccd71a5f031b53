"""The spread of an organisation's member practices for one period.

With funnel limits (from :mod:`moopt.stats`) the practices are drawn as a funnel
plot: value against denominator with England's value and the national practice
funnel's limit lines, drawn over the range of the members' sizes. Without
limits they are drawn as a ranked dot plot against England's value. In both,
the three practices furthest from England are labelled with their codes.

The member practices are this page's own dataset; the national limit lines are
the same for every page and shared under the key of the practice level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from moopt.charts.base import (
    Chart,
    ChartData,
    count_words,
    check_direction,
    check_level,
    check_period_type,
    check_text,
    direction_sentence,
    empty_chart,
    format_number,
    format_period,
    format_value,
    level_name,
    make_chart_id,
    require_columns,
    single_value,
    to_timestamp,
)
from moopt.charts.funnel import (
    ABOVE_95,
    ABOVE_99_8,
    BELOW_95,
    BELOW_99_8,
    clean_limits,
    funnel_caption,
    funnel_line_frame,
    funnel_spec,
    furthest_from_centre,
    organisation_values,
    values_key,
)
from moopt.charts.peers import ranked_spec
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
    decimals: int = 2,
) -> Chart:
    """The member practices of one organisation for one period.

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
    period_type : {"rolling_12m", "month", "quarter"}
        Kind of period.
    indicator_title, unit : str
        Indicator name and the unit of its value.
    limits : pandas.DataFrame, optional
        The national practice funnel's limit lines (denominator, lower_95,
        upper_95, lower_99_8, upper_99_8). With them the chart is a funnel
        plot; without (or with none), a ranked dot plot.
    denominator_label : str
        Axis label for the denominator with its unit (funnel plot only).
    improvement_direction : {"increase", "decrease", "neutral"}, optional
        Stated in the caption when given.
    org_name : str, optional
        Name of the parent organisation for the title; defaults to its code.
    chart_id : str, optional
        By default ``"<indicator_id>_practices"``.
    decimals : int
        Decimal places of values in tooltips and labels.

    Returns
    -------
    Chart
        Dataset ``practices`` (the members with a value, as
        :func:`moopt.charts.funnel.organisation_values`) and, for a funnel
        plot, ``practice_funnel_lines`` (shared); parameter ``labelled_codes``
        holds the three practices furthest from England.
    """
    check_text(indicator_title, "indicator title")
    check_text(unit, "unit")
    check_text(denominator_label, "denominator label")
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
    stamp = to_timestamp(period)
    period_words = format_period(stamp, period_type)
    parent_name = org_name or org_code
    title = f"{indicator_title}: practices in {parent_name}, {period_words}"
    practices_words = level_name("practice", plural=True)
    limits = None if limits is None else clean_limits(limits)
    funnel = limits is not None and not limits.empty and np.isfinite(england_value)

    data = organisation_values(rows, limits if funnel else None)
    drawn = data.loc[data["denominator"] > 0] if funnel else data
    if drawn.empty:
        return empty_chart(
            chart_id, title,
            f"no {practices_words} in {parent_name} ({level_name(org_level)}) have a value for "
            f"{period_words}",
            data,
        )
    has_intervals = bool(data[["lower_95", "upper_95"]].notna().all(axis=1).any())
    practices = ChartData("practices", data, f"the practices in {parent_name}")
    if funnel:
        lines = ChartData("practice_funnel_lines", funnel_line_frame(limits, england_value),
                          "the national practice funnel's lines",
                          values_key(indicator_id, "practice", period_type, stamp, "funnel_lines"))
        labelled = furthest_from_centre(drawn, england_value, LABELLED_PRACTICES, limits)
        spec = funnel_spec(unit, int(decimals), denominator_label, "England", "Practice",
                           has_intervals, period_type, "practices", "practice_funnel_lines",
                           False, True)
        datasets = [practices, lines]
        caption = funnel_caption(practices_words, "England", improvement_direction) + (
            " The limits are those of every practice in England, drawn over the range of these "
            "practices' sizes; the three practices furthest from England are labelled with "
            "their codes.")
    else:
        labelled = furthest_from_centre(drawn, england_value, LABELLED_PRACTICES)
        spec = ranked_spec(unit, int(decimals), "Practice", has_intervals, period_type,
                           "practices", False)
        datasets = [practices]
        caption = " ".join(part for part in (
            f"Each grey dot is one of the {practices_words} in {parent_name}, ordered from the "
            "lowest value on the left to the highest on the right; the dash-dot line is "
            "England. The three practices furthest from England are labelled with their codes.",
            "Vertical lines are 95% confidence intervals." if has_intervals else "",
            direction_sentence(improvement_direction)) if part)
    alt_text = _practice_alt_text(
        drawn, labelled, england_value, parent_name, org_code, indicator_title, unit,
        period_words, int(rows["value"].isna().sum()) + len(data) - len(drawn), funnel=funnel,
    )
    return Chart(chart_id, title, caption, alt_text, datasets, spec,
                 params={"labelled_codes": list(labelled)})


def _practice_alt_text(
    points: pd.DataFrame,
    labelled: list[str],
    england_value: float,
    parent_name: str,
    org_code: str,
    indicator_title: str,
    unit: str,
    period_words: str,
    not_shown: int,
    funnel: bool,
) -> str:
    kind = "Funnel plot" if funnel else "Ranked dot plot"
    lowest = points.loc[points["value"].idxmin()]
    highest = points.loc[points["value"].idxmax()]
    median = points["value"].median()
    sentences = [
        f"{kind} of {indicator_title} for {count_words(len(points), 'GP practice')} in "
        f"{parent_name} ({org_code}), {period_words}.",
        f"Practice values range from {format_value(lowest['value'], unit)} "
        f"({lowest['org_code']}) to {format_value(highest['value'], unit)} "
        f"({highest['org_code']}), with a median of {format_value(median, unit)}.",
    ]
    if np.isfinite(england_value):
        sentences.append(f"England is {format_value(england_value, unit)}.")
    if funnel:
        counts = points["position"].value_counts()
        beyond_99_8 = int(counts.reindex([ABOVE_99_8, BELOW_99_8]).fillna(0).sum())
        beyond_95 = beyond_99_8 + int(counts.reindex([ABOVE_95, BELOW_95]).fillna(0).sum())
        sentences.append(
            f"Outside the 95% limits: {count_words(beyond_95, 'practice')}; outside the "
            f"99.8% limits: {count_words(beyond_99_8, 'practice')}."
        )
    chosen = points.set_index("org_code").loc[labelled] if labelled else points.iloc[0:0]
    if len(chosen):
        described = ", ".join(
            f"{code} ({format_value(row.value, unit)}"
            + (f", denominator {format_number(row.denominator)}" if funnel else "")
            + ")"
            for code, row in chosen.iterrows()
        )
        sentences.append(f"Furthest from England: {described}.")
    if not_shown:
        sentences.append(
            f"Not shown for want of a value{' or a denominator' if funnel else ''}: "
            f"{count_words(not_shown, 'practice')}."
        )
    return " ".join(sentences)
