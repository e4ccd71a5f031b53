"""Comparison of each organisation's value with a benchmark (England or peers).

The comparison reads the confidence limits added by :mod:`moopt.stats.intervals`:
an organisation is "higher" than the benchmark when its lower limit is above
it, "lower" when its upper limit is below it, and "similar" otherwise. The
improvement direction of the indicator then turns higher/lower into
better/worse (neutral indicators stay higher/lower).

These flags say "statistically different", not "important": with large
denominators and overdispersed prescribing data nearly every area differs
from England. Pages that show them should say so, and should lead with the
overdispersion-adjusted funnel (:mod:`moopt.stats.funnels`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from moopt.stats._validate import (
    DEFAULT_CONFIDENCE,
    assign_columns,
    categorical_from_codes,
    check_columns,
    check_confidence,
    check_dataframe,
    confidence_label,
    direction_codes,
    isin_column,
    map_blocks,
    numeric_column,
)
from moopt.stats.intervals import lower_column, upper_column

COMPARISON_CATEGORIES: tuple[str, ...] = ("lower", "similar", "higher")
ASSESSMENT_CATEGORIES: tuple[str, ...] = ("worse", "similar", "better", "lower", "higher")


def comparison_column(prefix: str, level: float) -> str:
    """Name of the comparison column, e.g. ``england_comparison_95``."""
    return f"{prefix}_comparison_{confidence_label(level)}"


def assessment_column(prefix: str, level: float) -> str:
    """Name of the assessment column, e.g. ``england_assessment_99_8``."""
    return f"{prefix}_assessment_{confidence_label(level)}"


def calculate_comparison(
    df: pd.DataFrame,
    benchmark: str = "england_value",
    improvement_direction: str = "improvement_direction",
    confidence: float | Sequence[float] = DEFAULT_CONFIDENCE,
    prefix: str = "england",
    org_level: str | None = "org_level",
    benchmark_levels: Sequence[str] = ("england",),
) -> pd.DataFrame:
    """Compare each row's confidence interval with a benchmark value.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows with ``lower_<level>`` / ``upper_<level>`` columns (see
        :func:`moopt.stats.intervals.calculate_intervals`) and a benchmark.
    benchmark : str, default "england_value"
        Column with the benchmark on the same scale as the value: the England
        value, or a peer-group value (:func:`moopt.stats.peers.calculate_peer_benchmark`).
    improvement_direction : str, default "improvement_direction"
        "increase", "decrease" or "neutral" for every row, or a column name
        holding one of those per row.
    confidence : float or sequence of float, default (0.95, 0.998)
        Levels whose limit columns are compared; they must already exist.
    prefix : str, default "england"
        Start of the output column names ("peer" for a peer benchmark).
    org_level : str or None, default "org_level"
        Column with the organisation level. Rows whose level is in
        ``benchmark_levels`` are the benchmark itself and are not compared.
        ``None`` compares every row.
    benchmark_levels : sequence of str, default ("england",)
        Levels that are never compared (an organisation is never compared
        with itself).

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with, for each level, ``<prefix>_comparison_<level>``
        in {"higher", "similar", "lower"} and ``<prefix>_assessment_<level>``
        in {"better", "similar", "worse"} (or {"higher", "similar", "lower"}
        for neutral indicators). Both are categorical; rows that cannot be
        compared (missing limits or benchmark, or the benchmark's own row)
        are missing.

    Raises
    ------
    ValueError
        If a limit column, the benchmark or the direction column is missing,
        or a direction is not one of the three words.

    Notes
    -----
    "Higher" when lower limit > benchmark, "lower" when upper limit <
    benchmark, otherwise "similar": a limit exactly equal to the benchmark
    counts as similar. Improvement direction "increase" maps higher to
    better and lower to worse; "decrease" the reverse; "neutral" keeps
    higher/lower. A difference that is statistically significant is not
    necessarily important; say so wherever the flag is shown.

    References
    ----------
    Public Health England. Fingertips: comparisons with a benchmark using
    95% and 99.8% confidence intervals (technical guidance).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"org_level": ["sub_icb", "sub_icb", "england"],
    ...                    "lower_95": [0.25, 0.10, 0.18], "upper_95": [0.30, 0.21, 0.22],
    ...                    "england_value": [0.2, 0.2, 0.2]})
    >>> out = calculate_comparison(df, improvement_direction="decrease", confidence=0.95)
    >>> out["england_comparison_95"].tolist()
    ['higher', 'similar', nan]
    >>> out["england_assessment_95"].tolist()
    ['worse', 'similar', nan]
    """
    function = "calculate_comparison"
    check_dataframe(df, function)
    levels = check_confidence(confidence, function)
    needed = [benchmark] + [c for lv in levels for c in (lower_column(lv), upper_column(lv))]
    if org_level is not None:
        needed.append(org_level)
    check_columns(df, needed, function)
    target = numeric_column(df, benchmark, function)
    direction = direction_codes(df, improvement_direction, function)
    benchmark_rows = None
    if org_level is not None:
        benchmark_rows = isin_column(df, org_level, list(benchmark_levels))

    # Assessment code for each (side, direction) pair, side and direction in -1/0/+1.
    assessment_lookup = np.array(
        [_assessment_codes(np.array([side]), np.array([direction]), np.array([True]))[0]
         for side in (-1, 0, 1) for direction in (-1, 0, 1)],
        dtype=np.int8,
    )
    limits = [(numeric_column(df, lower_column(level), function),
               numeric_column(df, upper_column(level), function)) for level in levels]
    comparison_codes = [np.empty(len(df), dtype=np.int8) for _ in levels]
    assessment_codes = [np.empty(len(df), dtype=np.int8) for _ in levels]

    def compare_block(block: slice) -> None:
        target_b = target[block]
        comparable = np.isfinite(target_b)
        if benchmark_rows is not None:
            comparable &= ~benchmark_rows[block]
        direction_index = direction[block] + np.int8(1)
        for i, (lower, upper) in enumerate(limits):
            lower_b, upper_b = lower[block], upper[block]
            usable = comparable & np.isfinite(lower_b) & np.isfinite(upper_b)
            # side: -1 lower, 0 similar, +1 higher (higher wins if both could hold)
            higher = lower_b > target_b
            below = upper_b < target_b
            below &= ~higher
            side_index = higher.view(np.int8) - below.view(np.int8) + np.int8(1)  # 0, 1, 2
            comparison_codes[i][block] = np.where(usable, side_index, np.int8(-1))
            assessment = assessment_lookup[side_index * np.int8(3) + direction_index]
            assessment[~usable] = -1
            assessment_codes[i][block] = assessment

    map_blocks(compare_block, len(df))
    new_columns = {}
    for i, level in enumerate(levels):
        new_columns[comparison_column(prefix, level)] = categorical_from_codes(
            comparison_codes[i], COMPARISON_CATEGORIES
        )
        new_columns[assessment_column(prefix, level)] = categorical_from_codes(
            assessment_codes[i], ASSESSMENT_CATEGORIES
        )
    return assign_columns(df, new_columns)


def _assessment_codes(side: np.ndarray, direction: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Codes into ASSESSMENT_CATEGORIES from side (-1/0/1) and direction (-1/0/1)."""
    oriented = side * direction  # +1 better, -1 worse, 0 similar or neutral
    codes = np.select(
        [side == 0, direction == 0, oriented > 0, oriented < 0],
        [1, np.where(side > 0, 4, 3), 2, 0],
        default=-1,
    )
    return np.where(usable, codes, -1)
