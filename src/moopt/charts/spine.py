"""Spine chart: one organisation across many indicators, each against England.

Each indicator takes two lines: its full name (wrapped to the chart's width,
never cut) and below it the spine. England sits on the centre line; the pale
bar runs from the lowest to the highest organisation of the level and the
darker middle part from the 25th to the 75th percentile. Each row is scaled on
its own so that England is at 0 and the widest distance from England (of the
range and the organisation) is 1. When an ``improvement_direction`` column is
present, rows whose lower values are better are mirrored so that better is
always to the right, and the row's name says which way is better. The
organisation's marker shape and colour both encode the comparison with
England, which the tooltip also gives in words with the values. Rows are
grouped under their theme when a ``theme_title`` column is given.

The specification is a template cached per level: the rows, line positions
and text are laid out by Vega from the page's dataset.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from moopt.charts.base import (
    IMPROVEMENT_DIRECTIONS,
    NHS_BLACK,
    NHS_DARK_BLUE,
    NHS_DARK_GREY,
    NHS_GREEN,
    NHS_MID_GREY,
    NHS_PURPLE,
    NHS_RED,
    NHS_WHITE,
    Chart,
    ChartData,
    check_level,
    check_text,
    empty_chart,
    format_value,
    level_name,
    make_chart_id,
    require_columns,
    spec_from_altair,
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
# Kept when present: where the rows belong, what they measure and why one was not compared.
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "theme_title", "period", "unit", "decimals", "improvement_direction", "not_compared_reason",
)
ASSESSMENTS: tuple[str, ...] = ("better", "worse", "similar", "higher", "lower")
NOT_COMPARED = "not compared"

# Shape and colour both carry the comparison (meaning never by colour alone).
ASSESSMENT_STYLE: dict[str, dict[str, str]] = {
    "better": {"shape": "circle", "fill": NHS_GREEN, "stroke": NHS_GREEN},
    "worse": {"shape": "square", "fill": NHS_RED, "stroke": NHS_RED},
    "similar": {"shape": "diamond", "fill": NHS_WHITE, "stroke": NHS_DARK_GREY},
    "higher": {"shape": "triangle-up", "fill": NHS_PURPLE, "stroke": NHS_PURPLE},
    "lower": {"shape": "triangle-down", "fill": NHS_PURPLE, "stroke": NHS_PURPLE},
    NOT_COMPARED: {"shape": "cross", "fill": NHS_MID_GREY, "stroke": NHS_MID_GREY},
}
ASSESSMENT_LEGEND: dict[str, str] = {
    "better": "Better than England",
    "worse": "Worse than England",
    "similar": "Similar to England",
    "higher": "Higher (no better direction)",
    "lower": "Lower (no better direction)",
    NOT_COMPARED: "Not compared",
}
SCALED_COLUMNS = ("minimum", "p25", "p75", "maximum", "value")

LINE_HEIGHT = 20  # pixels per text line or spine; the chart grows with the number of rows
X_EDGE = 1.08  # the scaled positions run from -1 to 1; a little room for the markers
DATASET = "spine"


def calculate_spine_data(summary: pd.DataFrame, *, org_code: str | None = None,
                         org_name: str | None = None) -> pd.DataFrame:
    """Scale each indicator's row so England is 0 and the widest distance is 1.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per indicator with :data:`SPINE_COLUMNS`; optional
        :data:`OPTIONAL_COLUMNS` (``theme_title``, ``period``, ``unit``,
        ``decimals``, ``improvement_direction``, ``not_compared_reason``) are
        kept. ``assessment`` may be missing (NaN) where the organisation was not
        compared.
    org_code, org_name : str, optional
        When given, written as the first two columns so a download says whose
        values these are.

    Returns
    -------
    pandas.DataFrame
        The rows in drawing order (grouped by ``theme_title`` in order of first
        appearance when it is given, otherwise as given): the organisation, the
        input columns, then ``scale_reversed`` (bool: the row is mirrored),
        ``scaled_minimum``, ``scaled_p25``, ``scaled_p75``, ``scaled_maximum``,
        ``scaled_value`` (the drawn positions, -1 to 1) and ``comparison_label``
        (the comparison in words).
    """
    require_columns(summary, SPINE_COLUMNS, "spine summary table")
    duplicated = summary["indicator_id"].duplicated()
    if duplicated.any():
        raise ValueError(
            "The spine summary table has an indicator more than once: "
            f"{', '.join(map(str, summary.loc[duplicated, 'indicator_id'].unique()))}.")
    optional = [c for c in OPTIONAL_COLUMNS if c in summary.columns]
    data = summary.loc[:, [*SPINE_COLUMNS, *optional]].reset_index(drop=True)
    if "theme_title" in data.columns and len(data):
        # Keep each theme's rows together (stable: order within a theme is kept).
        first_seen = {theme: i for i, theme in reversed(list(enumerate(data["theme_title"])))}
        order = data["theme_title"].map(first_seen).fillna(len(data))
        data = data.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)
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
    if org_name is not None:
        data.insert(0, "org_name", org_name)
    if org_code is not None:
        data.insert(0, "org_code", org_code)
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
        One row per indicator (:data:`SPINE_COLUMNS`, optional
        :data:`OPTIONAL_COLUMNS`), drawn top to bottom in the given order,
        grouped by ``theme_title`` when given. ``minimum``..``maximum`` describe
        the organisations of ``org_level``; ``assessment`` is the comparison with
        England from :mod:`moopt.stats`.
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
        One dataset, ``spine``: :func:`calculate_spine_data` with the organisation's
        code and name (this page's rows only, so not shared).
    """
    check_text(org_name, "organisation name")
    check_text(org_code, "organisation code")
    check_text(period_label, "period label")
    check_level(org_level)
    data = calculate_spine_data(summary, org_code=org_code, org_name=org_name)
    chart_id = chart_id or make_chart_id("spine")
    title = title or f"{org_name} compared with England, {period_label}"
    check_text(title, "title")
    levels = level_name(org_level, plural=True)
    if data.empty:
        return empty_chart(chart_id, title, f"there are no indicators for {org_name}", data)

    directions = _directions(data)
    judged = bool(directions.isin(["increase", "decrease"]).any())
    unjudged = bool((~directions.isin(["increase", "decrease"])).any())
    spec = _spine_spec(org_level, judged, unjudged, "period" in data.columns,
                       "not_compared_reason" in data.columns)
    caption = (
        "Each row is one indicator, named above its bar; rows are grouped by theme. The black "
        f"centre mark is England; the pale grey bar runs from the lowest to the highest of the "
        f"{levels} and the darker middle section covers the middle half of them (25th to 75th "
        f"percentile). The marker is {org_name}: its shape and colour show how it compares with "
        "England (see the key), and hovering shows the values. Each row has its own scale, so "
        "compare positions within a row, not lengths between rows."
    )
    caption += " " + _side_sentence(judged, unjudged, bool(data["scale_reversed"].any()))
    alt_text = _spine_alt_text(data, org_name, org_code, period_label)
    return Chart(chart_id, title, caption, alt_text,
                 [ChartData(DATASET, data, f"{org_name}'s indicators against England")],
                 spec, params={"org_code": org_code})


