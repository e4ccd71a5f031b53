"""Statistical process control (XmR charts), NHS "Making Data Count" style.

The rules follow the NHS-R ``NHSRplotthedots`` package (0.2.x):

* centre line: the mean of the (baseline) points;
* moving ranges ``|y_i - y_(i-1)|``; moving ranges at or above 3.267 x their
  mean are screened out and the mean moving range recomputed;
* process limits ``mean +/- 2.66 x mean moving range``; "near limit" lines at
  ``mean +/- 1.7733 x mean moving range`` (two sigma);
* special cause when a point is (1) strictly outside the process limits,
  (2) part of 7 consecutive strictly rising or falling points (a tie breaks
  the trend), (3) one of 2 or 3 consecutive points, all on the same side of
  the mean, that lie beyond the near-limit line but inside the limits, or
  (4) part of 7 consecutive points on one side of the mean (a point on the
  mean breaks the run). When several rules apply, the first in that order
  names the rule and its direction;
* point types: ``special_cause_improvement`` / ``special_cause_concern``
  by the indicator's improvement direction, ``special_cause_neutral_high`` /
  ``special_cause_neutral_low`` for neutral indicators, else
  ``common_cause``;
* fewer than 13 points: the limits are trial limits (flagged).

All series are processed together: rows are sorted once by series and
period and every rule is computed with array operations, so thousands of
series take well under a second. Never run these rules on overlapping
rolling 12-month sums (neighbouring points share 11 months); for seasonal
indicators use seasonally adjusted values
(:func:`moopt.stats.trends.calculate_seasonal_adjustment`) or year-on-year
change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from moopt.stats._validate import (
    assign_columns,
    categorical_from_codes,
    check_columns,
    check_dataframe,
    check_group_columns,
    direction_codes,
    group_codes,
    numeric_column,
)

LIMIT_FACTOR = 2.66  # 3 / d2 with d2 = 1.128 for moving ranges of two points
NEAR_LIMIT_FACTOR = 2.0 * LIMIT_FACTOR / 3.0  # 1.7733: two sigma
SCREENING_FACTOR = 3.267  # D4 for n = 2: moving ranges at or above this x mean are outliers
RUN_LENGTH = 7
TREND_LENGTH = 7
MINIMUM_POINTS_FOR_LIMITS = 13

DEFAULT_SERIES_COLUMNS: tuple[str, ...] = ("indicator_id", "org_level", "org_code", "period_type")

RULES: tuple[str, ...] = ("outside_limits", "trend", "two_of_three", "run")
POINT_TYPES: tuple[str, ...] = (
    "common_cause",
    "special_cause_improvement",
    "special_cause_concern",
    "special_cause_neutral_high",
    "special_cause_neutral_low",
)
SIDES: tuple[str, ...] = ("low", "high")
VARIATION_ICONS: tuple[str, ...] = (
    "common_cause",
    "improvement_high",
    "improvement_low",
    "concern_high",
    "concern_low",
    "neutral_high",
    "neutral_low",
)
ASSURANCE_ICONS: tuple[str, ...] = ("consistent_pass", "consistent_fail", "inconsistent")


def _series_order(
    df: pd.DataFrame, period: str, series_columns: list[str], function: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Row order sorted by series then period, plus series codes."""
    codes, n_series = group_codes(df, series_columns, function)
    period_codes, _ = pd.factorize(df[period], sort=True, use_na_sentinel=True)
    if (period_codes < 0).any():
        raise ValueError(f"{function}: column {period!r} has missing periods.")
    order = np.lexsort((period_codes, codes))
    sorted_codes = codes[order]
    sorted_periods = period_codes[order]
    repeated = (sorted_codes[1:] == sorted_codes[:-1]) & (sorted_periods[1:] == sorted_periods[:-1])
    if repeated.any():
        row = df.index[order[1:][repeated][0]]
        raise ValueError(
            f"{function}: a series has the same period twice (e.g. row {row}); "
            f"check series_columns={series_columns} identify one series each."
        )
    return order, codes, n_series


def _run_lengths(run_start: np.ndarray) -> np.ndarray:
    """Length of the run each position belongs to, runs starting where True."""
    run_id = np.cumsum(run_start) - 1
    return np.bincount(run_id)[run_id]


