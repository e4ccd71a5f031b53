"""Test oracle: rolling 12-month (or other window) totals of monthly series, with NumPy.

The builds compute rolling values in the indicator engine
(:meth:`moopt.indicators.engine.IndicatorEngine.with_rolling`, Ibis on
DuckDB); this independent implementation, once part of ``moopt.stats``, now
lives under ``tests/`` to check the engine's numbers
(``tests/test_engine_spread.py``) and is itself checked against pandas
``rolling`` (``tests/stats/test_stats_rolling_savings.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from moopt.stats._validate import (
    assign_columns,
    check_choice,
    check_columns,
    check_dataframe,
    check_group_columns,
    multiplier_values,
    numeric_column,
)
from moopt.stats.spc import _series_order
from moopt.stats.trends import _month_index

DENOMINATOR_METHODS: tuple[str, ...] = ("sum", "mean", "last")


def calculate_rolling_values(
    df: pd.DataFrame,
    numerator: str = "numerator",
    denominator: str = "denominator",
    period: str = "period",
    series_columns: Sequence[str] | str | None = ("indicator_id", "org_level", "org_code"),
    window: int = 12,
    denominator_method: str = "sum",
    multiplier: float | str | None = None,
) -> pd.DataFrame:
    """Add rolling totals over the ``window`` consecutive months ending at each row.

    Parameters
    ----------
    df : pandas.DataFrame
        Monthly rows, one per series and month.
    numerator, denominator : str
        Columns to roll.
    period : str, default "period"
        Datetime column (first day of the month).
    series_columns : sequence of str, default ("indicator_id", "org_level", "org_code")
        Columns identifying one monthly series.
    window : int, default 12
        Months per window.
    denominator_method : {"sum", "mean", "last"}, default "sum"
        How the denominator is rolled: summed (items, discharges), averaged
        over the months (list sizes, STAR-PU of the mean list) or taken from
        the latest month (STAR-PU of the latest list).
    multiplier : float, str or None, default None
        When given (number or column), also add the rolling value
        ``numerator / denominator x multiplier`` (NaN when the denominator is 0).

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``<numerator>_rolling_<window>m``,
        ``<denominator>_rolling_<window>m`` and, with a multiplier,
        ``value_rolling_<window>m``. They are NaN unless all ``window``
        months up to and including the row's month are present with
        non-missing numerator and denominator.

    Raises
    ------
    ValueError
        For missing or non-numeric columns, a non-date period, a month that
        appears twice in a series, ``window`` < 1, or an unknown method.

    Notes
    -----
    A window is complete when the month ``window - 1`` months before the
    row's month is ``window - 1`` rows earlier in the same series, which,
    with no repeated months, means no month is missing. Windows are summed
    as ``window`` shifted slices rather than a running cumulative sum, so no
    rounding error builds up over long tables.

    Examples
    --------
    >>> import pandas as pd
    >>> months = pd.date_range("2023-01-01", periods=13, freq="MS")
    >>> df = pd.DataFrame({"period": months, "numerator": range(1, 14), "denominator": 10.0})
    >>> out = calculate_rolling_values(df, series_columns=None)
    >>> out["numerator_rolling_12m"].tolist()[-2:]
    [78.0, 90.0]
    """
    function = "calculate_rolling_values"
    check_dataframe(df, function)
    check_choice(denominator_method, DENOMINATOR_METHODS, "denominator_method", function)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"{function}: window must be a whole number of months >= 1.")
    series = check_group_columns(series_columns)
    check_columns(df, [numerator, denominator, period, *series], function)
    x_all = numeric_column(df, numerator, function)
    n_all = numeric_column(df, denominator, function)
    months_all = _month_index(df, period, function)
    order, codes, _ = _series_order(df, period, series, function)

    g = codes[order]
    m = months_all[order]
    x = x_all[order]
    n = n_all[order]
    size = len(order)
    span = window - 1
    complete = np.zeros(size, dtype=bool)
    if size > span:
        complete[span:] = (g[span:] == g[: size - span]) & (m[span:] - m[: size - span] == span)
    ok = np.isfinite(x) & np.isfinite(n)
    x0 = np.where(ok, x, 0.0)
    n0 = np.where(ok, n, 0.0)
    all_ok = ok.copy()
    sum_x = x0.copy()
    sum_n = n0.copy()
    for lag in range(1, window):
        sum_x[lag:] += x0[:-lag]
        sum_n[lag:] += n0[:-lag]
        all_ok[lag:] &= ok[:-lag]
        all_ok[:lag] = False
    valid = complete & all_ok
    if denominator_method == "mean":
        sum_n = sum_n / window
    elif denominator_method == "last":
        sum_n = n.copy()
    rolled_x = np.full(len(df), np.nan)
    rolled_n = np.full(len(df), np.nan)
    rolled_x[order] = np.where(valid, sum_x, np.nan)
    rolled_n[order] = np.where(valid, sum_n, np.nan)
    out = {
        f"{numerator}_rolling_{window}m": rolled_x,
        f"{denominator}_rolling_{window}m": rolled_n,
    }
    if multiplier is not None:
        scale = multiplier_values(df, multiplier, function)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"value_rolling_{window}m"] = np.where(
                rolled_n > 0, rolled_x / rolled_n, np.nan
            ) * scale
    return assign_columns(df, out)