def _directions(data: pd.DataFrame) -> pd.Series:
    if "improvement_direction" in data.columns:
        return data["improvement_direction"].astype(object)
    return pd.Series([None] * len(data), index=data.index, dtype=object)


def _side_words(judged: bool, unjudged: bool) -> tuple[str, str]:
    """Words for the left and right ends, true for every row drawn."""
    if judged and unjudged:
        return "Worse, or lower", "Better, or higher"
    if judged:
        return "Worse", "Better"
    return "Lower", "Higher"


def _side_sentence(judged: bool, unjudged: bool, mirrored: bool) -> str:
    """The caption's account of the two sides, matching the axis words."""
    if judged:
        text = ("Rows where lower values are better are mirrored, so on every row with a better "
                "direction (named after the indicator) better is to the right."
                if mirrored else "On every row with a better direction (named after the indicator) "
                "higher values are better and are to the right.")
        if unjudged:
            text += " On rows where neither direction is better, higher values are to the right."
        return text
    return "No row has a better direction, so on every row higher values are to the right."


# --- specification ------------------------------------------------------------------------------
def _wrap_steps(source: str, prefix: str, limit: str, lines: int = 3) -> list[dict]:
    """Vega steps splitting ``source`` into up to ``lines`` lines of at most ``limit`` characters.

    Lines break at the last space that fits (or mid-word when a word is longer than
    a line); the last line takes whatever is left, so no text is ever dropped.
    """
    steps = [{"calculate": source, "as": f"{prefix}_rest0"}]
    for n in range(1, lines):
        rest = f"datum.{prefix}_rest{n - 1}"
        space = f"lastindexof(substring({rest}, 0, {limit} + 1), ' ')"
        cut = f"(length({rest}) <= {limit} ? length({rest}) : ({space} > 0 ? {space} : {limit}))"
        steps += [
            {"calculate": f"substring({rest}, 0, {cut})", "as": f"{prefix}_line{n}"},
            {"calculate": f"trim(substring({rest}, {cut}))", "as": f"{prefix}_rest{n}"},
        ]
    parts = [f"datum.{prefix}_line{n}" for n in range(1, lines)]
    parts.append(f"datum.{prefix}_rest{lines - 1}")
    # Drop the empty trailing lines (line 1 always stays, so a line is always reserved).
    count = " + ".join(["1"] + [f"({p} !== '' ? 1 : 0)" for p in parts[1:]])
    steps += [{"calculate": count, "as": f"{prefix}_count"},
              {"calculate": "[" + ", ".join(parts) + "]", "as": f"{prefix}_all"},
              {"calculate": f"slice(datum.{prefix}_all, 0, datum.{prefix}_count)",
               "as": f"{prefix}_lines"}]
    return steps


