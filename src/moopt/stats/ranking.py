"""Linear-interpolation quantiles of values sorted group by group.

Shared by the funnel plots (:mod:`moopt.stats.funnels`: winsorising bounds
and per-group output rows). Percentiles, deciles, quartiles and 12-month
rolling values of the indicator table are computed in one place, the
indicator engine (:meth:`moopt.indicators.engine.IndicatorEngine.benchmarked`
and :meth:`~moopt.indicators.engine.IndicatorEngine.with_rolling`); the
NumPy implementations that used to live here check the engine from
``tests/oracles``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _quantile_positions(
    counts: np.ndarray, fractions: Sequence[float]
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Groups with values, and for each fraction the positions below/above and the weight."""
    has = counts > 0
    last = counts[has] - 1
    positions = []
    for fraction in fractions:
        position = last * fraction
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, last)
        positions.append((below, above, position - below))
    return has, positions


def _quantiles_from_sorted(
    sorted_values: np.ndarray, starts: np.ndarray, counts: np.ndarray, fractions: Sequence[float]
) -> np.ndarray:
    """Linear-interpolation quantiles per group, shape (n_groups, len(fractions)).

    ``sorted_values`` need only be in order at the positions each quantile
    reads (see :func:`moopt.stats.funnels._winsorising_bounds`). Matches
    ``numpy.quantile(method="linear")`` including its two-sided lerp; groups
    without values give NaN.

    Examples
    --------
    Two groups, [1, 2, 3, 4] and [10], each already sorted:

    >>> import numpy as np
    >>> values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    >>> starts, counts = np.array([0, 4]), np.array([4, 1])
    >>> _quantiles_from_sorted(values, starts, counts, [0.1, 0.5]).tolist()
    [[1.3, 2.5], [10.0, 10.0]]
    """
    out = np.full((len(counts), len(fractions)), np.nan)
    has, positions = _quantile_positions(counts, fractions)
    if not has.any():
        return out
    start = starts[has]
    for j, (below, above, t) in enumerate(positions):
        a = sorted_values[start + below]
        b = sorted_values[start + above]
        diff = b - a
        out[has, j] = np.where(t >= 0.5, b - diff * (1.0 - t), a + diff * t)
    return out


def _first_row_of_each_group(codes: np.ndarray) -> np.ndarray:
    """Position of each group's first row, in code order.

    group_codes numbers groups in order of first appearance, so a row starts
    a new group exactly where the running maximum of the codes goes up.
    """
    if len(codes) == 0:
        return np.empty(0, dtype=np.int64)
    running = np.maximum.accumulate(codes)
    new = np.empty(len(codes), dtype=bool)
    new[0] = True
    np.greater(running[1:], running[:-1], out=new[1:])
    return np.flatnonzero(new)
