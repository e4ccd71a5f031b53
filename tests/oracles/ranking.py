"""Test oracle: percentiles and national deciles with NumPy (OpenPrescribing conventions).

The builds compute these in the indicator engine
(:meth:`moopt.indicators.engine.IndicatorEngine.benchmarked`, Ibis on
DuckDB); this independent NumPy implementation, once part of
``moopt.stats``, now lives under ``tests/`` to check the engine's numbers
(``tests/test_engine_spread.py``) and is itself checked against worked
values, pandas ranks and ``numpy.quantile`` (``tests/stats``).

An organisation's percentile in a period is its position among organisations
of the same level with a value for the same indicator, period and period
type: ``(rank_min - 1) / (n - 1) x 100`` where ``rank_min`` gives tied values
the lowest rank, as SQL ``PERCENT_RANK``. National deciles are the linearly
interpolated 10th..90th percentiles of the same values (``PERCENTILE_CONT``,
NumPy's default ``linear`` method).

Rows are brought together by group with one radix sort of integer group
codes, then each group is sorted on its own (small sorts stay in cache) and
its percentiles are written straight to its rows; the deciles are read off
the same sorted values. The loop is over groups (a few thousand for a
national run), never over rows, and runs of groups are shared among threads
(:func:`moopt.stats._validate.run_parallel`): millions of rows take well
under a second.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from moopt.stats._validate import (
    DEFAULT_GROUP_COLUMNS,
    assign_columns,
    check_columns,
    check_dataframe,
    check_group_columns,
    gather,
    group_chunks,
    group_codes,
    group_layout,
    map_blocks,
    numeric_column,
    run_parallel,
)

# The quantile helpers stay in the package: the funnel plots use them.
from moopt.stats.ranking import (
    _first_row_of_each_group,
    _quantiles_from_sorted,
)

DECILES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
# Groups at least this large on average are sorted one by one (see below).
_MIN_AVERAGE_GROUP = 64


# --------------------------------------------------------------------------- core


def _radix_dtype(n_groups: int) -> np.dtype:
    """Smallest unsigned type for group codes (8- and 16-bit ones sort by radix)."""
    return np.min_scalar_type(max(n_groups - 1, 0))


def _group_starts(counts: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


def _present(
    codes: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Row positions with a value (None: every row), and those rows' values and codes."""
    missing = np.isnan(values)
    if not missing.any():
        return None, values, codes
    present = np.flatnonzero(~missing)
    return present, values[present], codes[present]


