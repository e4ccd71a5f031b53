"""Confidence intervals for indicator values, public-health style.

Proportions get Wilson score intervals; counts, rates and observed/expected
ratios get exact Poisson intervals for small counts (fewer than 10) and
Byar's approximation otherwise. Measures that are not counts (ADQs, DDDs,
pounds) get no interval at all: their bounds are NaN.

All functions take a DataFrame and column names and return a new DataFrame
with ``lower_<level>`` and ``upper_<level>`` columns added, where ``<level>``
is the confidence level in per cent with the decimal point written as an
underscore (``lower_95``, ``upper_99_8``).

The inputs are checked in one vectorised pass (kind by kind only when
something is wrong, to name the problem), and the limits are computed block
by block on several threads, sharing the terms that do not depend on the
confidence level; each block picks out its own rows of each kind.
"""

from __future__ import annotations

import functools
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
    count_codes,
    infinite_or_negative,
    kind_codes,
    map_blocks,
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
    return _wilson_limits_at(numerator, denominator, (level,))[0]


def _wilson_limits_at(
    numerator: np.ndarray, denominator: np.ndarray, levels: Sequence[float]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`wilson_limits` for several levels, sharing the parts that do not depend on z."""
    x = np.asarray(numerator, dtype=np.float64)
    n = np.asarray(denominator, dtype=np.float64)
    usable = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        # 4x(1 - x/n) can dip a hair below zero through rounding when x == n.
        variance_term = np.maximum(4.0 * x * (1.0 - x / n), 0.0)
        twice_x = 2.0 * x
    out = []
    for level in levels:
        z = z_for(level)
        z2 = z * z
        with np.errstate(invalid="ignore", divide="ignore"):
            spread = z * np.sqrt(z2 + variance_term)
            scale = 2.0 * (n + z2)
            centre = twice_x + z2
            lower = (centre - spread) / scale
            upper = (centre + spread) / scale
        # At x == 0 (x == n) the lower (upper) limit is exactly 0 (1); rounding can miss it by 1e-16,
        # which would put a 100% value above its own upper limit.
        lower = np.where(usable, np.where(x == 0, 0.0, np.clip(lower, 0.0, 1.0, out=lower)), np.nan)
        upper = np.where(usable, np.where(x == n, 1.0, np.clip(upper, 0.0, 1.0, out=upper)), np.nan)
        out.append((lower, upper))
    return out


def poisson_count_limits(count: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Confidence limits for a Poisson count: exact below 10 events, Byar from 10.

    Exact: lower = chi2.ppf(a/2, 2O)/2, upper = chi2.ppf(1 - a/2, 2O + 2)/2.
    Byar: lower = O(1 - 1/(9O) - z/(3 sqrt O))^3,
    upper = (O + 1)(1 - 1/(9(O + 1)) + z/(3 sqrt(O + 1)))^3.
    Missing counts give NaN.
    """
    return _poisson_count_limits_at(count, (level,))[0]


def _poisson_count_limits_at(
    count: np.ndarray, levels: Sequence[float]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`poisson_count_limits` for several levels, sharing the z-free parts."""
    o = np.asarray(count, dtype=np.float64)
    big = o >= BYAR_THRESHOLD
    all_big = bool(big.all())
    ob = o if all_big else o[big]
    ob1 = ob + 1.0
    # Byar's terms that do not depend on the level, computed once.
    lower_base = 1.0 - 1.0 / (9.0 * ob)
    lower_root = 3.0 * np.sqrt(ob)
    upper_base = 1.0 - 1.0 / (9.0 * ob1)
    upper_root = 3.0 * np.sqrt(ob1)

    if not all_big:
        small = (o >= 0) & (o < BYAR_THRESHOLD)
        small_counts = o[small]
        # Small counts are whole numbers 0..9 (to within the tolerance of the
        # checks): exact ones read their limits from a table made once per
        # level; any others are worked out one distinct value at a time.
        table_index = small_counts.astype(np.intp)
        in_table = table_index == small_counts
        if not in_table.all():
            distinct, position = np.unique(small_counts[~in_table], return_inverse=True)

    out = []
    for level in levels:
        z = z_for(level)
        byar_lower = ob * (lower_base - z / lower_root) ** 3
        byar_upper = ob1 * (upper_base + z / upper_root) ** 3
        if all_big:
            out.append((byar_lower, byar_upper))
            continue
        lower = np.full(o.shape, np.nan)
        upper = np.full(o.shape, np.nan)
        lower[big] = byar_lower
        upper[big] = byar_upper
        table_lower, table_upper = _exact_limits_table(level)
        small_lower = table_lower.take(table_index, mode="clip")
        small_upper = table_upper.take(table_index, mode="clip")
        if not in_table.all():
            odd_lower, odd_upper = _exact_count_limits(distinct, level)
            small_lower[~in_table] = odd_lower[position]
            small_upper[~in_table] = odd_upper[position]
        lower[small] = small_lower
        upper[small] = small_upper
        out.append((lower, upper))
    return out


def _exact_count_limits(counts: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact Poisson limits of counts O: chi2(a/2; 2O)/2 and chi2(1 - a/2; 2O + 2)/2."""
    alpha = 1.0 - level
    with np.errstate(invalid="ignore"):
        low = stats.chi2.ppf(alpha / 2.0, 2.0 * counts) / 2.0
    low = np.where(counts == 0, 0.0, low)  # no events: the lower limit is 0
    high = stats.chi2.ppf(1.0 - alpha / 2.0, 2.0 * counts + 2.0) / 2.0
    return low, high


@functools.lru_cache(maxsize=16)
def _exact_limits_table(level: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact limits of the counts 0, 1, ..., BYAR_THRESHOLD - 1 at one level (read-only)."""
    lower, upper = _exact_count_limits(np.arange(BYAR_THRESHOLD, dtype=np.float64), level)
    lower.flags.writeable = upper.flags.writeable = False
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
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The count columns as float arrays, checked (on the boolean mask ``rows`` if given).

    The arrays returned are the whole columns, not copies limited to ``rows``.
    """
    check_dataframe(df, function)
    columns = [numerator] + ([denominator] if denominator is not None else [])
    check_columns(df, columns, function)
    x = numeric_column(df, numerator, function)
    check_finite_or_missing(x, numerator, df, function, rows)
    check_non_negative(x, numerator, df, function, rows)
    if whole_numbers:
        check_whole_numbers(x, numerator, df, function, rows)
    if denominator is None:
        return x, np.ones_like(x)
    n = numeric_column(df, denominator, function)
    check_finite_or_missing(n, denominator, df, function, rows)
    check_non_negative(n, denominator, df, function, rows)
    if proportion:
        check_numerator_within_denominator(x, n, (numerator, denominator), df, function, rows)
    return x, n


def _limit_columns(size: int, levels: Sequence[float]) -> dict[str, np.ndarray]:
    """Uninitialised ``lower_<level>`` / ``upper_<level>`` columns; every row gets written."""
    return {name: np.empty(size)
            for level in levels for name in (lower_column(level), upper_column(level))}


def _write_limits(
    columns: dict[str, np.ndarray],
    block: slice,
    family: str,
    x: np.ndarray,
    n: np.ndarray,
    scale: np.ndarray | float,
    levels: Sequence[float],
    selected: np.ndarray | None = None,
) -> None:
    """Write the limits of the rows ``block`` (``selected`` of them, a mask, if given).

    ``family`` "proportion" gives Wilson limits of x/n times ``scale``; any
    other value Poisson limits of the count x per unit of n, times ``scale``.
    """
    xb, nb = x[block], n[block]
    sb = scale if np.isscalar(scale) else scale[block]
    if selected is not None:
        xb, nb = xb[selected], nb[selected]
        sb = sb if np.isscalar(sb) else sb[selected]
    if family == "proportion":
        limits = _wilson_limits_at(xb, nb, levels)
        factor = sb
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where(nb > 0, sb / nb, np.nan)
        limits = _poisson_count_limits_at(xb, levels)
    for level, (lower, upper) in zip(levels, limits):
        for name, limit in ((lower_column(level), lower), (upper_column(level), upper)):
            target = columns[name][block]  # a view: blocks are slices
            if selected is None:
                np.multiply(limit, factor, out=target)
            else:
                target[selected] = limit * factor


def _fill_limits(
    columns: dict[str, np.ndarray],
    x: np.ndarray,
    n: np.ndarray,
    scale: np.ndarray | float,
    levels: Sequence[float],
    family: str | None = None,
    kinds: np.ndarray | None = None,
) -> None:
    """Write the limits of every row into ``columns``, block by block on threads.

    Either ``family`` ("proportion" or "count") applies to every row, or
    ``kinds`` gives each row's index into INDICATOR_KINDS: proportions get
    Wilson limits, rates and ratios Poisson limits and "none" NaN. Each
    block picks out its own rows of each kind, so no mask the size of the
    table is built.
    """
    proportion = INDICATOR_KINDS.index("proportion")
    counts = (INDICATOR_KINDS.index("rate"), INDICATOR_KINDS.index("ratio"))

    def fill(block: slice) -> None:
        if kinds is None:
            _write_limits(columns, block, family, x, n, scale, levels)
            return
        kb = kinds[block]
        is_proportion = kb == proportion
        is_count = (kb == counts[0]) | (kb == counts[1])
        for part, rows in (("proportion", is_proportion), ("count", is_count)):
            if rows.all():
                _write_limits(columns, block, part, x, n, scale, levels)
            elif rows.any():
                _write_limits(columns, block, part, x, n, scale, levels, rows)
        without = ~(is_proportion | is_count)
        if without.any():
            for column in columns.values():
                column[block][without] = np.nan

    map_blocks(fill, len(x))


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
    columns = _limit_columns(len(df), levels)
    _fill_limits(columns, x, n, scale, levels, family="proportion")
    return assign_columns(df, columns)


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
    columns = _limit_columns(len(df), levels)
    _fill_limits(columns, o, e, scale, levels, family="count")
    return assign_columns(df, columns)


def _counts_pass_checks(
    df: pd.DataFrame,
    numerator: str,
    denominator: str,
    multiplier: float | str,
    kinds: np.ndarray,
) -> bool:
    """One pass of every check of :func:`calculate_intervals` over all its rows.

    True when the data are fine. Otherwise (or on any error) False, and the
    caller repeats the checks kind by kind to raise the right message. The
    pass goes block by block on threads.
    """
    proportion = INDICATOR_KINDS.index("proportion")
    counts = (INDICATOR_KINDS.index("rate"), INDICATOR_KINDS.index("ratio"))
    try:
        x = numeric_column(df, numerator, "calculate_intervals")
        n = numeric_column(df, denominator, "calculate_intervals")
        scale = (numeric_column(df, multiplier, "calculate_intervals")
                 if isinstance(multiplier, str) else None)

        def bad_rows(block: slice) -> bool:
            kb = kinds[block]
            is_proportion = kb == proportion
            checked = is_proportion | (kb == counts[0]) | (kb == counts[1])
            xb, nb = x[block], n[block]
            bad = infinite_or_negative(xb, nb)
            with np.errstate(invalid="ignore"):
                if scale is not None:
                    bad |= ~(np.isfinite(scale[block]) & (scale[block] > 0))
                bad &= checked
                bad |= (xb > nb) & is_proportion
                # Counts must be whole numbers, as check_whole_numbers tests.
                rounded_off = np.round(xb) != xb
                rounded_off &= checked & ~is_proportion
                if rounded_off.any():
                    v = xb[rounded_off]
                    v = v[np.isfinite(v)]
                    if np.any(np.abs(v - np.round(v)) > 1e-9 * np.maximum(1.0, np.abs(v))):
                        return True
            return bool(bad.any())

        if any(map_blocks(bad_rows, len(df))):
            return False
        if scale is None:
            multiplier_values(df, multiplier, "calculate_intervals")
    except ValueError:
        return False
    return True


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

    # The rows of each kind that has limits, with the method whose checks apply.
    rows_per_kind = count_codes(kinds, len(INDICATOR_KINDS))
    present = [
        (each_kind, method_function)
        for each_kind, method_function in (
            ("proportion", "calculate_wilson_interval"),
            ("rate", function),
            ("ratio", function),
        )
        if rows_per_kind[INDICATOR_KINDS.index(each_kind)]
    ]
    if not present:  # only kind "none": nothing to check or compute
        columns = _limit_columns(len(df), levels)
        for column in columns.values():
            column.fill(np.nan)
        return assign_columns(df, columns)
    if not _counts_pass_checks(df, numerator, denominator, multiplier, kinds):
        # Something is wrong: repeat the checks kind by kind as each method
        # would, so that the message (and which problem is reported first)
        # is that method's.
        for each_kind, method_function in present:
            rows = kinds == INDICATOR_KINDS.index(each_kind)
            mask = None if rows.all() else rows
            _validated_counts(
                df, numerator, denominator, method_function,
                proportion=each_kind == "proportion", whole_numbers=each_kind != "proportion",
                rows=mask,
            )
            multiplier_values(df, multiplier, method_function, rows=mask)
    x = numeric_column(df, numerator, function)
    n = numeric_column(df, denominator, function)
    # Checked above on the rows that have limits (the others are not read).
    scale = numeric_column(df, multiplier, function) if isinstance(multiplier, str) else float(
        multiplier)
    columns = _limit_columns(len(df), levels)
    _fill_limits(columns, x, n, scale, levels, kinds=kinds)
    return assign_columns(df, columns)
