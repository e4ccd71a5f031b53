"""Compare groups within an organisation and England: values with confidence intervals.

Used for the transfer-of-care comparison (30-day readmission for referred
patients whose community pharmacy follow-up was completed, or not), but
written for any breakdown of a proportion. Each group is a column; the areas
(the organisation first, then England) sit side by side in it, told apart by
marker shape, colour and a written value.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from moopt.charts.base import (
    CHART_HEIGHT,
    NHS_BLUE,
    NHS_DARK_GREY,
    Chart,
    ChartData,
    check_chart_id,
    check_text,
    empty_chart,
    require_columns,
    spec_from_altair,
    unit_axis_label,
)

GROUP_COLUMNS = ("area", "group", "value", "lower_95", "upper_95", "numerator", "denominator")
# Kept when present, so a download says what, where and when.
IDENTIFYING_COLUMNS = ("indicator_id", "org_level", "org_code", "org_name", "period", "period_type")
# Areas in order of first appearance: the organisation, then England.
AREA_SHAPES = ("circle", "square")
AREA_COLOURS = (NHS_BLUE, NHS_DARK_GREY)
DATASET = "groups"


def calculate_group_data(table: pd.DataFrame) -> pd.DataFrame:
    """The rows drawn: identifying columns when present, then :data:`GROUP_COLUMNS`.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per area and group; areas and groups are drawn in the order they
        first appear.
    """
    require_columns(table, GROUP_COLUMNS, "group comparison table")
    identifying = [c for c in IDENTIFYING_COLUMNS if c in table.columns]
    data = table.loc[:, [*identifying, *GROUP_COLUMNS]].reset_index(drop=True)
    repeated = data.duplicated(["area", "group"])
    if repeated.any():
        first = data.loc[repeated].iloc[0]
        raise ValueError(
            f"The group comparison table has {int(repeated.sum())} repeated area and group "
            f"row(s), the first {first['area']!r} / {first['group']!r} (row {first.name}).")
    for column in ("value", "lower_95", "upper_95", "numerator", "denominator"):
        data[column] = data[column].astype("float64")
    return data


def plot_group_comparison(table: pd.DataFrame, *, title: str, unit: str, group_label: str,
                          chart_id: str, decimals: int = 1) -> Chart:
    """Dots with 95% intervals for each group, one marker shape per area (organisation, England).

    Parameters
    ----------
    table : pandas.DataFrame
        One row per area and group with :data:`GROUP_COLUMNS` (and optionally
        :data:`IDENTIFYING_COLUMNS`); areas are drawn in the order they first
        appear.
    title, unit, group_label, chart_id : str
        Chart title, value unit (axis label), what the groups are, and the chart id.
    decimals : int
        Decimal places of the values written beside the markers and in tooltips.

    Returns
    -------
    Chart
        One dataset, ``groups`` (:func:`calculate_group_data`): this page's rows only.
    """
    check_text(title, "title")
    check_text(unit, "unit")
    check_text(group_label, "group label")
    check_chart_id(chart_id)
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 6:
        raise ValueError(f"decimals must be a whole number from 0 to 6, not {decimals!r}.")
    data = calculate_group_data(table)
    if data["value"].notna().sum() == 0:
        return empty_chart(chart_id, title, "no group has a value in this period", data)
    areas = list(dict.fromkeys(data["area"]))
    spec = _group_spec(unit, group_label, decimals, "period" in data.columns)
    number = f"{{:,.{decimals}f}}"
    parts = []
    for area in areas:
        rows = data[data["area"] == area]
        parts.append(f"{area}: " + ", ".join(
            f"{str(g).replace('_', ' ')} {number.format(v)} (95% interval {number.format(lo)} to "
            f"{number.format(hi)}, {_count(n)} of {_count(d)})"
            for g, v, lo, hi, n, d in zip(rows["group"], rows["value"], rows["lower_95"],
                                          rows["upper_95"], rows["numerator"], rows["denominator"],
                                          strict=True) if pd.notna(v)))
    shapes = " and ".join(f"{shape}s {area}" for shape, area in
                          zip(("circle", "square"), areas[:2], strict=False))
    caption = (f"Each marker is a group's value with its 95% confidence interval (Wilson) as a "
               f"line; {shapes}, with the value written beside each marker. Intervals that do not "
               "overlap suggest a real difference, but the groups may differ in other ways than "
               "the one compared.")
    return Chart(chart_id=chart_id, title=title, caption=caption,
                 alt_text=f"{title}. " + "; ".join(parts) + ".",
                 datasets=[ChartData(DATASET, data, "the groups' values and intervals")], spec=spec)


def _count(number: float) -> str:
    return "no count" if pd.isna(number) else f"{int(number):,}"


@lru_cache(maxsize=64)
def _group_spec(unit: str, group_label: str, decimals: int, has_period: bool) -> dict:
    """The template for one unit, group label and precision (no area names in it)."""
    import altair as alt

    value_format = f",.{decimals}f"
    group_axis = alt.X("_group:N", sort=None, title=group_label,
                       axis=alt.Axis(labelAngle=0, labelLimit=0, labelExpr=(
                           # long group names go one word a line rather than being cut
                           "length(datum.label) > 14 ? split(datum.label, ' ') : datum.label")))
    # sort=None keeps the areas in the order they first appear: the organisation, then England.
    area_offset = alt.XOffset("area:N", sort=None)
    area_colour = alt.Color("area:N", sort=None, title=None,
                            scale=alt.Scale(range=list(AREA_COLOURS)),
                            legend=alt.Legend(title="Area", columns=1))
    area_shape = alt.Shape("area:N", sort=None, title=None,
                           scale=alt.Scale(range=list(AREA_SHAPES)),
                           legend=alt.Legend(title="Area", columns=1))
    y_value = alt.Y("value:Q", title=unit_axis_label(unit), scale=alt.Scale(zero=False))
    tooltip = [
        alt.Tooltip("area:N", title="Area"),
        alt.Tooltip("_group:N", title=group_label),
        *([alt.Tooltip("period:T", title="Period", timeUnit="utcyearmonth", format="%b %Y")]
          if has_period else []),
        alt.Tooltip("value:Q", title=f"Value ({unit})", format=value_format),
        alt.Tooltip("lower_95:Q", title="95% interval from", format=value_format),
        alt.Tooltip("upper_95:Q", title="95% interval to", format=value_format),
        alt.Tooltip("numerator:Q", title="Numerator", format=",.0f"),
        alt.Tooltip("denominator:Q", title="Denominator", format=",.0f"),
    ]
    base = alt.Chart()
    # Only the markers use the colour and shape scales, so the two make one key; the interval
    # lines and value labels take the same colours from the area's rank (the scales' order).
    by_rank = alt.condition("datum._area_rank === 1", alt.value(AREA_COLOURS[0]),
                            alt.value(AREA_COLOURS[1]))
    interval = base.mark_rule(strokeWidth=2).encode(
        x=group_axis, xOffset=area_offset,
        y=alt.Y("lower_95:Q", title=unit_axis_label(unit), scale=alt.Scale(zero=False)),
        y2="upper_95:Q", tooltip=tooltip, color=by_rank,
    )
    marker = base.mark_point(filled=True, size=90, opacity=1).encode(
        x=group_axis, xOffset=area_offset, y=y_value, color=area_colour, shape=area_shape,
        tooltip=tooltip,
    )
    label = base.mark_text(align="left", dx=9, baseline="middle").encode(
        x=group_axis, xOffset=area_offset, y=y_value, color=by_rank,
        text=alt.Text("value:Q", format=value_format), tooltip=tooltip,
    )
    chart = alt.layer(
        interval, marker, label, data=alt.NamedData(name=DATASET),
        transform=[{"filter": "isValid(datum.value) && isFinite(datum.value)"},
                   {"calculate": "replace(datum.group + '', regexp('_', 'g'), ' ')",
                    "as": "_group"},
                   # The areas' order of first appearance (1 = the organisation), as the scales'
                   # sort=None uses it.
                   {"window": [{"op": "row_number", "as": "_row"}]},
                   {"joinaggregate": [{"op": "min", "field": "_row", "as": "_area_first"}],
                    "groupby": ["area"]},
                   {"window": [{"op": "dense_rank", "as": "_area_rank"}],
                    "sort": [{"field": "_area_first"}]}],
    ).properties(width="container", height=CHART_HEIGHT)
    return spec_from_altair(chart)
