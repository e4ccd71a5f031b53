"""Input checks and small shared helpers for :mod:`moopt.stats`.

Every public function in the package checks its inputs here before doing any
arithmetic, so that a user sees one plain-English ``ValueError`` naming the
column and the problem instead of a NumPy warning or a silent NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

IMPROVEMENT_DIRECTIONS: tuple[str, ...] = ("increase", "decrease", "neutral")
INDICATOR_KINDS: tuple[str, ...] = ("proportion", "rate", "ratio", "none")
DEFAULT_GROUP_COLUMNS: tuple[str, ...] = ("indicator_id", "org_level", "period", "period_type")
DEFAULT_CONFIDENCE: tuple[float, ...] = (0.95, 0.998)


def check_dataframe(df: object, function: str) -> pd.DataFrame:
    """Raise unless ``df`` is a pandas DataFrame."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(
            f"{function} needs a pandas DataFrame as its first argument, "
            f"not {type(df).__name__}."
        )
    return df


def check_columns(df: pd.DataFrame, columns: Iterable[str], function: str) -> None:
    """Raise if any of ``columns`` is missing from ``df``, listing what is there."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        shown = ", ".join(map(repr, list(df.columns)[:20]))
        raise ValueError(
            f"{function}: column(s) {', '.join(map(repr, missing))} not found in the data. "
            f"Available columns: {shown}."
        )


def numeric_column(df: pd.DataFrame, column: str, function: str) -> np.ndarray:
    """Return ``df[column]`` as a float64 array, or raise if it is not numeric."""
    series = df[column]
    if pd.api.types.is_bool_dtype(series.dtype) or not pd.api.types.is_numeric_dtype(series.dtype):
        raise ValueError(
            f"{function}: column {column!r} must hold numbers but has dtype {series.dtype}. "
            "Convert it with pandas.to_numeric first."
        )
    if series.dtype == np.float64:
        return series.to_numpy()  # NaN already means missing; no copy needed
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _first_rows(mask: np.ndarray, df: pd.DataFrame, limit: int = 3) -> str:
    positions = np.flatnonzero(mask)[:limit]
    return ", ".join(str(df.index[p]) for p in positions)


def check_non_negative(values: np.ndarray, column: str, df: pd.DataFrame, function: str) -> None:
    """Raise if any value is negative (NaN is allowed and means 'missing')."""
    bad = values < 0
    if bad.any():
        raise ValueError(
            f"{function}: column {column!r} has {int(bad.sum())} negative value(s) "
            f"(first at index {_first_rows(bad, df)}); counts and denominators cannot be negative."
        )


def check_finite_or_missing(
    values: np.ndarray, column: str, df: pd.DataFrame, function: str
) -> None:
    """Raise on +/- infinity, which is never a valid count or value."""
    bad = np.isinf(values)
    if bad.any():
        raise ValueError(
            f"{function}: column {column!r} has {int(bad.sum())} infinite value(s) "
            f"(first at index {_first_rows(bad, df)})."
        )


def check_numerator_within_denominator(
    numerator: np.ndarray,
    denominator: np.ndarray,
    names: tuple[str, str],
    df: pd.DataFrame,
    function: str,
) -> None:
    """Raise if a proportion's numerator exceeds its denominator."""
    bad = numerator > denominator
    if bad.any():
        raise ValueError(
            f"{function}: {int(bad.sum())} row(s) have {names[0]!r} greater than {names[1]!r} "
            f"(first at index {_first_rows(bad, df)}), which is impossible for a proportion. "
            "Check the indicator definition, or use kind='rate' if it is not a proportion."
        )


def check_whole_numbers(values: np.ndarray, column: str, df: pd.DataFrame, function: str) -> None:
    """Raise if Poisson methods are asked to treat non-integers as counts."""
    finite = np.isfinite(values)
    bad = np.zeros(values.shape, dtype=bool)
    bad[finite] = np.abs(values[finite] - np.round(values[finite])) > 1e-9 * np.maximum(
        1.0, np.abs(values[finite])
    )
    if bad.any():
        raise ValueError(
            f"{function}: column {column!r} has {int(bad.sum())} non-whole value(s) "
            f"(first at index {_first_rows(bad, df)}) but Poisson intervals need counts. "
            "ADQs, DDDs and costs are not counts: use kind='none' for them."
        )


def check_confidence(confidence: float | Sequence[float], function: str) -> tuple[float, ...]:
    """Return confidence levels as a tuple, each strictly between 0 and 1."""
    levels = (confidence,) if np.isscalar(confidence) else tuple(confidence)
    if len(levels) == 0:
        raise ValueError(f"{function}: give at least one confidence level, e.g. 0.95.")
    out = []
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)):
            raise ValueError(f"{function}: confidence level {level!r} is not a number.")
        if not 0.0 < float(level) < 1.0:
            raise ValueError(
                f"{function}: confidence level {level!r} must be between 0 and 1 "
                "(e.g. 0.95 for 95%, 0.998 for 99.8%)."
            )
        out.append(float(level))
    if len(set(confidence_label(x) for x in out)) != len(out):
        raise ValueError(f"{function}: confidence levels {levels!r} repeat each other.")
    return tuple(out)


def confidence_label(level: float) -> str:
    """Column suffix for a confidence level: 0.95 -> '95', 0.998 -> '99_8'."""
    return f"{level * 100:.10g}".replace(".", "_")


