"""Input checks and small shared helpers for :mod:`moopt.stats`.

Every public function in the package checks its inputs here before doing any
arithmetic, so that a user sees one plain-English ``ValueError`` naming the
column and the problem instead of a NumPy warning or a silent NaN.

The shared machinery for millions of rows lives here too: remembered
factorisations and group codes, blocks of rows (:func:`row_blocks`) and
running independent blocks or runs of groups on a few threads
(:func:`map_blocks`, :func:`run_parallel`).
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

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


def rows_where(
    bad_in_block, size: int, rows: np.ndarray | None = None
) -> np.ndarray | None:
    """Boolean mask of the rows where ``bad_in_block(block)`` is True, or None if there are none.

    ``bad_in_block`` maps a block of rows to a boolean array for them; only
    rows selected by the boolean mask ``rows`` (all when None) count. The
    test runs block by block on threads; a mask the size of the table is
    built only when something is wrong (checks usually pass).
    """
    def bad(block):
        found = bad_in_block(block)
        if rows is not None:
            found &= rows[block]
        return found

    if not any(map_blocks(lambda block: bool(bad(block).any()), size)):
        return None
    mask = np.zeros(size, dtype=bool)
    for block in row_blocks(size):
        mask[block] = bad(block)
    return mask


def infinite_or_negative(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Rows where a numerator or denominator is infinite or negative: the fast paths' one pass
    over what :func:`check_finite_or_missing` and :func:`check_non_negative` test (NaN is missing)."""
    with np.errstate(invalid="ignore"):
        found = np.isinf(x)
        found |= x < 0
        found |= np.isinf(n)
        found |= n < 0
    return found


def check_non_negative(
    values: np.ndarray,
    column: str,
    df: pd.DataFrame,
    function: str,
    rows: np.ndarray | None = None,
) -> None:
    """Raise if any value is negative (NaN is allowed and means 'missing').

    ``rows``, a boolean mask, limits the check to some rows (for example the
    rows of one indicator kind) without copying the column.
    """
    bad = rows_where(lambda block: values[block] < 0, len(values), rows)
    if bad is not None:
        raise ValueError(
            f"{function}: column {column!r} has {int(bad.sum())} negative value(s) "
            f"(first at index {_first_rows(bad, df)}); counts and denominators cannot be negative."
        )


def check_finite_or_missing(
    values: np.ndarray,
    column: str,
    df: pd.DataFrame,
    function: str,
    rows: np.ndarray | None = None,
) -> None:
    """Raise on +/- infinity, which is never a valid count or value (``rows`` as above)."""
    bad = rows_where(lambda block: np.isinf(values[block]), len(values), rows)
    if bad is not None:
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
    rows: np.ndarray | None = None,
) -> None:
    """Raise if a proportion's numerator exceeds its denominator (``rows`` as above)."""
    bad = rows_where(lambda block: numerator[block] > denominator[block], len(numerator), rows)
    if bad is not None:
        raise ValueError(
            f"{function}: {int(bad.sum())} row(s) have {names[0]!r} greater than {names[1]!r} "
            f"(first at index {_first_rows(bad, df)}), which is impossible for a proportion. "
            "Check the indicator definition, or use kind='rate' if it is not a proportion."
        )


