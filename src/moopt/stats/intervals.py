"""Confidence intervals for indicator values, public-health style.

Proportions get Wilson score intervals; counts, rates and observed/expected
ratios get exact Poisson intervals for small counts (fewer than 10) and
Byar's approximation otherwise. Measures that are not counts (ADQs, DDDs,
pounds) get no interval at all: their bounds are NaN.

All functions take a DataFrame and column names and return a new DataFrame
with ``lower_<level>`` and ``upper_<level>`` columns added, where ``<level>``
is the confidence level in per cent with the decimal point written as an
underscore (``lower_95``, ``upper_99_8``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from moopt.stats._validate import (
    DEFAULT_CONFIDENCE,
    INDICATOR_KINDS,
    assign_columns,
    check_columns,
    check_confidence,
    check_dataframe,
    check_finite_or_missing,
    check_non_negative,
    check_numerator_within_denominator,
    check_whole_numbers,
    confidence_label,
    kind_codes,
    multiplier_values,
    numeric_column,
    z_for,
)

# Below this many events the exact (chi-squared) Poisson limits are used;
# from it upwards Byar's approximation, as in PHE/OHID Fingertips.
BYAR_THRESHOLD = 10


def lower_column(level: float) -> str:
    """Name of the lower-bound column for a confidence level (0.95 -> 'lower_95')."""
    return f"lower_{confidence_label(level)}"


def upper_column(level: float) -> str:
    """Name of the upper-bound column for a confidence level (0.998 -> 'upper_99_8')."""
    return f"upper_{confidence_label(level)}"


# --------------------------------------------------------------------------- arrays


def wilson_limits(
    numerator: np.ndarray, denominator: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score limits of the proportion ``numerator / denominator``.

    Array-level helper used by :func:`calculate_wilson_interval`; inputs are
    assumed valid. Rows with a zero or missing denominator give NaN.
    """
    x = np.asarray(numerator, dtype=np.float64)
    n = np.asarray(denominator, dtype=np.float64)
    z = z_for(level)
    z2 = z * z
    with np.errstate(invalid="ignore", divide="ignore"):
        # 4x(1 - x/n) can dip a hair below zero through rounding when x == n.
        spread = z * np.sqrt(z2 + np.maximum(4.0 * x * (1.0 - x / n), 0.0))
        scale = 2.0 * (n + z2)
        lower = (2.0 * x + z2 - spread) / scale
        upper = (2.0 * x + z2 + spread) / scale
    usable = n > 0
    lower = np.where(usable, np.clip(lower, 0.0, 1.0), np.nan)
    upper = np.where(usable, np.clip(upper, 0.0, 1.0), np.nan)
    return lower, upper