def _text_expr(field: str) -> str:
    """A value with the row's decimals and unit ("12.3% of items", "0.95 items per STAR-PU")."""
    number = (f"format(datum.{field}, isValid(datum.decimals) ? ',.' + datum.decimals + 'f' "
              f": ',.3~r')")
    unit = "(isValid(datum.unit) ? datum.unit : '')"
    spaced = f"({unit} === '' ? '' : (indexof({unit}, '%') === 0 ? '' : ' ') + {unit})"
    return f"isValid(datum.{field}) && isFinite(datum.{field}) ? {number} + {spaced} : 'no value'"


@lru_cache(maxsize=64)
def _spine_spec(org_level: str, judged: bool, unjudged: bool, has_period: bool,
                has_reason: bool) -> dict:
    """The spine template for one level and one kind of axis words (no organisation in it)."""
    import altair as alt

    levels = level_name(org_level, plural=True)
    left_words, right_words = _side_words(judged, unjudged)
    # Characters per line from the drawn width (about 7 px a character at 12 px Arial), so a
    # 360 px phone wraps long names onto a second line and a desktop keeps them on one.
    limit = "max(16, floor(width / 7.2))"
    theme_limit = "max(14, floor(width / 8.4))"
    direction = "(isValid(datum.improvement_direction) ? datum.improvement_direction : '')"
    transforms = [
        {"window": [{"op": "row_number", "as": "_row"}]},
        {"calculate": "isValid(datum.theme_title) ? datum.theme_title + '' : ''", "as": "_theme"},
        {"window": [{"op": "lag", "field": "_theme", "as": "_previous_theme"}]},
        {"calculate": "datum._row === 1 || datum._theme !== datum._previous_theme",
         "as": "_new_theme"},
        {"calculate": f"datum.short_title + ({direction} === 'decrease' ? ' (lower is better)' : "
                      f"{direction} === 'increase' ? ' (higher is better)' : '')", "as": "_label"},
        *_wrap_steps("datum._label", "_label", limit),
        *_wrap_steps("datum._theme", "_theme", theme_limit),
        # A theme's header takes a blank line (after the first theme) and its own lines.
        {"calculate": "datum._new_theme && datum._theme !== '' ? slice(['', datum._theme_line1, "
                      "datum._theme_line2, datum._theme_rest2], datum._row === 1 ? 1 : 0, "
                      "1 + datum._theme_count) : []",
         "as": "_header_lines"},
        {"calculate": "length(datum._header_lines) + length(datum._label_lines) + 1",
         "as": "_taken"},
        {"window": [{"op": "sum", "field": "_taken", "as": "_end"}], "frame": [None, 0]},
        {"calculate": "datum._end - datum._taken", "as": "_start"},
        {"calculate": "datum._start + length(datum._header_lines)", "as": "_label_start"},
        {"calculate": "datum._end - 1", "as": "_bar_line"},
        {"calculate": "isValid(datum.assessment) ? datum.assessment : 'not compared'",
         "as": "_assessment"},
        {"calculate": _text_expr("value"), "as": "_value_text"},
        {"calculate": _text_expr("england_value"), "as": "_england_text"},
        {"calculate": f"({_text_expr('minimum')}) + ' to ' + ({_text_expr('maximum')})",
         "as": "_range_text"},
        {"calculate": f"({_text_expr('p25')}) + ' to ' + ({_text_expr('p75')})",
         "as": "_middle_text"},
        {"calculate": f"{direction} === 'decrease' ? 'better (lower values; row mirrored)' : "
                      f"{direction} === 'increase' ? 'better (higher values)' : 'higher values'",
         "as": "_right_means"},
    ]
    tooltip = [
        alt.Tooltip("org_name:N", title="Organisation"),
        alt.Tooltip("short_title:N", title="Indicator"),
        *([alt.Tooltip("period:N", title="Period")] if has_period else []),
        alt.Tooltip("_value_text:N", title="Value"),
        alt.Tooltip("_england_text:N", title="England"),
        alt.Tooltip("comparison_label:N", title="Compared with England"),
        *([alt.Tooltip("not_compared_reason:N", title="Why not compared")] if has_reason else []),
        alt.Tooltip("_range_text:N", title=f"Range across {levels}"),
        alt.Tooltip("_middle_text:N", title="Middle half (25th to 75th percentile)"),
        alt.Tooltip("_right_means:N", title="Right of England is"),
    ]
    y_lines = alt.Scale(type="band", paddingInner=0, paddingOuter=0)
    x_position = alt.Scale(domain=[-X_EDGE, X_EDGE], nice=False, zero=False)
    base = alt.Chart()  # every layer reads the layer chart's data, laid out once at the top

    def bar_y() -> alt.Y:
        return alt.Y("_bar_line:O", scale=y_lines, axis=None, sort="ascending")

    header = base.transform_filter("length(datum._header_lines) > 0").transform_flatten(
        ["_header_lines"], as_=["_header_text"]
    ).transform_window(_header_offset="row_number()", groupby=["_row"]).transform_calculate(
        _line="datum._start + datum._header_offset - 1"
    ).mark_text(align="left", baseline="middle", fontWeight="bold", fontSize=13,
                color=NHS_DARK_BLUE).encode(
        x=alt.value(0), y=alt.Y("_line:O", scale=y_lines, axis=None, sort="ascending"),
        text="_header_text:N",
    )
    labels = base.transform_flatten(["_label_lines"], as_=["_label_text"]).transform_window(
        _label_offset="row_number()", groupby=["_row"]
    ).transform_calculate(_line="datum._label_start + datum._label_offset - 1").mark_text(
        align="left", baseline="middle", color=NHS_BLACK
    ).encode(
        x=alt.value(0), y=alt.Y("_line:O", scale=y_lines, axis=None, sort="ascending"),
        text="_label_text:N", tooltip=tooltip,
    )
    x_axis = alt.Axis(
        orient="top", values=[-X_EDGE, 0, X_EDGE], labelFlush=True, grid=False, ticks=False,
        domain=False, title=None,
        labelExpr=(f"datum.value < 0 ? '\u2190 {left_words}' : datum.value > 0 ? "
                   f"'{right_words} \u2192' : 'England'"),
    )
    # The range and the middle half are one grey at two opacities: a key of their own that
    # does not share the markers' fill scale (the markers' fill, stroke and shape are one key).
    part_names = [f"Range of {levels}", "25th to 75th percentile"]
    part_opacity = alt.Opacity("_part:N", scale=alt.Scale(domain=part_names, range=[0.17, 1.0]),
                               legend=alt.Legend(title=None, orient="top", direction="vertical",
                                                 columns=1, symbolType="square",
                                                 symbolFillColor=NHS_MID_GREY))
    bar_range = base.transform_calculate(_part=repr(part_names[0])).mark_bar(
        height={"band": 0.6}, color=NHS_MID_GREY).encode(
        x=alt.X("scaled_minimum:Q", scale=x_position, axis=x_axis),
        x2="scaled_maximum:Q", y=bar_y(), opacity=part_opacity, tooltip=tooltip,
    )
    bar_middle = base.transform_calculate(_part=repr(part_names[1])).mark_bar(
        height={"band": 0.6}, color=NHS_MID_GREY).encode(
        x=alt.X("scaled_p25:Q", scale=x_position), x2="scaled_p75:Q", y=bar_y(),
        opacity=part_opacity, tooltip=tooltip,
    )
    england = base.mark_tick(orient="vertical", color=NHS_BLACK, thickness=2,
                             size=LINE_HEIGHT - 2).encode(
        x=alt.X(datum=0, scale=x_position), y=bar_y(), tooltip=tooltip,
    )
    keys = list(ASSESSMENT_STYLE)
    # One key for shape, fill and stroke (same field, same title); one column fits 360 px.
    key_legend = alt.Legend(title="Compared with England", orient="bottom", direction="vertical",
                            columns=1, labelExpr=_legend_expr())
    marker = base.transform_filter("isValid(datum.value) && isFinite(datum.value)").mark_point(
        filled=True, size=110, strokeWidth=1.5, opacity=1
    ).encode(
        x=alt.X("scaled_value:Q", scale=x_position), y=bar_y(),
        shape=alt.Shape("_assessment:N", legend=key_legend, scale=alt.Scale(
            domain=keys, range=[ASSESSMENT_STYLE[k]["shape"] for k in keys])),
        fill=alt.Fill("_assessment:N", legend=key_legend, scale=alt.Scale(
            domain=keys, range=[ASSESSMENT_STYLE[k]["fill"] for k in keys])),
        stroke=alt.Stroke("_assessment:N", legend=key_legend, scale=alt.Scale(
            domain=keys, range=[ASSESSMENT_STYLE[k]["stroke"] for k in keys])),
        tooltip=tooltip,
    )
    chart = alt.layer(header, labels, bar_range, bar_middle, england, marker,
                      data=alt.NamedData(name=DATASET), transform=transforms).properties(
        width="container", height=alt.Step(LINE_HEIGHT))
    spec = spec_from_altair(chart)
    spec["params"] = [{"name": "org_code", "value": ""}]
    return spec


def _legend_expr() -> str:
    cases = " : ".join(f"datum.value === '{key}' ? '{words}'"
                       for key, words in ASSESSMENT_LEGEND.items())
    return f"{cases} : datum.value"


# --- words ---------------------------------------------------------------------------------------
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


def _number(value: float, unit: object) -> str:
    unit = unit if isinstance(unit, str) else ""
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
        f"{row.short_title}: {_number(row.value, unit)} "
        f"against England {_number(row.england_value, unit)}, {row.comparison_label}"
        for row, unit in zip(data.head(12).itertuples(index=False), units.head(12), strict=True)
    ]
    sentences.append("; ".join(details) + ".")
    if len(data) > 12:
        sentences.append(f"The other {len(data) - 12} indicators are in the data table.")
    return " ".join(sentences)