def z_for(level: float) -> float:
    """Two-sided standard normal quantile: 0.95 -> 1.959964, 0.998 -> 3.090232."""
    return float(stats.norm.ppf(0.5 + level / 2.0))


def check_choice(value: object, allowed: Sequence[str], name: str, function: str) -> str:
    """Raise unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(
            f"{function}: {name} must be one of {', '.join(map(repr, allowed))}, not {value!r}."
        )
    return value  # type: ignore[return-value]


def multiplier_values(
    df: pd.DataFrame, multiplier: float | str, function: str
) -> np.ndarray | float:
    """A scalar multiplier, or the values of the column it names."""
    if isinstance(multiplier, str):
        check_columns(df, [multiplier], function)
        values = numeric_column(df, multiplier, function)
        if np.any(~np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(
                f"{function}: multiplier column {multiplier!r} must hold positive numbers "
                "(1, 100, 1000...) on every row."
            )
        return values
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float, np.number)):
        raise ValueError(
            f"{function}: multiplier must be a number (e.g. 100) or a column name, "
            f"not {multiplier!r}."
        )
    if not np.isfinite(multiplier) or multiplier <= 0:
        raise ValueError(f"{function}: multiplier must be a positive number, not {multiplier!r}.")
    return float(multiplier)


def word_codes(
    df: pd.DataFrame,
    argument: str,
    allowed: Sequence[str],
    what: str,
    function: str,
) -> np.ndarray:
    """Per-row index into ``allowed`` from a constant word or a column of words.

    ``argument`` is either one of ``allowed`` (applied to every row) or the
    name of a column holding those words. Columns are factorised first, so
    millions of rows cost a hash pass rather than string comparisons.
    """
    if argument in allowed:
        return np.full(len(df), list(allowed).index(argument), dtype=np.int8)
    if not isinstance(argument, str) or argument not in df.columns:
        raise ValueError(
            f"{function}: {what} {argument!r} is neither one of "
            f"{', '.join(map(repr, allowed))} nor a column of the data."
        )
    codes, uniques = pd.factorize(df[argument], use_na_sentinel=True)
    lookup = np.array([list(allowed).index(u) if u in allowed else -1 for u in uniques] + [-1],
                      dtype=np.int8)
    mapped = lookup[codes]  # code -1 (missing) picks the trailing -1
    if (mapped < 0).any():
        odd = sorted({str(u) for u in uniques if u not in allowed})[:5]
        if (codes < 0).any():
            odd.append("<missing>")
        raise ValueError(
            f"{function}: column {argument!r} has values {odd}; "
            f"allowed are {', '.join(map(repr, allowed))}."
        )
    return mapped


def direction_codes(df: pd.DataFrame, improvement_direction: str, function: str) -> np.ndarray:
    """Directions as +1 (increase is better), -1 (decrease is better), 0 (neutral).

    ``improvement_direction`` is a direction word for every row or a column
    name holding one per row.
    """
    index = word_codes(
        df, improvement_direction, IMPROVEMENT_DIRECTIONS, "improvement_direction", function
    )
    return np.array([1, -1, 0], dtype=np.int8)[index]


def kind_codes(df: pd.DataFrame, kind: str, function: str) -> np.ndarray:
    """Per-row index into INDICATOR_KINDS from a kind word or a column of kinds."""
    return word_codes(df, kind, INDICATOR_KINDS, "kind", function)


def group_codes(df: pd.DataFrame, columns: Sequence[str], function: str) -> tuple[np.ndarray, int]:
    """Integer group id per row (0..n_groups-1) for the given key columns.

    Missing keys form their own group rather than being dropped, so that every
    row keeps its place. Factorising column by column is several times faster
    than ``DataFrame.groupby(...).ngroup()`` on pyarrow strings.
    """
    columns = list(columns)
    check_columns(df, columns, function)
    if not columns:
        return np.zeros(len(df), dtype=np.int64), 1 if len(df) else 0
    combined = np.zeros(len(df), dtype=np.int64)
    for column in columns:
        codes, uniques = pd.factorize(df[column], use_na_sentinel=False)
        size = max(len(uniques), 1)
        combined = combined * size + codes
        # Re-compact whenever the code space could overflow int64.
        if combined.max(initial=0) > 2**40:
            combined, _ = pd.factorize(combined)
    codes, uniques = pd.factorize(combined, sort=False)
    return codes.astype(np.int64), len(uniques)


def check_group_columns(group_columns: Sequence[str] | str | None) -> list[str]:
    """Normalise a group-columns argument to a list."""
    if group_columns is None:
        return []
    if isinstance(group_columns, str):
        return [group_columns]
    return list(group_columns)


def assign_columns(df: pd.DataFrame, columns: dict[str, object]) -> pd.DataFrame:
    """Return a new DataFrame with ``columns`` added (or replaced), without copying them.

    ``DataFrame.assign`` copies every NumPy array it is given, which for
    millions of rows costs more than the statistics. The arrays here are
    freshly computed and owned by nobody else, so they are wrapped in Series
    that share their memory.
    """
    wrapped = {
        name: values
        if isinstance(values, pd.Series)
        else pd.Series(values, index=df.index, copy=False)
        for name, values in columns.items()
    }
    return df.assign(**wrapped)


def categorical_from_codes(codes: np.ndarray, categories: Sequence[str]) -> pd.Categorical:
    """Build a categorical (code -1 = missing) without materialising strings per row."""
    return pd.Categorical.from_codes(codes.astype(np.int8), categories=list(categories))