def poisson_count_limits(count: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Confidence limits for a Poisson count: exact below 10 events, Byar from 10.

    Exact: lower = chi2.ppf(a/2, 2O)/2, upper = chi2.ppf(1 - a/2, 2O + 2)/2.
    Byar: lower = O(1 - 1/(9O) - z/(3 sqrt O))^3,
    upper = (O + 1)(1 - 1/(9(O + 1)) + z/(3 sqrt(O + 1)))^3.
    Missing counts give NaN.
    """
    o = np.asarray(count, dtype=np.float64)
    alpha = 1.0 - level
    z = z_for(level)
    lower = np.full(o.shape, np.nan)
    upper = np.full(o.shape, np.nan)

    big = o >= BYAR_THRESHOLD
    ob = o[big]
    lower[big] = ob * (1.0 - 1.0 / (9.0 * ob) - z / (3.0 * np.sqrt(ob))) ** 3
    ob1 = ob + 1.0
    upper[big] = ob1 * (1.0 - 1.0 / (9.0 * ob1) + z / (3.0 * np.sqrt(ob1))) ** 3

    small = (o >= 0) & (o < BYAR_THRESHOLD)
    if small.any():
        # Few distinct small counts: evaluate the chi-squared quantiles once each.
        distinct, position = np.unique(o[small], return_inverse=True)
        with np.errstate(invalid="ignore"):
            low = stats.chi2.ppf(alpha / 2.0, 2.0 * distinct) / 2.0
        low = np.where(distinct == 0, 0.0, low)  # no events: the lower limit is 0
        high = stats.chi2.ppf(1.0 - alpha / 2.0, 2.0 * distinct + 2.0) / 2.0
        lower[small] = low[position]
        upper[small] = high[position]
    return lower, upper


# --------------------------------------------------------------------------- checks


def _validated_counts(
    df: pd.DataFrame,
    numerator: str,
    denominator: str | None,
    function: str,
    *,
    proportion: bool,
    whole_numbers: bool,
) -> tuple[np.ndarray, np.ndarray]:
    check_dataframe(df, function)
    columns = [numerator] + ([denominator] if denominator is not None else [])
    check_columns(df, columns, function)
    x = numeric_column(df, numerator, function)
    check_finite_or_missing(x, numerator, df, function)
    check_non_negative(x, numerator, df, function)
    if whole_numbers:
        check_whole_numbers(x, numerator, df, function)
    if denominator is None:
        return x, np.ones_like(x)
    n = numeric_column(df, denominator, function)
    check_finite_or_missing(n, denominator, df, function)
    check_non_negative(n, denominator, df, function)
    if proportion:
        check_numerator_within_denominator(x, n, (numerator, denominator), df, function)
    return x, n


# --------------------------------------------------------------------------- public


def calculate_wilson_interval(
    df: pd.DataFrame,
    numerator: str = "numerator",
    denominator: str = "denominator",
    confidence: float | Sequence[float] = DEFAULT_CONFIDENCE,
    multiplier: float | str = 100,
) -> pd.DataFrame:
    """Add Wilson score confidence limits for a proportion.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per organisation and period.
    numerator : str, default "numerator"
        Column with the number of events (e.g. items of the drugs of interest).
    denominator : str, default "denominator"
        Column with the number of trials (e.g. items of the whole class).
        Rows with a zero or missing denominator get NaN limits.
    confidence : float or sequence of float, default (0.95, 0.998)
        Confidence levels, each strictly between 0 and 1.
    multiplier : float or str, default 100
        Scale of the indicator value (100 for a percentage), or the name of a
        column holding the multiplier per row.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``lower_<level>`` and ``upper_<level>`` columns
        on the same scale as the value (proportion x multiplier).

    Raises
    ------
    ValueError
        If a column is missing or not numeric, a count is negative or
        infinite, a numerator exceeds its denominator, or a confidence level
        is outside (0, 1).

    Notes
    -----
    With z the two-sided standard normal quantile,

    .. math:: \\frac{2x + z^2 \\mp z\\sqrt{z^2 + 4x(1 - x/n)}}{2(n + z^2)}

    The interval is well behaved at 0/n and n/n, unlike the Wald interval.

    References
    ----------
    Wilson EB (1927). Probable inference, the law of succession, and
    statistical inference. JASA 22:209-212.
    Newcombe RG (1998). Two-sided confidence intervals for the single
    proportion. Statistics in Medicine 17:857-872.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"numerator": [20], "denominator": [100]})
    >>> out = calculate_wilson_interval(df, multiplier=1)
    >>> out[["lower_95", "upper_95", "lower_99_8", "upper_99_8"]].round(6).iloc[0].tolist()
    [0.133367, 0.288829, 0.105192, 0.347111]
    """
    function = "calculate_wilson_interval"
    levels = check_confidence(confidence, function)
    x, n = _validated_counts(
        df, numerator, denominator, function, proportion=True, whole_numbers=False
    )
    scale = multiplier_values(df, multiplier, function)
    new_columns = {}
    for level in levels:
        lower, upper = wilson_limits(x, n, level)
        new_columns[lower_column(level)] = lower * scale
        new_columns[upper_column(level)] = upper * scale
    return assign_columns(df, new_columns)


def calculate_rate_interval(
    df: pd.DataFrame,
    numerator: str = "numerator",
    denominator: str | None = "denominator",
    confidence: float | Sequence[float] = DEFAULT_CONFIDENCE,
    multiplier: float | str = 1000,
) -> pd.DataFrame:
    """Add Poisson confidence limits for a count or a rate.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per organisation and period.
    numerator : str, default "numerator"
        Column of event counts (whole numbers, e.g. prescription items).
    denominator : str or None, default "denominator"
        Column of the population or exposure (e.g. list size). ``None`` gives
        limits for the count itself (and ``multiplier`` should then be 1).
        Rows with a zero or missing denominator get NaN limits.
    confidence : float or sequence of float, default (0.95, 0.998)
        Confidence levels, each strictly between 0 and 1.
    multiplier : float or str, default 1000
        Rate scale (1000 for "per 1,000 patients"), or a column name.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``lower_<level>`` and ``upper_<level>`` columns:
        count limits / denominator x multiplier.

    Raises
    ------
    ValueError
        If a column is missing or not numeric, a count is negative or not a
        whole number, or a confidence level is outside (0, 1).

    Notes
    -----
    The count O is treated as Poisson and the denominator as fixed. For
    O < 10 the exact limits come from the chi-squared distribution,
    lower = chi2(a/2; 2O)/2 and upper = chi2(1 - a/2; 2O + 2)/2 (lower = 0
    when O = 0). For O >= 10 Byar's approximation is used:
    lower = O(1 - 1/(9O) - z/(3 sqrt O))^3 and
    upper = (O + 1)(1 - 1/(9(O + 1)) + z/(3 sqrt(O + 1)))^3.

    References
    ----------
    Breslow NE, Day NE (1987). Statistical Methods in Cancer Research,
    Volume II. IARC. (Byar's approximation, p. 69.)
    Public Health England (2018). Technical Guide: Confidence Intervals.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"numerator": [10, 5], "denominator": [1, 1]})
    >>> out = calculate_rate_interval(df, confidence=0.95, multiplier=1)
    >>> out[["lower_95", "upper_95"]].round(6).values.tolist()
    [[4.78745, 18.391459], [1.623486, 11.668332]]
    """
    function = "calculate_rate_interval"
    return _poisson_interval(df, numerator, denominator, confidence, multiplier, function)


def calculate_ratio_interval(
    df: pd.DataFrame,
    observed: str = "numerator",
    expected: str = "denominator",
    confidence: float | Sequence[float] = DEFAULT_CONFIDENCE,
    multiplier: float | str = 1,
) -> pd.DataFrame:
    """Add confidence limits for an observed/expected ratio.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per organisation and period.
    observed : str, default "numerator"
        Column of observed counts O (whole numbers, e.g. antibacterial items).
    expected : str, default "denominator"
        Column of expected counts E (e.g. STAR-PU). Treated as fixed.
    confidence : float or sequence of float, default (0.95, 0.998)
        Confidence levels, each strictly between 0 and 1.
    multiplier : float or str, default 1
        Scale of the ratio (100 if shown as a percentage), or a column name.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``lower_<level>`` and ``upper_<level>`` columns.

    Raises
    ------
    ValueError
        As :func:`calculate_rate_interval`.

    Notes
    -----
    The limits are the Poisson limits of O (exact below 10, Byar from 10)
    divided by E, so items per STAR-PU read as an observed/expected ratio get
    the same treatment as an indirectly standardised ratio.

    References
    ----------
    Public Health England (2018). Technical Guide: Confidence Intervals,
    section on indirectly standardised ratios.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"numerator": [10], "denominator": [8.0]})
    >>> calculate_ratio_interval(df, confidence=0.95)["upper_95"].round(6).tolist()
    [2.298932]
    """
    function = "calculate_ratio_interval"
    return _poisson_interval(df, observed, expected, confidence, multiplier, function)


def _poisson_interval(
    df: pd.DataFrame,
    numerator: str,
    denominator: str | None,
    confidence: float | Sequence[float],
    multiplier: float | str,
    function: str,
) -> pd.DataFrame:
    levels = check_confidence(confidence, function)
    o, e = _validated_counts(
        df, numerator, denominator, function, proportion=False, whole_numbers=True
    )
    scale = multiplier_values(df, multiplier, function)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_unit = np.where(e > 0, scale / e, np.nan)
    new_columns = {}
    for level in levels:
        lower, upper = poisson_count_limits(o, level)
        new_columns[lower_column(level)] = lower * per_unit
        new_columns[upper_column(level)] = upper * per_unit
    return assign_columns(df, new_columns)


def calculate_intervals(
    df: pd.DataFrame,
    kind: str = "kind",
    numerator: str = "numerator",
    denominator: str = "denominator",
    confidence: float | Sequence[float] = DEFAULT_CONFIDENCE,
    multiplier: float | str = "multiplier",
) -> pd.DataFrame:
    """Add confidence limits, choosing the method from the indicator kind.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per indicator, organisation and period (the tidy table).
    kind : str, default "kind"
        Either one of "proportion", "rate", "ratio", "none" applied to every
        row, or the name of a column holding one of those per row.
    numerator, denominator : str
        Count columns.
    confidence : float or sequence of float, default (0.95, 0.998)
        Confidence levels, each strictly between 0 and 1.
    multiplier : float or str, default "multiplier"
        Scale of the value, or the name of a column holding it per row.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``lower_<level>`` and ``upper_<level>`` columns.

    Raises
    ------
    ValueError
        If a kind is unknown, or for any reason listed under the
        method-specific functions (checked only on the rows of that kind).

    Notes
    -----
    ============  ============================================================
    kind          method
    ============  ============================================================
    proportion    Wilson score (:func:`calculate_wilson_interval`)
    rate          Poisson, exact below 10 events, Byar from 10
    ratio         Poisson limits of O divided by E
    none          NaN: ADQs, DDDs and costs are not counts, so use percentiles,
                  overdispersion-adjusted funnels and SPC for them instead
    ============  ============================================================

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"kind": ["proportion", "rate", "none"],
    ...                    "numerator": [20, 10, 5.5], "denominator": [100, 1, 2.0],
    ...                    "multiplier": [1, 1, 1]})
    >>> calculate_intervals(df, confidence=0.95)["lower_95"].round(6).tolist()
    [0.133367, 4.78745, nan]
    """
    function = "calculate_intervals"
    check_dataframe(df, function)
    levels = check_confidence(confidence, function)
    kinds = kind_codes(df, kind, function)
    check_columns(df, [numerator, denominator], function)
    if isinstance(multiplier, str):
        check_columns(df, [multiplier], function)

    new_columns = {}
    for level in levels:
        new_columns[lower_column(level)] = np.full(len(df), np.nan)
        new_columns[upper_column(level)] = np.full(len(df), np.nan)
    for each_kind in ("proportion", "rate", "ratio"):
        rows = kinds == INDICATOR_KINDS.index(each_kind)
        if not rows.any():
            continue
        part = df.loc[rows, [numerator, denominator] + (
            [multiplier] if isinstance(multiplier, str) else []
        )]
        if each_kind == "proportion":
            part = calculate_wilson_interval(part, numerator, denominator, levels, multiplier)
        else:
            part = _poisson_interval(
                part, numerator, denominator, levels, multiplier, function
            )
        for level in levels:
            for name in (lower_column(level), upper_column(level)):
                new_columns[name][rows] = part[name].to_numpy()
    return assign_columns(df, new_columns)