def _sort_within_groups(
    codes: np.ndarray, values: np.ndarray, n_groups: int, with_rows: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """Sort the non-missing values by group, then by value.

    Returns the original row positions in sorted order (None when
    ``with_rows`` is False and only the sorted values are wanted), the sorted
    values, each group's start in the sorted arrays and each group's number
    of non-missing values.
    """
    present, v, g = _present(codes, values)
    counts = np.bincount(g, minlength=n_groups)
    starts = _group_starts(counts)
    if n_groups * _MIN_AVERAGE_GROUP <= len(v):
        # Few, large groups (the usual indicator x level x period): bring each
        # group together with a radix sort of the codes, then sort each
        # group's slice on its own. Small sorts stay in cache, which beats one
        # global sort several times over; the loop is over groups, never rows.
        by_group = np.argsort(g.astype(_radix_dtype(n_groups), copy=False), kind="stable")
        grouped = v[by_group]
        order = by_group  # reordered group by group below

        def sort_groups(groups: range) -> None:  # runs of groups share no rows: threads
            for start, count in zip(starts[groups].tolist(), counts[groups].tolist()):
                stop = start + count
                if count < 2:
                    continue
                if not with_rows:
                    grouped[start:stop].sort()
                    continue
                within = grouped[start:stop].argsort()
                order[start:stop] = order[start:stop][within]
                grouped[start:stop] = grouped[start:stop][within]

        run_parallel([functools.partial(sort_groups, chunk)
                      for chunk in group_chunks(starts, counts)])
        if not with_rows:
            return None, grouped, starts, counts
        sorted_values = grouped
    else:
        by_value = np.argsort(v)
        order = by_value[np.argsort(g[by_value].astype(_radix_dtype(n_groups), copy=False),
                                    kind="stable")]
        sorted_values = v[order]
    rows = None if not with_rows else (order if present is None else present[order])
    return rows, sorted_values, starts, counts


def _percentiles_within_groups(
    codes: np.ndarray, values: np.ndarray, n_groups: int, workspace: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Percentile of every row among its group, plus the sorted values per group.

    Returns the percentile column (NaN where the value is missing or the
    group has one value), the values sorted by group then value (each
    group's missing values after its numbers), each group's start in them,
    and each group's number of non-missing values. With few, large groups
    the percentiles are worked out group by group right after each group's
    sort, while its values are in cache, and written straight to their
    rows: nothing the size of the table is allocated on the way. The sorted
    values are written into ``workspace`` when given (a float array of the
    table's length that the caller overwrites later).
    """
    size = len(values)
    if n_groups * _MIN_AVERAGE_GROUP > int(np.count_nonzero(~np.isnan(values))):
        rows, sorted_values, starts, counts = _sort_within_groups(codes, values, n_groups)
        percentile = np.full(size, np.nan)
        percentile[rows] = _percentiles_from_sorted(sorted_values, starts, counts)
        return percentile, sorted_values, starts, counts
    by_group, starts, sizes = group_layout(codes, n_groups)
    grouped = np.empty(size) if workspace is None else workspace
    gather(values, by_group, grouped)
    percentile = np.empty(size)
    counts = np.zeros(n_groups, dtype=np.int64)  # non-missing values per group

    def rank_groups(groups: range) -> None:
        # Each group is sorted on its own (small sorts stay in cache), then
        # its percentiles are written straight to its rows. Groups never
        # share rows, so chunks of groups can run on separate threads.
        positions = np.arange(int(sizes[groups].max(initial=0)))
        new_value = np.empty(len(positions), dtype=bool)
        for group in groups:
            start = int(starts[group])
            stop = start + int(sizes[group])
            within = grouped[start:stop].argsort()  # NumPy sorts NaN last
            ordered = grouped[start:stop][within]
            grouped[start:stop] = ordered
            count = int(ordered.searchsorted(np.nan))  # values before the first NaN
            counts[group] = count
            rows = by_group[start:stop][within]
            percentile[rows[count:]] = np.nan  # missing values
            if count < 2:
                percentile[rows[:count]] = np.nan  # one value: no percentile
                continue
            # rank_min - 1: the position where each run of equal values starts
            new = new_value[:count]
            new[0] = True
            np.not_equal(ordered[1:count], ordered[:count - 1], out=new[1:])
            if new.all():  # no ties
                rank_min_minus_one = positions[:count]
            else:
                rank_min_minus_one = np.maximum.accumulate(np.where(new, positions[:count], 0))
            percentile[rows[:count]] = rank_min_minus_one / (count - 1.0) * 100.0

    run_parallel([functools.partial(rank_groups, chunk)
                  for chunk in group_chunks(starts, sizes)])
    return percentile, grouped, starts, counts


def _percentiles_from_sorted(
    sorted_values: np.ndarray, starts: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """(rank_min - 1)/(n - 1) x 100 for each sorted position; NaN when n == 1."""
    size = len(sorted_values)
    if size == 0:
        return np.empty(0)
    # A block is a run of equal values within a group; its first position
    # gives every member its lowest rank.
    new_block = np.empty(size, dtype=bool)
    new_block[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=new_block[1:])
    new_block[starts[counts > 0]] = True
    block_starts = np.flatnonzero(new_block)
    block_sizes = np.diff(block_starts, append=size)
    rank_min_minus_one = np.repeat(block_starts, block_sizes)
    rank_min_minus_one -= np.repeat(starts, counts)
    # n - 1 per group; NaN where a group has a single value.
    n_minus_one = counts.astype(np.float64) - 1.0
    n_minus_one[counts <= 1] = np.nan
    out = rank_min_minus_one / np.repeat(n_minus_one, counts)
    out *= 100.0
    return out


def _prepare(
    df: pd.DataFrame,
    value: str,
    group_columns: Sequence[str] | str | None,
    function: str,
    in_order_of_appearance: bool = True,
) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    check_dataframe(df, function)
    groups = check_group_columns(group_columns)
    check_columns(df, [value, *groups], function)
    values = numeric_column(df, value, function)
    if np.isinf(values).any():
        raise ValueError(
            f"{function}: column {value!r} has infinite values; replace them with NaN "
            "(e.g. a value with a zero denominator) before ranking."
        )
    codes, n_groups = group_codes(df, groups, function, in_order_of_appearance)
    return values, codes, n_groups, groups


def _check_deciles(deciles: Sequence[float], function: str) -> list[float]:
    out = list(deciles)
    if not out or any(not 0 <= d <= 100 for d in out):
        raise ValueError(f"{function}: deciles must be percentages between 0 and 100, got {out}.")
    return out


def _decile_name(d: float) -> str:
    return f"decile_{d:g}".replace(".", "_")


# --------------------------------------------------------------------------- public


def assign_percentiles(
    df: pd.DataFrame,
    value: str = "value",
    group_columns: Sequence[str] | str | None = DEFAULT_GROUP_COLUMNS,
    output: str = "percentile",
) -> pd.DataFrame:
    """Add each organisation's percentile among its peers of the same level.

    Parameters
    ----------
    df : pandas.DataFrame
        The tidy indicator table (one row per indicator, organisation, period).
    value : str, default "value"
        Column ranked. Missing values stay missing and are not counted.
    group_columns : sequence of str, default ("indicator_id", "org_level", "period", "period_type")
        Rows sharing these keys are ranked together.
    output : str, default "percentile"
        Name of the new column.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with a float column ``output`` between 0 and 100.

    Raises
    ------
    ValueError
        If a column is missing, ``value`` is not numeric or holds infinities.

    Notes
    -----
    ``percentile = (rank_min - 1) / (n - 1) x 100`` among the ``n`` rows of
    the group with a value; ties share the lowest rank. The lowest value
    gets 0 and the highest 100. A group with a single value (for example
    England, or one organisation with data) gets NaN rather than SQL
    ``PERCENT_RANK``'s 0, because a percentile among one organisation says
    nothing and 0 would read as "lowest in the country".

    References
    ----------
    OpenPrescribing measure calculations (``PERCENT_RANK`` over organisations
    of the same type each month), Bennett Institute for Applied Data Science.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"value": [.12, .09, .15, .09, .14, .075, .15, .08, .10, .16, .11, .13]})
    >>> out = assign_percentiles(df, group_columns=None)
    >>> out["percentile"].round(6).tolist()[:3]
    [54.545455, 18.181818, 81.818182]
    >>> float(out["percentile"].min()), float(out["percentile"].max())
    (0.0, 100.0)
    """
    function = "assign_percentiles"
    values, codes, n_groups, _ = _prepare(df, value, group_columns, function, False)
    percentile, _, _, _ = _percentiles_within_groups(codes, values, n_groups)
    return assign_columns(df, {output: percentile})


def calculate_deciles(
    df: pd.DataFrame,
    value: str = "value",
    group_columns: Sequence[str] | str | None = DEFAULT_GROUP_COLUMNS,
    deciles: Sequence[float] = DECILES,
) -> pd.DataFrame:
    """National deciles per group: one row per group.

    Parameters
    ----------
    df : pandas.DataFrame
        The tidy indicator table.
    value : str, default "value"
        Column summarised; missing values are ignored.
    group_columns : sequence of str, default ("indicator_id", "org_level", "period", "period_type")
        One output row per combination of these keys.
    deciles : sequence of float, default (10, 20, ..., 90)
        Percentages to compute; each becomes a column ``decile_<d>``.

    Returns
    -------
    pandas.DataFrame
        The group columns, ``n_organisations`` (rows with a value) and the
        ``decile_<d>`` columns (NaN for groups without values), in order of
        first appearance of the group in ``df``.

    Raises
    ------
    ValueError
        If a column is missing, ``value`` is not numeric, or a decile is
        outside 0..100.

    Notes
    -----
    Linear interpolation between order statistics: with sorted values
    ``v[0..n-1]`` the q-th quantile is at position ``h = (n - 1) q``,
    ``v[floor h] + (h - floor h)(v[floor h + 1] - v[floor h])``, the same as
    ``numpy.quantile`` and SQL ``PERCENTILE_CONT``.

    References
    ----------
    Hyndman RJ, Fan Y (1996). Sample quantiles in statistical packages.
    The American Statistician 50:361-365 (definition 7).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"value": [.12, .09, .15, .09, .14, .075, .15, .08, .10, .16, .11, .13]})
    >>> calculate_deciles(df, group_columns=None).iloc[0, 1:].round(6).tolist()
    [0.081, 0.09, 0.093, 0.104, 0.115, 0.126, 0.137, 0.148, 0.15]
    """
    function = "calculate_deciles"
    wanted = _check_deciles(deciles, function)
    values, codes, n_groups, groups = _prepare(df, value, group_columns, function)
    _, sorted_values, starts, counts = _sort_within_groups(
        codes, values, n_groups, with_rows=False
    )
    table = _quantiles_from_sorted(sorted_values, starts, counts, [d / 100 for d in wanted])
    if groups:
        first = _first_row_of_each_group(codes)
        out = df.iloc[first][groups].reset_index(drop=True)
    else:
        out = pd.DataFrame(index=range(n_groups))
    out["n_organisations"] = counts
    for j, d in enumerate(wanted):
        out[_decile_name(d)] = table[:, j]
    return out


def assign_deciles(
    df: pd.DataFrame,
    value: str = "value",
    group_columns: Sequence[str] | str | None = DEFAULT_GROUP_COLUMNS,
    deciles: Sequence[float] = DECILES,
) -> pd.DataFrame:
    """Add the group's national deciles to every row (``decile_10`` ... ``decile_90``).

    Parameters and method as :func:`calculate_deciles`; the deciles of each
    row's group are repeated on the row, as the tidy indicator table expects.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"g": ["a", "a", "a", "b"], "value": [1.0, 2.0, 3.0, 7.0]})
    >>> assign_deciles(df, group_columns="g", deciles=[50])["decile_50"].tolist()
    [2.0, 2.0, 2.0, 7.0]
    """
    return assign_percentiles_and_deciles(
        df, value, group_columns, deciles=deciles, percentile=None
    )


def assign_percentiles_and_deciles(
    df: pd.DataFrame,
    value: str = "value",
    group_columns: Sequence[str] | str | None = DEFAULT_GROUP_COLUMNS,
    deciles: Sequence[float] = DECILES,
    percentile: str | None = "percentile",
) -> pd.DataFrame:
    """Add percentiles and national deciles in one pass (one sort instead of two).

    Same definitions as :func:`assign_percentiles` and :func:`calculate_deciles`.
    ``percentile=None`` skips the percentile column.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"value": [3.0, 1.0, 2.0, None]})
    >>> out = assign_percentiles_and_deciles(df, group_columns=None, deciles=[50])
    >>> out["percentile"].tolist(), out["decile_50"].tolist()
    ([100.0, 0.0, 50.0, nan], [2.0, 2.0, 2.0, 2.0])
    """
    function = "assign_percentiles_and_deciles"
    wanted = _check_deciles(deciles, function)
    values, codes, n_groups, _ = _prepare(df, value, group_columns, function, False)
    new_columns: dict[str, np.ndarray] = {}
    # The last decile column holds the sorted values until the deciles are known.
    last_decile = np.empty(len(df))
    if percentile is not None:
        new_columns[percentile], sorted_values, starts, counts = _percentiles_within_groups(
            codes, values, n_groups, workspace=last_decile
        )
    else:
        _, sorted_values, starts, counts = _sort_within_groups(
            codes, values, n_groups, with_rows=False
        )
    table = _quantiles_from_sorted(sorted_values, starts, counts, [d / 100 for d in wanted])
    # One contiguous row of the table per decile: taking from it by group
    # code is several times faster than fancy-indexing a column of the table.
    by_decile = np.ascontiguousarray(table.T)
    outputs = [np.empty(len(df)) for _ in wanted[:-1]] + [last_decile]

    def spread(block: slice) -> None:
        # Every decile column of a block from one read of its group codes.
        block_codes = codes[block]
        for j, out in enumerate(outputs):
            by_decile[j].take(block_codes, out=out[block], mode="clip")

    map_blocks(spread, len(df))
    for d, out in zip(wanted, outputs):
        new_columns[_decile_name(d)] = out
    return assign_columns(df, new_columns)