def _spc_arrays(
    y: np.ndarray,
    g: np.ndarray,
    n_series: int,
    baseline_points: int | None,
    screen_outliers: bool,
) -> dict[str, np.ndarray]:
    """All SPC quantities for values y sorted by series code g (no missing values)."""
    size = len(y)
    same_as_previous = np.zeros(size, dtype=bool)
    same_as_previous[1:] = g[1:] == g[:-1]
    series_start = ~same_as_previous
    start_position = np.maximum.accumulate(np.where(series_start, np.arange(size), 0))
    position = np.arange(size) - start_position
    points = np.bincount(g, minlength=n_series)

    in_baseline = np.ones(size, dtype=bool) if baseline_points is None else (
        position < baseline_points
    )
    base_count = np.bincount(g, weights=in_baseline.astype(float), minlength=n_series)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(g, weights=np.where(in_baseline, y, 0.0), minlength=n_series) / (
            base_count
        )

    moving_range = np.full(size, np.nan)
    moving_range[1:] = np.abs(y[1:] - y[:-1])
    moving_range[series_start] = np.nan
    mr_used = np.isfinite(moving_range) & in_baseline
    mr_used[1:] &= in_baseline[:-1]

    def mean_moving_range(used: np.ndarray) -> np.ndarray:
        total = np.bincount(g, weights=np.where(used, moving_range, 0.0), minlength=n_series)
        count = np.bincount(g, weights=used.astype(float), minlength=n_series)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / count

    average_mr = mean_moving_range(mr_used)
    if screen_outliers:
        threshold = SCREENING_FACTOR * average_mr[g]
        # A flat series has mean moving range 0; keep its zeros rather than drop them all.
        keep = (moving_range < threshold) | (average_mr[g] == 0)
        average_mr = mean_moving_range(mr_used & keep)

    centre = mean[g]
    spread = average_mr[g]
    upper = centre + LIMIT_FACTOR * spread
    lower = centre - LIMIT_FACTOR * spread
    upper_near = centre + NEAR_LIMIT_FACTOR * spread
    lower_near = centre - NEAR_LIMIT_FACTOR * spread

    side = np.sign(y - centre).astype(np.int8)  # relative to mean, 0 on the mean
    side[~np.isfinite(centre)] = 0
    outside = (y > upper) | (y < lower)
    close = ~outside & ((y < lower_near) | (y > upper_near))

    # Rule 4, runs on one side of the mean: a run restarts at a new series,
    # a change of side, or a point on the mean.
    run_start = series_start | (side == 0)
    run_start[1:] |= side[1:] != side[:-1]
    run = (side != 0) & (_run_lengths(run_start) >= RUN_LENGTH)

    # Rule 2, trends: step direction between consecutive points; 6 equal
    # non-zero steps in a row make 7 points.
    step = np.zeros(size, dtype=np.int8)
    step[1:] = np.sign(y[1:] - y[:-1])
    step[series_start] = 0
    step_start = series_start | (step == 0)
    step_start[1:] |= step[1:] != step[:-1]
    long_step = (step != 0) & (_run_lengths(step_start) >= TREND_LENGTH - 1)
    next_long = np.zeros(size, dtype=bool)
    next_long[:-1] = long_step[1:]
    trend = long_step | next_long
    next_step = np.zeros(size, dtype=np.int8)
    next_step[:-1] = step[1:]
    trend_direction = np.where(next_long, next_step, step)

    # Rule 3, two of three: windows of 3 points of one series, all on the same
    # side of the mean, with at least 2 beyond the near-limit line.
    window_ok = np.zeros(size, dtype=bool)
    if size >= 3:
        full = (g[2:] == g[:-2])
        close_count = close[:-2].astype(int) + close[1:-1] + close[2:]
        side_sum = side[:-2].astype(int) + side[1:-1] + side[2:]
        window_ok[:-2] = full & (close_count >= 2) & (np.abs(side_sum) == 3)
    covered = window_ok.copy()
    covered[1:] |= window_ok[:-1]
    covered[2:] |= window_ok[:-2]
    two_of_three = close & covered

    rule = np.select([outside, trend, two_of_three, run], [0, 1, 2, 3], default=-1)
    direction = np.where(rule == 1, trend_direction, side).astype(np.int8)
    direction[rule < 0] = 0
    return {
        "mean": centre,
        "upper": upper,
        "lower": lower,
        "upper_near": upper_near,
        "lower_near": lower_near,
        "moving_range": moving_range,
        "average_moving_range": spread,
        "rule": rule,
        "direction": direction,
        "baseline_count": base_count[g],
        "points": points[g],
    }