def check_whole_numbers(
    values: np.ndarray,
    column: str,
    df: pd.DataFrame,
    function: str,
    rows: np.ndarray | None = None,
) -> None:
    """Raise if Poisson methods are asked to treat non-integers as counts.

    A value counts as whole when it is within 1e-9 (relative, at least
    absolute 1e-9) of a whole number; missing and infinite values are left to
    the other checks. ``rows`` as in :func:`check_non_negative`.
    """
    # Cheap pre-filter: a value equal to its rounding is whole. Only the rest
    # (NaN and genuinely fractional values, usually few) get the tolerance test.
    candidates = np.concatenate(map_blocks(
        lambda block: np.flatnonzero(np.round(values[block]) != values[block]) + block.start,
        len(values),
    ) or [np.empty(0, dtype=np.int64)])
    if rows is not None and len(candidates):
        candidates = candidates[rows[candidates]]
    v = values[candidates]
    finite = np.isfinite(v)
    off = np.abs(v[finite] - np.round(v[finite])) > 1e-9 * np.maximum(1.0, np.abs(v[finite]))
    bad_positions = candidates[finite][off]
    if len(bad_positions):
        bad = np.zeros(values.shape, dtype=bool)
        bad[bad_positions] = True
        raise ValueError(
            f"{function}: column {column!r} has {len(bad_positions)} non-whole value(s) "
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


@functools.lru_cache(maxsize=64)
def z_for(level: float) -> float:
    """Two-sided standard normal quantile: 0.95 -> 1.959964, 0.998 -> 3.090232.

    Remembered per level: the block-by-block loops ask for it many times.
    """
    return float(stats.norm.ppf(0.5 + level / 2.0))


def check_choice(value: object, allowed: Sequence[str], name: str, function: str) -> str:
    """Raise unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(
            f"{function}: {name} must be one of {', '.join(map(repr, allowed))}, not {value!r}."
        )
    return value  # type: ignore[return-value]


def multiplier_values(
    df: pd.DataFrame,
    multiplier: float | str,
    function: str,
    rows: np.ndarray | None = None,
) -> np.ndarray | float:
    """A scalar multiplier, or the values of the column it names.

    A column must hold a positive finite number on every row (on the rows
    of the boolean mask ``rows`` when given). The column's own array is
    returned, not a copy: callers must not write to it.
    """
    if isinstance(multiplier, str):
        check_columns(df, [multiplier], function)
        values = numeric_column(df, multiplier, function)
        bad = rows_where(lambda block: ~(np.isfinite(values[block]) & (values[block] > 0)),
                         len(values), rows)
        if bad is not None:
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


# --------------------------------------------------------------------------- factorising

# Factorising a text column of millions of rows (a hash pass) costs about as
# much as the statistics themselves, and the national run factorises the same
# columns (indicator, level, kind, direction...) in every step. Columns backed
# by Arrow are immutable: pandas replaces the Arrow array when a value is set
# and shares it between a frame and the frames derived from it (assign, column
# selection). So their codes are remembered per Arrow array, and forgotten
# when the array is garbage-collected. NumPy-backed columns can be changed in
# place and are always factorised afresh.
_FACTORIZE_CACHE: dict[int, tuple[weakref.ref, np.ndarray, pd.Index]] = {}
_FACTORIZE_CACHE_SIZE = 32
# Keys of entries whose Arrow array has been garbage-collected. The weak
# reference callbacks only note them here (they can fire at any moment);
# the entries are dropped at the next use of a cache.
_DEAD_KEYS: list[tuple[str, object]] = []


def _arrow_data(series: pd.Series) -> object | None:
    """The immutable Arrow array behind ``series``, or None if it has none."""
    array = series.array
    if isinstance(array, pd.arrays.ArrowExtensionArray):
        return array.__arrow_array__()
    return None


def _purge_dead_entries() -> None:
    """Drop the cache entries whose Arrow arrays no longer exist."""
    while _DEAD_KEYS:
        cache, key, ref = _DEAD_KEYS.pop()
        if cache == "factorize":
            entry = _FACTORIZE_CACHE.get(key)
            if entry is not None and entry[0] is ref:
                _FACTORIZE_CACHE.pop(key, None)
        else:
            entry = _GROUP_CACHE.get(key)
            if entry is not None and any(held is ref for held in entry["held"]):
                _GROUP_CACHE.pop(key, None)


def factorize_column(df: pd.DataFrame, column: str) -> tuple[np.ndarray, pd.Index]:
    """``pandas.factorize(df[column])`` (missing values coded -1), remembered for Arrow columns.

    Returns read-only integer codes (the smallest signed type that holds
    them) and the distinct values in order of first appearance.
    """
    _purge_dead_entries()
    series = df[column]
    arrow = _arrow_data(series)
    if arrow is not None:
        entry = _FACTORIZE_CACHE.get(id(arrow))
        if entry is not None and entry[0]() is arrow:
            return entry[1], entry[2]
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    codes = codes.astype(np.min_scalar_type(-max(len(uniques), 1)), copy=False)
    if arrow is None:
        return codes, uniques
    codes.flags.writeable = False
    key = id(arrow)
    try:
        ref = weakref.ref(arrow, lambda r, key=key: _DEAD_KEYS.append(("factorize", key, r)))
    except TypeError:  # an array type without weak references: do not remember it
        return codes, uniques
    while len(_FACTORIZE_CACHE) >= _FACTORIZE_CACHE_SIZE:
        _FACTORIZE_CACHE.pop(next(iter(_FACTORIZE_CACHE)), None)
    _FACTORIZE_CACHE[key] = (ref, codes, uniques)
    return codes, uniques


# Per-row arrays derived from remembered codes (kind and direction codes,
# membership masks) are remembered too, keyed on the codes array itself, for
# as long as it lives: the national run asks for the same ones in several
# steps, and each costs a pass over millions of rows.
_DERIVED_CACHE: dict[tuple[int, object], tuple[weakref.ref, np.ndarray]] = {}
_DERIVED_CACHE_SIZE = 32


def _derived_from(codes: np.ndarray, key: object, compute) -> np.ndarray:
    """``compute()``, remembered for read-only (remembered) ``codes`` under ``key``.

    The result is read-only when remembered; callers must not write to it.
    """
    if codes.flags.writeable:  # codes made afresh: nothing to key on
        return compute()
    for dead in [k for k, (ref, _) in _DERIVED_CACHE.items() if ref() is None]:
        del _DERIVED_CACHE[dead]
    entry = _DERIVED_CACHE.get((id(codes), key))
    if entry is not None and entry[0]() is codes:
        return entry[1]
    result = compute()
    result.flags.writeable = False
    while len(_DERIVED_CACHE) >= _DERIVED_CACHE_SIZE:
        _DERIVED_CACHE.pop(next(iter(_DERIVED_CACHE)))
    _DERIVED_CACHE[(id(codes), key)] = (weakref.ref(codes), result)
    return result


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
    millions of rows cost a hash pass rather than string comparisons. The
    result may be shared with later calls: do not write to it.
    """
    if argument in allowed:
        return np.full(len(df), list(allowed).index(argument), dtype=np.int8)
    if not isinstance(argument, str) or argument not in df.columns:
        raise ValueError(
            f"{function}: {what} {argument!r} is neither one of "
            f"{', '.join(map(repr, allowed))} nor a column of the data."
        )
    codes, uniques = factorize_column(df, argument)
    odd = sorted({str(u) for u in uniques if u not in allowed})[:5]
    if len(codes) and codes.min() < 0:
        odd.append("<missing>")
    if odd:
        raise ValueError(
            f"{function}: column {argument!r} has values {odd}; "
            f"allowed are {', '.join(map(repr, allowed))}."
        )
    lookup = np.array([list(allowed).index(u) for u in uniques], dtype=np.int8)
    return _derived_from(codes, ("words", tuple(allowed)), lambda: lookup.take(codes))


def direction_codes(df: pd.DataFrame, improvement_direction: str, function: str) -> np.ndarray:
    """Directions as +1 (increase is better), -1 (decrease is better), 0 (neutral).

    ``improvement_direction`` is a direction word for every row or a column
    name holding one per row. The result may be shared: do not write to it.
    """
    index = word_codes(
        df, improvement_direction, IMPROVEMENT_DIRECTIONS, "improvement_direction", function
    )
    signs = np.array([1, -1, 0], dtype=np.int8)
    return _derived_from(index, "direction", lambda: signs.take(index))


def kind_codes(df: pd.DataFrame, kind: str, function: str) -> np.ndarray:
    """Per-row index into INDICATOR_KINDS from a kind word or a column of kinds (read-only)."""
    return word_codes(df, kind, INDICATOR_KINDS, "kind", function)


def isin_column(df: pd.DataFrame, column: str, values: Sequence[object]) -> np.ndarray:
    """Boolean mask of the rows whose ``column`` is one of ``values`` (missing is False)."""
    codes, uniques = factorize_column(df, column)
    wanted = set(values)
    lookup = np.array([u in wanted for u in uniques] + [False], dtype=bool)
    # The trailing False is picked by code -1 (missing).
    return _derived_from(codes, ("isin", frozenset(wanted)), lambda: lookup[codes])


# Group codes for the same key columns are needed by several steps of a run
# (percentiles, funnels...), so the last few are remembered, with the order
# that brings each group's rows together. An entry is used only while every
# key column still holds the very data it was computed from: the same Arrow
# array (immutable; held by weak reference), or, for NumPy-backed columns, the
# same memory. For those the entry holds a Series of the column: under pandas'
# copy-on-write a frame that shares memory with a live Series copies the
# memory before any change, so memory that is still shared has not changed.
_GROUP_CACHE: OrderedDict = OrderedDict()
_GROUP_CACHE_SIZE = 2


def _column_identity(series: pd.Series) -> tuple[tuple, object] | None:
    """A key for the data of ``series`` and the object that keeps the key valid.

    None when the data could change unseen (then nothing is remembered).
    """
    arrow = _arrow_data(series)
    if arrow is not None:
        return ("arrow", id(arrow)), arrow
    if not isinstance(series.dtype, np.dtype) or series.dtype.kind not in "biufmM":
        return None
    first, second = series.to_numpy(), series.to_numpy()
    pointer = first.__array_interface__["data"][0]
    if second.__array_interface__["data"][0] != pointer:
        return None  # a fresh copy each time: no stable memory to key on
    return ("numpy", pointer, first.shape, first.strides, first.dtype.str), series


def _entry_is_current(entry: dict, identities: list[tuple[tuple, object]]) -> bool:
    for (key, current), held in zip(identities, entry["held"]):
        if key[0] == "arrow" and held() is not current:
            return False
    return True


def clear_caches() -> None:
    """Forget every remembered factorisation and group coding (frees their memory).

    Entries also go by themselves when their Arrow columns are
    garbage-collected; an entry for NumPy-backed key columns keeps a view of
    them until it is pushed out by newer ones (at most two are kept).
    """
    _FACTORIZE_CACHE.clear()
    _GROUP_CACHE.clear()
    _DERIVED_CACHE.clear()
    _DEAD_KEYS.clear()


def group_codes(
    df: pd.DataFrame,
    columns: Sequence[str],
    function: str,
    in_order_of_appearance: bool = True,
) -> tuple[np.ndarray, int]:
    """Integer group id per row (0..n_groups-1) for the given key columns.

    Groups are numbered in order of first appearance, or, with
    ``in_order_of_appearance=False`` (for callers that only need rows of a
    group to share a number), in whatever order is cheapest. Missing keys
    form their own group rather than being dropped, so that every row keeps
    its place. Factorising column by column is several times faster than
    ``DataFrame.groupby(...).ngroup()`` on pyarrow strings. The codes are
    read-only: they may be shared with later calls on the same columns.
    """
    columns = list(columns)
    check_columns(df, columns, function)
    if not columns:
        return np.zeros(len(df), dtype=np.int64), 1 if len(df) else 0
    _purge_dead_entries()
    identities = [_column_identity(df[column]) for column in columns]
    cacheable = all(identity is not None for identity in identities)
    if cacheable:
        keys = tuple(identity[0] for identity in identities)
        # Numbering in order of appearance also serves callers that need no order.
        for ordered in ((True,) if in_order_of_appearance else (False, True)):
            entry = _GROUP_CACHE.get((keys, ordered, len(df)))
            if entry is not None and _entry_is_current(entry, identities):
                _GROUP_CACHE.move_to_end((keys, ordered, len(df)))
                return entry["codes"], entry["n_groups"]
    codes, n_groups = _combine_codes(df, columns, in_order_of_appearance)
    if cacheable:
        codes.flags.writeable = False
        cache_key = (keys, bool(in_order_of_appearance), len(df))
        held = []
        try:
            for key, holder in identities:
                if key[0] == "arrow":  # by weak reference: forgotten when the array goes
                    holder = weakref.ref(
                        holder, lambda r, k=cache_key: _DEAD_KEYS.append(("group", k, r)))
                held.append(holder)
        except TypeError:  # an array type without weak references: do not remember it
            return codes, n_groups
        while len(_GROUP_CACHE) >= _GROUP_CACHE_SIZE:
            _GROUP_CACHE.popitem(last=False)
        _GROUP_CACHE[cache_key] = {"codes": codes, "n_groups": n_groups, "held": held}
    return codes, n_groups


def _combine_codes(
    df: pd.DataFrame, columns: list[str], in_order_of_appearance: bool
) -> tuple[np.ndarray, int]:
    combined = None
    space = 1  # combined codes lie in range(space)
    for column in columns:
        codes, uniques = factorize_column(df, column)
        size = len(uniques)
        if len(codes) and codes.min() < 0:  # missing: a code of its own after the others
            codes = np.where(codes < 0, size, codes)
            size += 1
        size = max(size, 1)
        if combined is None:
            combined = codes.astype(np.int64)
        else:
            combined *= size
            combined += codes
        space *= size
        # Re-compact whenever the code space could overflow int64.
        if space > 2**40:
            combined, uniques = pd.factorize(combined)
            space = max(len(uniques), 1)
    if not in_order_of_appearance and space <= max(4 * len(combined), 2**16):
        # Small code space: number the groups present by a count, not a hash.
        present = np.bincount(combined, minlength=space) > 0
        renumber = np.cumsum(present) - 1
        return renumber.take(combined), int(present.sum())
    codes, uniques = pd.factorize(combined, sort=False)
    return codes.astype(np.int64, copy=False), len(uniques)


def group_layout(codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row positions grouped by code, each group's start among them, and its size.

    Rows keep their order within a group (a stable sort; a radix sort for
    up to 65,536 groups). Remembered alongside codes that came from
    :func:`group_codes`'s memory. The arrays returned are read-only.
    """
    for entry in _GROUP_CACHE.values():
        if entry["codes"] is codes:
            if "layout" not in entry:
                entry["layout"] = _layout(codes, n_groups)
            return entry["layout"]
    return _layout(codes, n_groups)


def _layout(codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    small = np.min_scalar_type(max(n_groups - 1, 0))  # 8/16-bit codes sort by radix
    order = np.argsort(codes.astype(small, copy=False), kind="stable")
    sizes = np.bincount(codes, minlength=n_groups)
    starts = np.zeros(n_groups, dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    for array in (order, starts, sizes):
        array.flags.writeable = False
    return order, starts, sizes


def check_group_columns(group_columns: Sequence[str] | str | None) -> list[str]:
    """Normalise a group-columns argument to a list."""
    if group_columns is None:
        return []
    if isinstance(group_columns, str):
        return [group_columns]
    return list(group_columns)


# --------------------------------------------------------------------------- blocks

# Elementwise formulas run over blocks of this many rows. A formula applied to
# a whole column of millions of rows allocates a fresh 60 MB array for every
# intermediate result, and the operating system has to map and zero each one:
# on a national table that costs more than the arithmetic. Blocks of 2 MB are
# recycled by the allocator and stay in cache. Elementwise results do not
# depend on the blocking.
BLOCK_ROWS = 1 << 18


def _block_at(start: int, size: int, rows: np.ndarray | None) -> slice | np.ndarray | None:
    """The block of rows starting at ``start`` (see :func:`row_blocks`); None if it is empty."""
    stop = min(start + BLOCK_ROWS, size)
    if rows is None:
        return slice(start, stop)
    selected = rows[start:stop]
    if selected.all():
        return slice(start, stop)
    if selected.any():
        return np.flatnonzero(selected) + start
    return None


def row_blocks(size: int, rows: np.ndarray | None = None):
    """Yield blocks of rows of a table of ``size`` rows, in order.

    With ``rows`` None every row is taken and the blocks are slices. With a
    boolean mask ``rows``, each block holds the positions of the selected
    rows among one slice of the table (a slice when all of them are
    selected), so no position array the size of the table is built. Either
    kind of block indexes an array (``a[block]``) and assigns into one
    (``out[block] = ...``).
    """
    for start in range(0, size, BLOCK_ROWS):
        block = _block_at(start, size, rows)
        if block is not None:
            yield block


# --------------------------------------------------------------------------- threads

# Blocks are independent (each writes only its own rows), and NumPy releases
# the GIL inside its loops, so they can run on several threads at once with
# exactly the same results as one after another. Worker threads also keep
# their own allocator arenas, which recycle the blocks' temporary arrays
# without handing the memory back to the operating system between blocks, as
# the main thread's heap does. Set to 1 to run everything on the calling
# thread.
WORKER_THREADS = 4
_worker_state = threading.local()


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _threads_for(tasks: int) -> int:
    """How many threads to use for ``tasks`` independent tasks (1: run in line).

    Tasks started from inside a worker run in line, so nested parallel code
    never waits on a pool it occupies.
    """
    if getattr(_worker_state, "busy", False):
        return 1
    return max(1, min(WORKER_THREADS, available_cores(), tasks))


def worker_count() -> int:
    """Threads that parallel work started here would use (1 inside a worker)."""
    return _threads_for(WORKER_THREADS)


def run_parallel(calls: Sequence) -> list:
    """Call every zero-argument function in ``calls``; their results, in order.

    Runs on up to :data:`WORKER_THREADS` threads (one per core at most) of a
    short-lived pool; the first exception raised by a call is re-raised.
    The calls must not write to the same memory. NumPy's error state is per
    thread, so a call that expects warnings to be silenced says so itself.
    """
    calls = list(calls)
    threads = _threads_for(len(calls))
    if threads < 2:
        return [call() for call in calls]

    def in_worker(call):
        _worker_state.busy = True
        try:
            return call()
        finally:
            _worker_state.busy = False

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(in_worker, calls))


def map_blocks(task, size: int, rows: np.ndarray | None = None) -> list:
    """``[task(block) for block in row_blocks(size, rows)]``, blocks spread over threads.

    ``task`` must write only to the rows of its block. Each block is worked
    out inside its worker, so a mask ``rows`` costs no position array the
    size of the table.
    """
    empty = object()  # marks a block without selected rows

    def run(start: int):
        block = _block_at(start, size, rows)
        return empty if block is None else task(block)

    results = run_parallel([functools.partial(run, start) for start in range(0, size, BLOCK_ROWS)])
    return [result for result in results if result is not empty]


def count_codes(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """How many rows hold each code 0..n_codes-1, block by block on threads.

    ``numpy.bincount`` on the whole column would first copy 8-bit codes
    into a 64-bit array the size of the table.
    """
    per_block = map_blocks(lambda block: np.bincount(codes[block], minlength=n_codes), len(codes))
    return np.sum(per_block, axis=0, dtype=np.int64) if per_block else np.zeros(n_codes, np.int64)


def gather(values: np.ndarray, positions: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[:] = values[positions]`` (e.g. rows brought together by group), on threads."""
    def gather_block(block: slice) -> None:
        np.take(values, positions[block], out=out[block], mode="clip")  # "clip": unbuffered

    map_blocks(gather_block, len(positions))
    return out


def group_chunks(starts: np.ndarray, sizes: np.ndarray, per_thread: int = 4) -> list[range]:
    """Runs of consecutive groups with about equal numbers of rows, to share among threads.

    ``starts`` and ``sizes`` describe groups laid end to end (as from
    :func:`group_layout`). A few chunks per thread even out groups of
    unequal sizes; with one thread there is one chunk.
    """
    n_groups = len(sizes)
    threads = worker_count()
    pieces = 1 if threads < 2 else max(1, min(n_groups, per_thread * threads))
    if n_groups == 0:
        return []
    total = int(starts[-1] + sizes[-1])
    # Each chunk starts at the first group whose rows begin at or after its share.
    bounds = np.searchsorted(starts, np.linspace(0, total, pieces + 1)[1:-1], side="left")
    edges = [0, *sorted(set(bounds.tolist()) - {0, n_groups}), n_groups]
    return [range(a, b) for a, b in zip(edges[:-1], edges[1:])]


def blockwise(out: np.ndarray, formula, *arrays: np.ndarray) -> np.ndarray:
    """``out[:] = formula(*arrays)``, evaluated block by block (see :data:`BLOCK_ROWS`)."""
    def fill(block):
        out[block] = formula(*(a[block] for a in arrays))

    map_blocks(fill, len(out))
    return out


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
    """Build a categorical (code -1 = missing) without materialising strings per row.

    The codes are used as they are (no copy) when they are already 8-bit.
    """
    return pd.Categorical.from_codes(codes.astype(np.int8, copy=False), categories=list(categories))
