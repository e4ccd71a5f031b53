"""Cost-saving opportunity for cost-based indicators (OpenPrescribing style).

"What would this organisation spend if its indicator were at the national
10th (or 50th) percentile, with the same overall volume and its own unit
costs?" The difference from what it actually spent is the potential saving.
It is an opportunity, not a target: the site must present it as such.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from moopt.stats._validate import (
    DEFAULT_GROUP_COLUMNS,
    assign_columns,
    check_columns,
    check_dataframe,
    check_finite_or_missing,
    check_group_columns,
    check_non_negative,
    check_numerator_within_denominator,
    group_codes,
    multiplier_values,
    numeric_column,
)


def saving_column(target: str, prefix: str = "cost_saving") -> str:
    """'decile_10' -> 'cost_saving_10'; any other target column name is appended."""
    suffix = target[len("decile_"):] if target.startswith("decile_") else target
    return f"{prefix}_{suffix}"


def calculate_cost_savings(
    df: pd.DataFrame,
    numerator: str = "numerator",
    denominator: str = "denominator",
    numerator_cost: str | None = None,
    denominator_cost: str | None = None,
    targets: Sequence[str] = ("decile_10", "decile_50"),
    multiplier: float | str = "multiplier",
    group_columns: Sequence[str] | str | None = DEFAULT_GROUP_COLUMNS,
    clip_negative: bool = False,
) -> pd.DataFrame:
    """Add the potential saving if the organisation's value were at a target percentile.

    Parameters
    ----------
    df : pandas.DataFrame
        The tidy indicator table with target columns (e.g. ``decile_10``,
        which the indicator engine puts on every row of ``indicator_values``).
    numerator, denominator : str
        The indicator's numerator and denominator (value = numerator /
        denominator x multiplier).
    numerator_cost, denominator_cost : str or None
        For a ratio of quantities (e.g. items of expensive products / items
        of the whole class), the cost of the numerator products and of all
        the denominator products. Leave both None when the numerator itself
        is a cost (e.g. pounds per 1,000 patients).
    targets : sequence of str, default ("decile_10", "decile_50")
        Columns holding target values on the value scale. For an indicator
        where higher is cheaper, pass the upper deciles instead.
    multiplier : float or str, default "multiplier"
        Scale of the value (and of the targets), or a column name.
    group_columns : sequence of str, default ("indicator_id", "org_level", "period", "period_type")
        Groups over which national unit costs are pooled for the fallback
        (see Notes).
    clip_negative : bool, default False
        Report organisations already better than the target as 0 instead of
        a negative number.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with one ``cost_saving_<d>`` column per target
        (``cost_saving_10``, ``cost_saving_50``) in the currency of the cost
        columns. Negative means the organisation already spends less than it
        would at the target.

    Raises
    ------
    ValueError
        For missing or non-numeric columns, negative quantities or costs, a
        numerator above its denominator (ratio form), only one of the two
        cost columns, or a numerator cost above the denominator cost.

    Notes
    -----
    Let the organisation prescribe N units of the numerator products and
    D - N units of the other products in the denominator, spending C_num and
    C_den - C_num on them. Its unit costs are ``c_n = C_num / N`` and
    ``c_o = (C_den - C_num) / (D - N)``. At the target ratio t (target /
    multiplier) with the same total volume D it would prescribe tD and
    (1 - t)D units, costing ``tD c_n + (1 - t) D c_o``. The saving is

    ``C_den - [tD c_n + (1 - t)D c_o] = (N - tD)(c_n - c_o)``,

    the form OpenPrescribing uses. When N = 0 (or D = N) the organisation has
    no unit cost of its own for that side, so the pooled unit cost of its
    group (sum of costs / sum of units) is used instead, as OpenPrescribing
    falls back to national figures.

    When the numerator is itself a cost (no cost columns), the saving is
    ``numerator - t x denominator``: spending now minus spending at the
    target rate for the same population.

    References
    ----------
    OpenPrescribing measure cost savings (Bennett Institute for Applied Data
    Science, University of Oxford): spending at the 10th percentile priced
    at the organisation's own unit costs.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"indicator_id": ["X"], "org_level": ["sub_icb"], "period": [1],
    ...     "period_type": ["month"], "numerator": [40.0], "denominator": [100.0],
    ...     "numerator_cost": [400.0], "denominator_cost": [520.0],
    ...     "multiplier": [100.0], "decile_10": [10.0]})
    >>> calculate_cost_savings(df, numerator_cost="numerator_cost",
    ...     denominator_cost="denominator_cost", targets=["decile_10"])["cost_saving_10"].tolist()
    [240.0]
    """
    function = "calculate_cost_savings"
    check_dataframe(df, function)
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise ValueError(f"{function}: give at least one target column, e.g. 'decile_10'.")
    if (numerator_cost is None) != (denominator_cost is None):
        raise ValueError(
            f"{function}: give both numerator_cost and denominator_cost (ratio of quantities) "
            "or neither (the numerator is already a cost)."
        )
    groups = check_group_columns(group_columns)
    costs = [c for c in (numerator_cost, denominator_cost) if c is not None]
    check_columns(df, [numerator, denominator, *costs, *targets], function)
    x = numeric_column(df, numerator, function)
    n = numeric_column(df, denominator, function)
    for values, name in ((x, numerator), (n, denominator)):
        check_finite_or_missing(values, name, df, function)
        check_non_negative(values, name, df, function)
    scale = multiplier_values(df, multiplier, function)

    new_columns = {}
    if numerator_cost is None:
        for target in targets:
            rate = numeric_column(df, target, function) / scale
            saving = x - rate * n
            new_columns[saving_column(target)] = np.maximum(saving, 0) if clip_negative else saving
        return assign_columns(df, new_columns)

    check_columns(df, groups, function)
    check_numerator_within_denominator(x, n, (numerator, denominator), df, function)
    c_num = numeric_column(df, numerator_cost, function)
    c_den = numeric_column(df, denominator_cost, function)
    for values, name in ((c_num, numerator_cost), (c_den, denominator_cost)):
        check_finite_or_missing(values, name, df, function)
        check_non_negative(values, name, df, function)
    check_numerator_within_denominator(c_num, c_den, (numerator_cost, denominator_cost), df,
                                       function)
    codes, n_groups = group_codes(df, groups, function)
    usable = np.isfinite(x) & np.isfinite(n) & np.isfinite(c_num) & np.isfinite(c_den)

    def pooled(cost: np.ndarray, units: np.ndarray) -> np.ndarray:
        total_cost = np.bincount(codes, weights=np.where(usable, cost, 0.0), minlength=n_groups)
        total_units = np.bincount(codes, weights=np.where(usable, units, 0.0),
                                  minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total_units > 0, total_cost / total_units, np.nan)[codes]

    other_units = n - x
    other_cost = c_den - c_num
    with np.errstate(invalid="ignore", divide="ignore"):
        unit_cost_num = np.where(x > 0, c_num / x, pooled(c_num, x))
        unit_cost_other = np.where(other_units > 0, other_cost / other_units,
                                   pooled(other_cost, other_units))
    for target in targets:
        ratio = numeric_column(df, target, function) / scale
        saving = (x - ratio * n) * (unit_cost_num - unit_cost_other)
        saving = np.where(usable, saving, np.nan)
        new_columns[saving_column(target)] = np.maximum(saving, 0) if clip_negative else saving
    return assign_columns(df, new_columns)