def calculate_spc(
    df: pd.DataFrame,
    value: str = "value",
    period: str = "period",
    series_columns: Sequence[str] | str | None = DEFAULT_SERIES_COLUMNS,
    improvement_direction: str = "improvement_direction",
    baseline_points: int | None = None,
    screen_outliers: bool = True,
    period_type: str | None = "period_type",
) -> pd.DataFrame:
    """Add XmR control limits, special-cause rules and point types to every row.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per series and period (many series at once).
    value : str, default "value"
        The plotted values. Rows with a missing value are skipped (the
        points either side are treated as consecutive) and get no rule or
        point type, but do get their series' limits.
    period : str, default "period"
        Sortable time column.
    series_columns : sequence of str, default DEFAULT_SERIES_COLUMNS
        Columns identifying one series: ("indicator_id", "org_level",
        "org_code", "period_type").
    improvement_direction : str, default "improvement_direction"
        "increase", "decrease" or "neutral" for all rows, or a column name.
    baseline_points : int or None, default None
        Compute the mean and limits from the first this many points of each
        series only (later points are judged against them); None uses all.
    screen_outliers : bool, default True
        Drop moving ranges at or above 3.267 x their mean before the limits.
    period_type : str or None, default "period_type"
        If this column exists, rows whose period type starts with "rolling"
        are refused: consecutive rolling 12-month sums share 11 months, so
        the run and trend rules would fire on overlap alone. ``None`` skips
        the check.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``spc_mean``, ``spc_lower_limit``,
        ``spc_upper_limit``, ``spc_lower_near_limit``, ``spc_upper_near_limit``,
        ``spc_moving_range``, ``spc_average_moving_range``, ``spc_rule``
        (categorical: "outside_limits", "trend", "two_of_three", "run", or
        missing), ``spc_point_type`` (categorical, see module notes),
        ``spc_signal_side`` ("high"/"low" for special causes),
        ``spc_points`` (points in the series) and ``spc_trial_limits``
        (True when the limits rest on fewer than 13 points).

    Raises
    ------
    ValueError
        If a column is missing, ``value`` is not numeric, a series repeats a
        period, a direction is unknown, ``baseline_points`` < 2, or the data
        hold rolling-period rows.

    Notes
    -----
    A series whose values are all equal has a mean moving range of 0, so its
    limits collapse onto the mean; no point is then outside or near the
    limits and none is on a side of the mean, so every point is common cause.
    With a trend, the point type follows the trend's direction (rising =
    high), otherwise the side of the mean.

    References
    ----------
    NHS England / NHS Improvement (2019). Making Data Count: Getting started.
    NHS-R Community. NHSRplotthedots (R package, version 0.2).
    Wheeler DJ (2000). Understanding Variation. SPC Press.

    Examples
    --------
    >>> import pandas as pd
    >>> y = [10, 11, 9, 10, 11, 9, 10, 11, 9, 10, 11, 9, 10, 11, 9, 30]
    >>> df = pd.DataFrame({"period": range(16), "value": y})
    >>> out = calculate_spc(df, series_columns=None, improvement_direction="decrease")
    >>> round(float(out["spc_upper_limit"].iloc[0]), 2), out["spc_point_type"].iloc[-1]
    (14.86, 'special_cause_concern')
    """
    function = "calculate_spc"
    check_dataframe(df, function)
    series = check_group_columns(series_columns)
    check_columns(df, [value, period, *series], function)
    if baseline_points is not None and (
        isinstance(baseline_points, bool)
        or not isinstance(baseline_points, (int, np.integer))
        or baseline_points < 2
    ):
        raise ValueError(f"{function}: baseline_points must be a whole number >= 2 or None.")
    if period_type is not None and period_type in df.columns:
        rolling = df[period_type].astype("str").str.startswith("rolling").fillna(False)
        if rolling.any():
            raise ValueError(
                f"{function}: {int(rolling.sum())} row(s) have a rolling {period_type!r}; "
                "SPC rules are not valid on overlapping rolling sums. Use monthly rows "
                "(seasonally adjusted for seasonal indicators) or year-on-year change."
            )
    y_all = numeric_column(df, value, function)
    if np.isinf(y_all).any():
        raise ValueError(f"{function}: column {value!r} has infinite values.")
    direction_all = direction_codes(df, improvement_direction, function)
    order, codes, n_series = _series_order(df, period, series, function)

    ordered_y = y_all[order]
    present = np.isfinite(ordered_y)
    rows = order[present]
    result = _spc_arrays(y_all[rows], codes[rows], n_series, baseline_points, screen_outliers)

    size = len(df)
    out: dict[str, object] = {}
    # Series-level quantities also go on the rows with a missing value.
    sorted_codes = codes[rows]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) if len(rows) else (
        np.array([], dtype=np.int64)
    )
    first_row = np.full(n_series, -1)
    first_row[sorted_codes[starts]] = starts
    for name, key in (
        ("spc_mean", "mean"),
        ("spc_lower_limit", "lower"),
        ("spc_upper_limit", "upper"),
        ("spc_lower_near_limit", "lower_near"),
        ("spc_upper_near_limit", "upper_near"),
    ):
        per_series = np.full(n_series, np.nan)
        have = first_row >= 0
        per_series[have] = result[key][first_row[have]]
        out[name] = per_series[codes]
    moving_range = np.full(size, np.nan)
    moving_range[rows] = result["moving_range"]
    out["spc_moving_range"] = moving_range
    per_series = np.full(n_series, np.nan)
    have = first_row >= 0
    per_series[have] = result["average_moving_range"][first_row[have]]
    out["spc_average_moving_range"] = per_series

    rule = np.full(size, -1, dtype=np.int8)
    rule[rows] = result["rule"]
    side = np.zeros(size, dtype=np.int8)
    side[rows] = result["direction"]
    oriented = side * direction_all
    point_type = np.select(
        [~np.isfinite(y_all), rule < 0, direction_all == 0, oriented > 0, oriented < 0],
        [-1, 0, np.where(side > 0, 3, 4), 1, 2],
        default=0,
    )
    out["spc_average_moving_range"] = per_series[codes]
    out["spc_rule"] = categorical_from_codes(rule, RULES)
    out["spc_point_type"] = categorical_from_codes(point_type, POINT_TYPES)
    out["spc_signal_side"] = categorical_from_codes(
        np.where(rule >= 0, (side > 0).astype(np.int8), -1), SIDES
    )
    points = np.bincount(codes[rows], minlength=n_series)
    baseline = points if baseline_points is None else np.minimum(points, baseline_points)
    out["spc_points"] = points[codes]
    out["spc_trial_limits"] = baseline[codes] < MINIMUM_POINTS_FOR_LIMITS
    return assign_columns(df, out)


