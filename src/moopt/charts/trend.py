"""Trend of one organisation against the national deciles (OpenPrescribing's decile chart).

The grammar follows OpenPrescribing in NHS colours: the organisation is an NHS-blue
solid line with dots and a direct label at its latest point; the national deciles
are grey dotted lines; the national median is a black long-dashed line; the
England value (the ratio of national sums, not the median) is a dark dash-dot
line; a national reference, when the indicator has one, is a purple rule with its
label. The line patterns stay distinct without colour, and the legend shows them.

The chart reads two datasets: the organisation's own series (``organisation``,
on this page only) and the national series (``national``: deciles, median and
England), which is the same on every page of the level and so is stored once per
indicator, level, period type and latest period (its ``shared_key`` ends in
``.deciles``). The specification is a template cached per unit, decimals, period
type and which national lines exist; the organisation's name in the legend comes
from the ``org_label`` parameter.
"""

from __future__ import annotations

import json
from functools import lru_cache

import altair as alt
import numpy as np
import pandas as pd

from moopt.charts.base import (
    CHART_HEIGHT,
    NHS_BLACK,
    NHS_BLUE,
    NHS_DARK_GREY,
    NHS_MID_GREY,
    NHS_PURPLE,
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
    ordinal,
    require_columns,
    shorten,
    single_value,
    spec_from_altair,
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

# Vega-Lite stroke dash patterns (pixels on, off, ...); each one distinct in greyscale.
SOLID = [1, 0]
DECILE_DASHES = [1, 3]
MEDIAN_DASHES = [8, 4]
ENGLAND_DASHES = [6, 2, 1, 2]
REFERENCE_DASHES = [3, 2]  # short, dense dashes in purple: unlike the median's long black dashes

# Legend entries and their look. The organisation's entry is renamed on each page by the
# "org_label" parameter, so that the specification stays the same for every organisation.
ORGANISATION_ENTRY = "Organisation"
LINE_STYLES: dict[str, tuple[str, list[int]]] = {
    ORGANISATION_ENTRY: (NHS_BLUE, SOLID),
    "National decile": (NHS_MID_GREY, DECILE_DASHES),
    "National median": (NHS_BLACK, MEDIAN_DASHES),
    "England": (NHS_DARK_GREY, ENGLAND_DASHES),
    "National reference": (NHS_PURPLE, REFERENCE_DASHES),
}

ORGANISATION_DATASET = "organisation"
NATIONAL_DATASET = "national"


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
    rows = _selection(table, org_code, org_level, period_type)
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
    has_values = long["value"].notna().groupby(long["series"], sort=False).transform("any")
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
    decimals: int = 1,
    decile_level: str | None = None,
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
        rule with the label, and included in the organisation's dataset as the series
        ``"reference"`` (one row per period, so the download shows it beside the values).
    decimals : int, default 1
        Decimal places of values in tooltips and the direct label.
    decile_level : str, optional
        The level whose deciles the ``decile_*`` columns hold, when it is not
        ``org_level`` (England's page compares England with the deciles of another
        level). It names the level in the caption and in the national dataset's key.

    Returns
    -------
    Chart
        Two datasets: ``organisation`` (the organisation's series, plus the
        reference rows; the chart's main data) and ``national`` (deciles, median
        and England, shared by every page of the level). Together their rows are
        those of :func:`calculate_trend_data` (plus the reference), with the
        identifying columns ``indicator_id``, ``org_level``, ``period_type`` and
        ``unit``, and ``org_code``/``org_name`` on the organisation's rows.

    Notes
    -----
    The deciles are those of the organisation's own level (the ``decile_*``
    columns of its rows), so a sub-ICB location is compared with sub-ICB
    locations. An empty selection gives a "No data for this selection" chart.
    """
    check_text(indicator_title, "indicator title")
    check_text(unit, "unit")
    check_direction(improvement_direction)
    _check_decimals(decimals)
    decile_level = check_level(decile_level) if decile_level is not None else org_level
    data = calculate_trend_data(table, org_code, org_level, period_type)
    if reference_line is not None:
        data = _with_reference(data, reference_line)
    indicator_id = _indicator_id(_selection(table, org_code, org_level, period_type))
    chart_id = chart_id or make_chart_id(indicator_id, "trend")
    org_name = _org_name(table, org_code, org_level)
    title = f"{indicator_title}: {org_name}"
    if (data["series"] == "organisation").sum() == 0:
        return empty_chart(
            chart_id,
            title,
            f"there are no {_period_words(period_type)} values for {org_name} ({org_code})",
            data.assign(unit=unit),
        )

    organisation, national = _split_datasets(
        data, indicator_id, org_code, org_name, org_level, decile_level, period_type, unit)
    national_series = set(national["series"])
    spec = _trend_spec(
        unit,
        int(decimals),
        period_type,
        has_deciles=any(series.startswith("decile_") for series in national_series),
        has_england="england" in national_series,
        has_reference=reference_line is not None,
    )
    last_period = data["period"].max()
    shared_key = (  # the same key as the national series of every other page of the level
        f"{make_chart_id(indicator_id)}.{decile_level}.{period_type}.{last_period:%Y-%m}.deciles"
        if indicator_id is not None
        else None  # rows that cannot be named by their indicator travel with the page
    )
    levels = level_name(decile_level, plural=True)
    caption = _trend_caption(data, org_name, levels, improvement_direction, period_type)
    alt_text = _trend_alt_text(data, org_name, org_code, levels, indicator_title, unit, period_type)
    return Chart(
        chart_id,
        title,
        caption,
        alt_text,
        datasets=[
            ChartData(ORGANISATION_DATASET, organisation, f"{shorten(org_name, 60)}'s values"),
            ChartData(NATIONAL_DATASET, national, "national deciles, median and England",
                      shared_key=shared_key),
        ],
        spec=spec,
        params={"org_code": org_code, "org_label": f"{org_code}: {org_name}"},
    )


def _selection(table: pd.DataFrame, org_code: str, org_level: str,
               period_type: str) -> pd.DataFrame:
    return table.loc[
        (table["org_level"] == org_level)
        & (table["org_code"] == org_code)
        & (table["period_type"] == period_type)
    ]


def _check_decimals(decimals: int) -> None:
    whole = isinstance(decimals, (int, np.integer)) and not isinstance(decimals, bool)
    if not whole or not 0 <= decimals <= 6:
        raise ValueError(
            f"The number of decimals must be a whole number from 0 to 6, not {decimals!r}.")


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


def _split_datasets(
    data: pd.DataFrame,
    indicator_id: str | None,
    org_code: str,
    org_name: str,
    org_level: str,
    decile_level: str,
    period_type: str,
    unit: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The organisation's rows (with the reference) and the national rows, with identifying columns.

    The national rows carry nothing about the organisation, so every page of the
    level gets the same rows.
    """
    is_own = data["series"].isin(["organisation", "reference"])
    own_rows = data["series"] == "organisation"  # reference rows are not the org's values
    organisation = data.loc[is_own].assign(
        indicator_id=indicator_id,
        org_level=org_level,
        org_code=np.where(own_rows[is_own], org_code, None),
        org_name=np.where(own_rows[is_own], org_name, None),
        period_type=period_type,
        unit=unit,
    )
    organisation = organisation[[
        "indicator_id", "org_level", "org_code", "org_name", "period", "period_type",
        "series", "series_label", "value", "unit"]].reset_index(drop=True)
    national = data.loc[~is_own].assign(
        indicator_id=indicator_id, org_level=decile_level, period_type=period_type, unit=unit)
    national = national[[
        "indicator_id", "org_level", "period", "period_type", "series", "series_label",
        "value", "unit"]].reset_index(drop=True)
    return organisation, national