def _last_row_per_series(ordered_rows: np.ndarray, codes: np.ndarray, n_series: int) -> np.ndarray:
    """Row of the latest period per series (rows already sorted by series, period); -1 if none."""
    last = np.full(n_series, -1)
    if len(ordered_rows):
        c = codes[ordered_rows]
        ends = np.flatnonzero(np.r_[c[1:] != c[:-1], True])
        last[c[ends]] = ordered_rows[ends]
    return last


def calculate_spc_summary(
    spc: pd.DataFrame,
    period: str = "period",
    series_columns: Sequence[str] | str | None = DEFAULT_SERIES_COLUMNS,
    improvement_direction: str = "improvement_direction",
    target: float | str | None = None,
    value: str = "value",
) -> pd.DataFrame:
    """One row per series: the variation icon for its latest point, and assurance.

    Parameters
    ----------
    spc : pandas.DataFrame
        Output of :func:`calculate_spc`.
    period, series_columns, improvement_direction, value
        As given to :func:`calculate_spc`.
    target : float, str or None, default None
        A target value for every series, or a column holding it (the value
        on the latest row is used). No target means no assurance icon.

    Returns
    -------
    pandas.DataFrame
        The series columns, ``last_period``, ``last_value``,
        ``last_point_type``, ``variation_icon`` (categorical:
        "common_cause", "improvement_high", "improvement_low",
        "concern_high", "concern_low", "neutral_high", "neutral_low"),
        ``assurance_icon`` ("consistent_pass", "consistent_fail",
        "inconsistent", or missing without a target or for neutral
        indicators), ``spc_points`` and ``spc_trial_limits``.

    Raises
    ------
    ValueError
        If the columns written by :func:`calculate_spc` are missing.

    Notes
    -----
    The variation icon follows the latest point with a value. Assurance
    compares the target with the process limits: a target beyond the lower
    limit on the good side passes consistently, beyond the upper limit on
    the bad side fails consistently, and a target between the limits is
    hit and miss ("inconsistent").

    References
    ----------
    NHS England / NHS Improvement (2019). Making Data Count: Strengthening
    your decisions (icons).

    Examples
    --------
    >>> import pandas as pd
    >>> y = [10, 11, 9, 10, 11, 9, 10, 11, 9, 10, 11, 9, 10, 11, 9, 30]
    >>> df = pd.DataFrame({"period": range(16), "value": y})
    >>> out = calculate_spc(df, series_columns=None, improvement_direction="decrease")
    >>> s = calculate_spc_summary(out, series_columns=None, improvement_direction="decrease",
    ...                           target=20)
    >>> s[["variation_icon", "assurance_icon"]].iloc[0].tolist()
    ['concern_high', 'consistent_pass']
    """
    function = "calculate_spc_summary"
    check_dataframe(spc, function)
    series = check_group_columns(series_columns)
    needed = [period, value, *series, "spc_point_type", "spc_signal_side", "spc_lower_limit",
              "spc_upper_limit", "spc_points", "spc_trial_limits"]
    check_columns(spc, needed, function)
    direction = direction_codes(spc, improvement_direction, function)
    targets = None
    if isinstance(target, str):
        check_columns(spc, [target], function)
        targets = numeric_column(spc, target, function)
    elif target is not None:
        targets = np.full(len(spc), float(target))

    y = numeric_column(spc, value, function)
    order, codes, n_series = _series_order(spc, period, series, function)
    has_value = np.isfinite(y[order])
    last = _last_row_per_series(order[has_value], codes, n_series)
    any_row = _last_row_per_series(order, codes, n_series)
    pick = np.where(last >= 0, last, any_row)

    picked = spc.iloc[pick]
    out = picked[series].reset_index(drop=True) if series else pd.DataFrame(index=range(n_series))
    out["last_period"] = picked[period].to_numpy()
    out["last_value"] = np.where(last >= 0, y[pick], np.nan)
    point_type = picked["spc_point_type"].astype("object").to_numpy()
    high = (picked["spc_signal_side"].astype("object") == "high").to_numpy()
    out["last_point_type"] = pd.Categorical(point_type, categories=list(POINT_TYPES))
    icon = np.select(
        [
            point_type == "common_cause",
            (point_type == "special_cause_improvement") & high,
            point_type == "special_cause_improvement",
            (point_type == "special_cause_concern") & high,
            point_type == "special_cause_concern",
            point_type == "special_cause_neutral_high",
            point_type == "special_cause_neutral_low",
        ],
        [0, 1, 2, 3, 4, 5, 6],
        default=-1,
    )
    out["variation_icon"] = categorical_from_codes(np.where(last >= 0, icon, -1), VARIATION_ICONS)

    assurance = np.full(n_series, -1)
    if targets is not None:
        t = targets[pick]
        lower = picked["spc_lower_limit"].to_numpy(dtype=float)
        upper = picked["spc_upper_limit"].to_numpy(dtype=float)
        d = direction[pick]
        ok = np.isfinite(t) & np.isfinite(lower) & np.isfinite(upper) & (d != 0)
        passes = np.where(d > 0, lower > t, upper < t)
        fails = np.where(d > 0, upper < t, lower > t)
        assurance = np.where(ok, np.select([passes, fails], [0, 1], default=2), -1)
    out["assurance_icon"] = categorical_from_codes(assurance, ASSURANCE_ICONS)
    out["spc_points"] = picked["spc_points"].to_numpy()
    out["spc_trial_limits"] = picked["spc_trial_limits"].to_numpy()
    return out