# --- specification --------------------------------------------------------------------------
def _js(text: str) -> str:
    """``text`` as a string literal in a Vega expression."""
    return json.dumps(text)


@lru_cache(maxsize=512)
def _trend_spec(
    unit: str,
    decimals: int,
    period_type: str,
    has_deciles: bool,
    has_england: bool,
    has_reference: bool,
) -> dict:
    """The trend chart's Vega-Lite template; nothing in it depends on the organisation."""
    number = f",.{decimals}f"
    period_title = "12 months ending" if period_type == "rolling_12m" else "Month"
    x_title = "12 months ending (month)" if period_type == "rolling_12m" else "Month"
    value_title = unit_axis_label(unit)
    percent = unit.strip() in ("%", "per cent", "percent")

    entries = [ORGANISATION_ENTRY]
    entries += ["National decile", "National median"] if has_deciles else []
    entries += ["England"] if has_england else []
    entries += ["National reference"] if has_reference else []
    legend = alt.Legend(
        title=None,
        symbolType="stroke",
        # Two columns where they fit, one on a phone; long names are cut, but the code leads.
        columns=alt.ExprRef(expr="width < 420 ? 1 : 2"),
        labelLimit=180,
        labelExpr=f"datum.label === {_js(ORGANISATION_ENTRY)} ? org_label : datum.label",
    )
    colour = alt.Color("line:N", legend=legend, scale=alt.Scale(
        domain=entries, range=[LINE_STYLES[entry][0] for entry in entries]))
    dashes = alt.StrokeDash("line:N", legend=legend, scale=alt.Scale(
        domain=entries, range=[LINE_STYLES[entry][1] for entry in entries]))
    x = alt.X("period:T", timeUnit="utcyearmonth", title=x_title,
              axis=alt.Axis(format="%b %Y", labelLimit=120))
    y = alt.Y("value:Q", title=value_title, scale=alt.Scale(zero=False))
    period_tip = alt.Tooltip("period:T", timeUnit="utcyearmonth", format="%b %Y",
                             title=period_title)
    value_tip = alt.Tooltip("value:Q", format=number, title=value_title)

    national = alt.Chart(alt.NamedData(name=NATIONAL_DATASET)).transform_calculate(
        line="datum.series === 'decile_50' ? 'National median' : "
             "datum.series === 'england' ? 'England' : 'National decile'")
    national_tips = [alt.Tooltip("series_label:N", title="Line"), period_tip, value_tip]
    national_lines = national.mark_line(strokeWidth=1.3).encode(
        x=x, y=y, color=colour, strokeDash=dashes, detail="series:N", tooltip=national_tips)
    # Invisible points give every vertex of the national lines its own tooltip.
    national_vertices = national.mark_point(opacity=0, size=60).encode(
        x=x, y=y, tooltip=national_tips)

    own = alt.Chart(alt.NamedData(name=ORGANISATION_DATASET))
    organisation = own.transform_filter("datum.series === 'organisation'").transform_calculate(
        line=_js(ORGANISATION_ENTRY))
    org_tips = [alt.Tooltip("org_name:N", title="Organisation"),
                alt.Tooltip("org_code:N", title="Code"), period_tip, value_tip]
    org_line = organisation.mark_line(strokeWidth=2.5, point=alt.OverlayMarkDef(
        filled=True, size=36, color=NHS_BLUE)).encode(
        x=x, y=y, color=colour, strokeDash=dashes, tooltip=org_tips)
    # Direct label at the latest point with a value, so the line needs no legend lookup.
    suffix = "%" if percent else ""
    org_label = (
        organisation.transform_filter("isValid(datum.value) && isFinite(datum.value)")
        .transform_window(recency="row_number()",
                          sort=[alt.SortField("period", order="descending")])
        .transform_filter("datum.recency === 1")
        .transform_calculate(
            label=f"datum.org_code + ' ' + format(datum.value, {_js(number)}) + {_js(suffix)}")
        .mark_text(align="left", baseline="middle", dx=8, fontWeight="bold", color=NHS_BLUE)
        .encode(x=x, y=y, text="label:N")
    )
    layers = [national_lines, national_vertices, org_line, org_label]

    if has_reference:
        reference = (
            own.transform_filter("datum.series === 'reference'")
            .transform_aggregate(value="min(value)", groupby=["series_label"])
            .transform_calculate(line=_js("National reference"))
        )
        layers.append(reference.mark_rule(strokeWidth=1.8).encode(
            y=y, color=colour, strokeDash=dashes,
            tooltip=[alt.Tooltip("series_label:N", title="National reference"), value_tip]))
        layers.append(reference.mark_text(align="left", baseline="bottom", dx=4, dy=-4,
                                          color=NHS_PURPLE).encode(
            x=alt.value(0), y=y, text="series_label:N"))

    chart = alt.layer(*layers).properties(width="container", height=CHART_HEIGHT).add_params(
        alt.param(name="org_code", value=""),
        alt.param(name="org_label", value="This organisation"))
    return spec_from_altair(chart)


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
