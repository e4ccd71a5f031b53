"""Funnel-plot control limits, with Spiegelhalter's overdispersion adjustment.

A funnel plot shows each organisation's value against its denominator, with
control limits around a target that narrow as the denominator grows. The
target is the pooled value of the organisations compared, or a column such
as ``england_value`` (``target=``), one value per funnel, used alike by the
parameters, the per-row limits and the lines. Prescribing data vary far
more between organisations than chance alone allows, so by default the
limits are widened by an additive random effect (Spiegelhalter 2005, as in
the NHS-R ``FunnelPlotR`` package); switch it off with
``overdispersion=False``. Without the widening (tau^2 = 0, or switched off)
proportions get binomial limits and rates/ratios the interpolated Poisson
quantiles around the expected count (Spiegelhalter 2005, appendix A.2.1);
ADQs and costs (kind "none") are not counts and then get no limits at all.

Three public functions:

* :func:`calculate_funnel_parameters` - one row per group (indicator x level x
  period x period type by default): target, phi, tau^2, whether the limits
  were adjusted, and the denominator range.
* :func:`calculate_funnel_limits` - the limits at each organisation's own
  denominator, its z-score ``funnel_z`` on the variance-stabilised scale
  (with tau^2 when adjusted) and flags "below" / "inside" / "above", added
  to every row: one comparison with the target per organisation, indicator
  and period.
* :func:`calculate_funnel_lines` - smooth limit lines over a grid of
  denominators, for drawing.

Every kind and group is fitted in one pass: sums per group with
``numpy.bincount`` on integer group codes, the Winsorising quantiles by
partitioning each group's z-scores once, and the per-row terms, limits and
flags block by block (:func:`moopt.stats._validate.map_blocks`), so that a
national table of millions of rows needs no full-size temporary arrays (but
one, to check a ``target`` column has one value per funnel). The
blocks, and runs of groups for the quantiles, are shared among threads;
each block writes only its own rows, so the results do not depend on the
number of threads or the block size.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from moopt.stats._validate import (
    DEFAULT_CONFIDENCE,
    DEFAULT_GROUP_COLUMNS,
    INDICATOR_KINDS,
    assign_columns,
    blockwise,
    categorical_from_codes,
    check_choice,
    check_columns,
    check_confidence,
    check_dataframe,
    check_finite_or_missing,
    check_group_columns,
    check_non_negative,
    check_numerator_within_denominator,
    confidence_label,
    count_codes,
    gather,
    group_chunks,
    group_codes,
    group_layout,
    infinite_or_negative,
    kind_codes,
    map_blocks,
    multiplier_values,
    numeric_column,
    run_parallel,
    worker_count,
    z_for,
)
from moopt.stats.ranking import (
    _first_row_of_each_group,
    _quantile_positions,
    _quantiles_from_sorted,
)

FLAG_CATEGORIES: tuple[str, ...] = ("below", "inside", "above")
COUNT_TRANSFORMS: tuple[str, ...] = ("sqrt", "log")
POISSON_METHODS: tuple[str, ...] = ("interpolated", "exact")
DEFAULT_POISSON_METHOD = "interpolated"
# The value of funnel_target_source when the target is the pooled value of the group.
POOLED_TARGET = "pooled"
_PROPORTION = INDICATOR_KINDS.index("proportion")
_NO_VARIANCE = INDICATOR_KINDS.index("none")


def funnel_lower_column(level: float) -> str:
    """'funnel_lower_95' for 0.95."""
    return f"funnel_lower_{confidence_label(level)}"


def funnel_upper_column(level: float) -> str:
    """'funnel_upper_99_8' for 0.998."""
    return f"funnel_upper_{confidence_label(level)}"


def funnel_flag_column(level: float) -> str:
    """'funnel_flag_95' for 0.95."""
    return f"funnel_flag_{confidence_label(level)}"


FUNNEL_Z_COLUMN = "funnel_z"


# --------------------------------------------------------------------------- maths


def poisson_interpolated_quantile(probability: float, mean: np.ndarray) -> np.ndarray:
    """Smooth p-quantile of a Poisson distribution (Spiegelhalter 2005, appendix).

    The discrete quantile ``r`` (smallest integer with ``F(r) >= p``) is
    interpolated as ``r - (F(r) - p) / (F(r) - F(r - 1))``: the inverse of the
    CDF joined linearly between whole numbers. The result is continuous in the
    mean, which gives smooth funnel lines. Clipped below at 0.
    """
    mean = np.asarray(mean, dtype=np.float64)
    out = np.full(mean.shape, np.nan)
    ok = np.isfinite(mean) & (mean >= 0)
    lam = mean[ok]
    z = z_for(2 * probability - 1) if probability > 0.5 else -z_for(1 - 2 * probability)
    # Cornish-Fisher start; a few exact CDF checks then settle the integer.
    guess = lam + z * np.sqrt(lam) + (z * z - 1.0) / 6.0
    r = np.maximum(np.ceil(guess), 0.0)
    f_r = special.pdtr(r, lam)
    f_below = np.where(r > 0, special.pdtr(r - 1.0, lam), 0.0)
    for _ in range(200):
        up = f_r < probability
        down = (r > 0) & (f_below >= probability)
        moving = up | down
        if not moving.any():
            break
        r = r + up - down
        idx = np.flatnonzero(moving)
        f_r[idx] = special.pdtr(r[idx], lam[idx])
        f_below[idx] = np.where(r[idx] > 0, special.pdtr(r[idx] - 1.0, lam[idx]), 0.0)
    step = f_r - f_below
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.where(step > 0, (f_r - probability) / step, 0.0)
    out[ok] = np.maximum(r - alpha, 0.0)
    return out


def poisson_exact_control_limits(
    expected: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (chi-squared) Poisson limits evaluated at a continuous expected count.

    ``lower = chi2.ppf(a/2, 2E)/2`` and ``upper = chi2.ppf(1 - a/2, 2E + 2)/2``:
    the exact Poisson interval formulas with the expected count ``E`` in
    place of an observed count. Continuous and monotone in ``E``, so funnel
    lines are smooth (the form FunnelPlotR draws). ``E = 0`` gives ``(0, upper)``.

    Notes
    -----
    SciPy evaluates ``chi2.ppf(q, df)`` as ``2 * gammaincinv(df / 2, q)``;
    halving and doubling are exact in floating point, so the limits are
    computed as ``gammaincinv(E, a/2)`` and ``gammaincinv((2E + 2)/2, 1 - a/2)``
    directly: the same numbers without SciPy's per-call argument handling.
    Large arrays are split across threads (the special function releases
    the GIL), which does not change any value.
    """
    e = np.asarray(expected, dtype=np.float64)
    alpha = 1.0 - level
    valid = np.isfinite(e) & (e >= 0)
    lower = np.full(e.shape, np.nan)
    upper = np.full(e.shape, np.nan)
    lower[valid] = 0.0  # E = 0: no events expected, the lower limit is 0
    positive = valid & (e > 0)
    lower[positive] = _gammaincinv(e[positive], alpha / 2.0)
    upper[valid] = _gammaincinv((2.0 * e[valid] + 2.0) / 2.0, 1.0 - alpha / 2.0)
    return lower, upper


# Arrays at least this long are split across threads in _gammaincinv.
_THREADED_MINIMUM = 200_000


def _gammaincinv(a: np.ndarray, probability: float) -> np.ndarray:
    """``scipy.special.gammaincinv(a, probability)``, on several threads for long arrays.

    The special function releases the GIL, and each element is computed on
    its own, so the split does not change any value. Inside a worker thread
    (a block of a larger job) it runs in line.
    """
    parts = min(worker_count(), max(len(a) // (_THREADED_MINIMUM // 2), 1))
    if parts < 2:
        return special.gammaincinv(a, probability)
    out = np.empty(a.shape)
    bounds = np.linspace(0, len(a), parts + 1).astype(np.int64).tolist()

    def part(start: int, stop: int) -> None:
        special.gammaincinv(a[start:stop], probability, out=out[start:stop])

    run_parallel([functools.partial(part, start, stop)
                  for start, stop in zip(bounds[:-1], bounds[1:])])
    return out


@dataclass
class _Groups:
    """Per-group quantities of a funnel fit (every kind present)."""

    target: np.ndarray  # pooled value per group, per unit (not multiplied)
    multiplier: np.ndarray
    organisations: np.ndarray
    phi: np.ndarray
    tau2: np.ndarray
    adjusted: np.ndarray
    denominator_min: np.ndarray
    denominator_max: np.ndarray


def _z_scores(
    kind: str,
    x: np.ndarray,
    n: np.ndarray,
    target: np.ndarray,
    transform: str,
    centre: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unadjusted z-scores on the variance-stabilised scale, and their s.

    ``centre`` may give ``asin(sqrt(target))`` for proportions, computed once
    per group by the caller.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "proportion":
            if centre is None:
                centre = np.arcsin(np.sqrt(target))
            s = 1.0 / (2.0 * np.sqrt(n))
            z = (np.arcsin(np.sqrt(x / n)) - centre) / s
        else:
            expected = target * n
            if transform == "sqrt":
                s = 1.0 / (2.0 * np.sqrt(expected))
                z = 2.0 * (np.sqrt(x) - np.sqrt(expected))
            else:
                s = 1.0 / np.sqrt(expected)
                z = np.sqrt(expected) * np.log(x / expected)  # -inf for x = 0: left out
    return z, s


def _limits(
    kind: str,
    target: np.ndarray,
    n: np.ndarray,
    level: float,
    tau2: np.ndarray,
    adjusted: np.ndarray,
    transform: str,
    poisson_method: str = DEFAULT_POISSON_METHOD,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper limits per unit (before the multiplier) at denominator n."""
    return _limits_at(kind, target, n, (level,), tau2, adjusted, transform, poisson_method)[0]


def _limits_at(
    kind: str,
    target: np.ndarray,
    n: np.ndarray,
    levels: Sequence[float],
    tau2: np.ndarray,
    adjusted: np.ndarray,
    transform: str,
    poisson_method: str = DEFAULT_POISSON_METHOD,
    centre: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`_limits` for several levels at once.

    The parts of each formula that do not depend on the level (the standard
    error terms, the centre on the transformed scale) are computed once and
    reused, with the same operations in the same order, so every level gets
    exactly the numbers a separate call would. ``centre`` may give
    ``asin(sqrt(target))`` for proportions.
    """
    size = len(n)
    all_adjusted = bool(adjusted.all())
    none_adjusted = not all_adjusted and not adjusted.any()
    plain_rows = adjusted_rows = None  # None: every row, no selection
    if not (all_adjusted or none_adjusted):
        plain_rows = np.flatnonzero(~adjusted)
        if 2 * len(plain_rows) > size:
            adjusted_rows = np.flatnonzero(adjusted)
        # else: the (cheap) adjusted formulas run on every row and the few
        # unadjusted rows are overwritten, which saves selecting the many.

    def pick(values: np.ndarray | None, rows: np.ndarray | None) -> np.ndarray | None:
        return values if rows is None or values is None else values[rows]

    # Per level, the (lower, upper) pieces of each part and the rows they
    # fill, a piece for every row (if any) first.
    pieces: list[list[tuple[np.ndarray | None, np.ndarray, np.ndarray]]] = [[] for _ in levels]
    with np.errstate(divide="ignore", invalid="ignore"):
        if not none_adjusted:  # overdispersion-adjusted limits
            rows = adjusted_rows
            t0, nn, t2 = pick(target, rows), pick(n, rows), pick(tau2, rows)
            if kind == "proportion":
                middle = np.arcsin(np.sqrt(t0)) if centre is None else pick(centre, rows)
                root = np.sqrt(1.0 / (4.0 * nn) + t2)
                for i, level in enumerate(levels):
                    half = z_for(level) * root
                    pieces[i].append((
                        rows,
                        np.sin(np.clip(middle - half, 0.0, np.pi / 2)) ** 2,
                        np.sin(np.clip(middle + half, 0.0, np.pi / 2)) ** 2,
                    ))
            else:
                expected = t0 * nn
                if transform == "sqrt":
                    root = np.sqrt(1.0 / (4.0 * expected) + t2)
                else:
                    root = np.sqrt(1.0 / expected + t2)
                for i, level in enumerate(levels):
                    half = z_for(level) * root
                    if transform == "sqrt":
                        low = t0 * np.maximum(1.0 - half, 0.0) ** 2
                        high = t0 * (1.0 + half) ** 2
                    else:
                        low = t0 * np.exp(-half)
                        high = t0 * np.exp(half)
                    pieces[i].append((rows, low, high))
        if not all_adjusted:  # unadjusted limits
            rows = plain_rows
            t0, nn = pick(target, rows), pick(n, rows)
            if kind == "proportion":
                standard_error = np.sqrt(t0 * (1.0 - t0) / nn)
                for i, level in enumerate(levels):
                    half = z_for(level) * standard_error
                    pieces[i].append((rows, np.clip(t0 - half, 0.0, 1.0),
                                      np.clip(t0 + half, 0.0, 1.0)))
            elif kind == "none":
                # ADQs, DDDs and costs are not counts: no Poisson limits, so
                # without a between-organisation variance there are none.
                missing = np.full(len(nn), np.nan)
                for i in range(len(levels)):
                    pieces[i].append((rows, missing, missing.copy()))
            else:
                expected = t0 * nn
                for i, level in enumerate(levels):
                    alpha = 1.0 - level
                    if poisson_method == "exact":
                        low, high = poisson_exact_control_limits(expected, level)
                    else:
                        low = poisson_interpolated_quantile(alpha / 2.0, expected)
                        high = poisson_interpolated_quantile(1.0 - alpha / 2.0, expected)
                    pieces[i].append((rows, np.where(nn > 0, low / nn, np.nan),
                                      np.where(nn > 0, high / nn, np.nan)))

    out = []
    for level_pieces in pieces:
        rows, lower, upper = level_pieces[0]
        if rows is not None:
            lower, upper = np.empty(size), np.empty(size)
            lower[rows], upper[rows] = level_pieces[0][1:]
        for rows, low, high in level_pieces[1:]:
            lower[rows] = low
            upper[rows] = high
        out.append((lower, upper))
    return out


def _winsorising_bounds(
    grouped: np.ndarray,
    starts: np.ndarray,
    sizes: np.ndarray,
    present: np.ndarray,
    winsorise: float,
) -> np.ndarray:
    """Per-group ``winsorise`` and ``1 - winsorise`` quantiles of the non-missing values.

    ``grouped`` holds each group's values (NaN = missing) in the slice
    ``starts[g]:starts[g] + sizes[g]``; it is partitioned in place. NumPy
    orders NaN after every number, so partitioning a whole slice puts the
    j-th smallest of the ``present[g]`` non-missing values at position j.
    Chunks of groups are partitioned on separate threads (groups never
    share values).
    """
    fractions = [winsorise, 1.0 - winsorise]
    has, positions = _quantile_positions(present, fractions)
    needed = np.stack([p for below, above, _ in positions for p in (below, above)], axis=1)
    group_starts, group_sizes = starts[has], sizes[has]

    def partition(chunk: range) -> None:
        for start, size, kth in zip(group_starts[chunk].tolist(), group_sizes[chunk].tolist(),
                                    needed[chunk].tolist()):
            if size > 1:
                grouped[start:start + size].partition(sorted(set(kth)))

    run_parallel([functools.partial(partition, chunk)
                  for chunk in group_chunks(group_starts, group_sizes)])
    return _quantiles_from_sorted(grouped, starts, present, fractions)


def _family_parts(block_kinds: np.ndarray) -> list[tuple[str, np.ndarray | None]]:
    """The formula families in a block: (family, rows of the block, None for all) pairs.

    Proportions have their own formulas; rates and ratios share the count
    ("rate") formulas; "none" (ADQs, costs) shares their overdispersion
    scale but has no unadjusted (Poisson) limits.
    """
    is_proportion = block_kinds == _PROPORTION
    no_variance = block_kinds == _NO_VARIANCE
    parts = [("proportion", is_proportion), ("rate", ~(is_proportion | no_variance)),
             ("none", no_variance)]
    present = [(family, rows) for family, rows in parts if rows.any()]
    if len(present) <= 1:
        return [(present[0][0] if present else "rate", None)]
    return present


def _pick(values, rows: np.ndarray | None):
    """``values[rows]``, or ``values`` itself when ``rows`` is None or values is a scalar."""
    if rows is None or values is None or np.isscalar(values):
        return values
    return values[rows]


def _positions(block: slice, rows: np.ndarray) -> np.ndarray:
    """Table positions of the rows of a block picked by the boolean mask ``rows``."""
    return np.flatnonzero(rows) + block.start


def _count_except(codes: np.ndarray, left_out: list[np.ndarray], sizes: np.ndarray) -> np.ndarray:
    """Rows per group (``sizes``) less those at the positions ``left_out`` (usually few)."""
    positions = np.concatenate(left_out) if left_out else np.empty(0, dtype=np.int64)
    return sizes - np.bincount(codes.take(positions), minlength=len(sizes))


def _group_statistics(
    x: np.ndarray,
    n: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    layout: tuple[np.ndarray, np.ndarray, np.ndarray],
    group_scale: np.ndarray,
    given_target: np.ndarray | None,
    kinds: np.ndarray,
    has_proportions: bool,
    overdispersion: bool,
    winsorise: float,
    transform: str,
    workspace: Sequence[np.ndarray] = (),
    denominator_range: bool = True,
) -> tuple[_Groups, np.ndarray | None]:
    """Targets, phi and tau^2 per group, for all kinds at once.

    ``kinds`` gives each row's index into INDICATOR_KINDS; each group has a
    single kind. ``layout`` is :func:`moopt.stats._validate.group_layout` of
    the codes.
    Sums over rows use ``numpy.bincount``, which adds each group's rows in
    row order whichever other groups are present, so the group figures
    equal those of a separate pass per kind. Per-row quantities are
    computed block by block, on threads, into five float arrays of the
    table's length, taken from ``workspace`` (arrays the caller will
    overwrite later, such as its output columns: fresh memory is costly) or
    else allocated. ``denominator_range`` False leaves the denominator range
    out (NaN), which the per-row limits do not need. ``given_target`` (per
    group, per unit) replaces the pooled value as the centre of the z-scores
    and of the limits.
    Returns the group statistics and, when there are proportions,
    ``asin(sqrt(target))`` per group (None otherwise).
    """
    size = len(x)
    spare = [a for a in workspace if a.shape == (size,) and a.dtype == np.float64][:5]
    first, second, third, fourth, fifth = spare + [np.empty(size) for _ in range(5 - len(spare))]
    order, starts, sizes = layout

    # Pass 1: which rows count, and the terms of the pooled target.
    usable = np.empty(size, dtype=bool)

    def sum_terms(block: slice) -> np.ndarray:
        xb, nb = x[block], n[block]
        rows = (nb > 0) & np.isfinite(xb) & np.isfinite(nb)
        usable[block] = rows
        first[block] = np.where(rows, xb, 0.0)
        second[block] = np.where(rows, nb, 0.0)
        return _positions(block, ~rows)

    unusable = map_blocks(sum_terms, size)
    sum_x, sum_n = _bincounts(codes, n_groups, first, second)
    organisations = _count_except(codes, unusable, sizes)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.where(sum_n > 0, sum_x / sum_n, np.nan)
    centre_value = pooled if given_target is None else given_target
    group_centre = None
    if has_proportions:
        with np.errstate(invalid="ignore"):
            group_centre = np.arcsin(np.sqrt(centre_value))

    den_min = np.full(n_groups, np.nan)
    den_max = np.full(n_groups, np.nan)
    has_rows = sizes > 0
    if denominator_range and has_rows.any():
        blockwise(first, lambda u, v: np.where(u, v, np.inf), usable, n)
        grouped = gather(first, order, second)
        den_min[has_rows] = np.minimum.reduceat(grouped, starts[has_rows])
        blockwise(grouped, lambda g: np.where(g == np.inf, -np.inf, g), grouped)
        den_max[has_rows] = np.maximum.reduceat(grouped, starts[has_rows])
        den_min[~np.isfinite(den_min)] = np.nan
        den_max[~np.isfinite(den_max)] = np.nan

    phi = np.full(n_groups, np.nan)
    tau2 = np.zeros(n_groups)
    if overdispersion:
        # Pass 2: z-scores (missing where a row cannot be scored) and the
        # weights w = 1/s^2 and w^2 of the scored rows.
        z, weight, weight_squared = third, fourth, fifth
        scored = np.empty(size, dtype=bool)

        def score(block: slice) -> np.ndarray:
            block_codes = codes[block]
            target = centre_value.take(block_codes)
            xb, nb, usable_b = x[block], n[block], usable[block]
            zb, sb = np.empty(len(xb)), np.empty(len(xb))
            for family, rows in _family_parts(kinds[block]):
                centre = None
                if family == "proportion" and group_centre is not None:
                    centre = group_centre.take(_pick(block_codes, rows))
                part_z, part_s = _z_scores(family, _pick(xb, rows), _pick(nb, rows),
                                           _pick(target, rows), transform, centre)
                if rows is None:
                    zb, sb = part_z, part_s
                else:
                    zb[rows], sb[rows] = part_z, part_s
            ok = usable_b & np.isfinite(zb) & np.isfinite(sb) & (sb > 0)
            zb[~ok] = np.nan
            z[block] = zb
            scored[block] = ok
            with np.errstate(divide="ignore", invalid="ignore"):
                wb = np.where(ok, 1.0 / np.where(ok, sb, 1.0) ** 2, 0.0)
            weight[block] = wb
            weight_squared[block] = wb * wb
            return _positions(block, ~ok)

        unscored = map_blocks(score, size)
        scored_per_group = _count_except(codes, unscored, sizes)
        k = scored_per_group.astype(np.float64)
        grouped = gather(z, order, first)
        bounds = _winsorising_bounds(grouped, starts, sizes, scored_per_group, winsorise)
        low, high = bounds[:, 0], bounds[:, 1]

        def squared_winsorised(block: slice) -> None:
            block_codes = codes[block]
            z_w = np.clip(z[block], low.take(block_codes), high.take(block_codes))
            second[block] = np.where(scored[block], z_w * z_w, 0.0)

        map_blocks(squared_winsorised, size)
        sum_z2, sum_w, sum_w2 = _bincounts(codes, n_groups, second, weight, weight_squared)
        with np.errstate(invalid="ignore", divide="ignore"):
            phi = np.where(k >= 2, sum_z2 / k, np.nan)
            spread = sum_w - sum_w2 / sum_w
            excess = k * phi - (k - 1.0)
            tau2 = np.where((k >= 2) & (excess > 0) & (spread > 0), excess / spread, 0.0)
    adjusted = overdispersion & (tau2 > 0)
    groups = _Groups(
        target=centre_value,
        multiplier=group_scale,
        organisations=organisations,
        phi=phi,
        tau2=tau2,
        adjusted=np.asarray(adjusted, dtype=bool),
        denominator_min=den_min,
        denominator_max=den_max,
    )
    return groups, group_centre


def _bincounts(codes: np.ndarray, n_groups: int, *weights: np.ndarray) -> list[np.ndarray]:
    """``numpy.bincount(codes, weights=w)`` for each of ``weights``, side by side on threads.

    Each sum is one bincount over the whole table, so its rows are added in
    row order exactly as a single call would.
    """
    return run_parallel([functools.partial(np.bincount, codes, weights=w, minlength=n_groups)
                         for w in weights])


def _inputs_look_valid(x: np.ndarray, n: np.ndarray, kinds: np.ndarray) -> bool:
    """One threaded pass of the count checks: finite, not negative, x <= n for proportions.

    False means a check will fail; the caller then runs the checks one by
    one to name the problem.
    """
    def bad(block: slice) -> bool:
        xb, nb = x[block], n[block]
        found = infinite_or_negative(xb, nb)
        with np.errstate(invalid="ignore"):
            found |= (xb > nb) & (kinds[block] == _PROPORTION)
        return bool(found.any())

    return not any(map_blocks(bad, len(x)))


def _per_group(
    values: np.ndarray,
    codes: np.ndarray,
    layout: tuple[np.ndarray, np.ndarray, np.ndarray],
    missing: float | int,
    message: str,
) -> np.ndarray:
    """The one value each group holds (``missing`` for a group without rows).

    Taken from each group's first row, then every row is checked against
    it (block by block on threads); raises ``ValueError(message)`` if a
    group holds two values.
    """
    order, starts, sizes = layout
    has_rows = sizes > 0
    per_group = np.full(len(sizes), missing, dtype=values.dtype)
    per_group[has_rows] = values.take(order.take(starts[has_rows]))
    if any(map_blocks(
            lambda block: bool(np.any(per_group.take(codes[block]) != values[block])),
            len(values))):
        raise ValueError(message)
    return per_group


def _prepare(
    df: pd.DataFrame,
    numerator: str,
    denominator: str,
    kind: str,
    group_columns: Sequence[str] | str | None,
    multiplier: float | str,
    overdispersion: bool,
    winsorise: float,
    count_transform: str,
    target: str | None,
    function: str,
    poisson_method: str = DEFAULT_POISSON_METHOD,
    in_order_of_appearance: bool = True,
):
    check_dataframe(df, function)
    check_choice(poisson_method, POISSON_METHODS, "poisson_method", function)
    check_choice(count_transform, COUNT_TRANSFORMS, "count_transform", function)
    if not isinstance(overdispersion, (bool, np.bool_)):
        raise ValueError(f"{function}: overdispersion must be True or False.")
    if not (isinstance(winsorise, (int, float)) and 0 <= winsorise < 0.5):
        raise ValueError(
            f"{function}: winsorise must be a fraction in [0, 0.5), e.g. 0.1 for the "
            f"10th/90th percentiles, not {winsorise!r}."
        )
    groups = check_group_columns(group_columns)
    check_columns(df, [numerator, denominator, *groups], function)
    kinds = kind_codes(df, kind, function)
    rows_per_kind = count_codes(kinds, len(INDICATOR_KINDS))
    if not overdispersion and rows_per_kind[INDICATOR_KINDS.index("none")]:
        raise ValueError(
            f"{function}: kind='none' (ADQs, DDDs, costs) has no Poisson variance, so "
            "its funnel only makes sense with overdispersion=True."
        )
    x = numeric_column(df, numerator, function)
    n = numeric_column(df, denominator, function)
    if not _inputs_look_valid(x, n, kinds):
        # Something is wrong: the checks one by one name it.
        for values, name in ((x, numerator), (n, denominator)):
            check_finite_or_missing(values, name, df, function)
            check_non_negative(values, name, df, function)
        check_numerator_within_denominator(
            x, n, (numerator, denominator), df, function, rows=kinds == _PROPORTION
        )
    codes, n_groups = group_codes(df, groups, function, in_order_of_appearance)
    layout = group_layout(codes, n_groups)
    scale = multiplier_values(df, multiplier, function)
    if isinstance(scale, float):
        group_scale = np.full(n_groups, scale)
    else:
        group_scale = _per_group(
            scale, codes, layout, 0.0,
            f"{function}: the multiplier differs between rows of the same group; "
            "each group (e.g. one indicator) needs one multiplier.",
        )
    given_target = None
    if target is not None:
        check_columns(df, [target], function)
        row_target = numeric_column(df, target, function) / scale
        is_proportion = kinds == _PROPORTION
        with np.errstate(invalid="ignore"):
            out_of_range = (row_target < 0) | (is_proportion & (row_target > 1))
        if out_of_range.any():
            first = df.index[int(np.argmax(out_of_range))]
            raise ValueError(
                f"{function}: target column {target!r} has {int(out_of_range.sum())} value(s) "
                f"below 0, or above the multiplier for a proportion (first at index {first})."
            )
        given_target = _target_per_group(row_target, df, groups, codes, layout, group_scale,
                                         target, function)
    return x, n, codes, n_groups, layout, groups, scale, group_scale, given_target, kinds


def _target_per_group(
    row_target: np.ndarray,
    df: pd.DataFrame,
    groups: list[str],
    codes: np.ndarray,
    layout: tuple[np.ndarray, np.ndarray, np.ndarray],
    group_scale: np.ndarray,
    target: str,
    function: str,
) -> np.ndarray:
    """The one target of each group (per unit), from a column repeated on its rows.

    Rows where the column is missing take their group's value; a group whose
    rows all miss it has no target (NaN, hence no limits). Limits, lines and
    z-scores are all centred on this one value, so two different values in
    a group are an error.
    """
    order, starts, sizes = layout
    has_rows = sizes > 0
    grouped = gather(row_target, order, np.empty(len(row_target)))
    lowest = np.full(len(sizes), np.nan)
    highest = np.full(len(sizes), np.nan)
    # fmin / fmax skip NaN: the smallest and largest of the values present.
    lowest[has_rows] = np.fmin.reduceat(grouped, starts[has_rows])
    highest[has_rows] = np.fmax.reduceat(grouped, starts[has_rows])
    differs = np.flatnonzero(lowest != highest)
    differs = differs[~np.isnan(lowest[differs])]
    if len(differs):
        group = differs[0]
        first_row = int(order[starts[group]])
        where = ", ".join(f"{column}={df[column].iloc[first_row]!r}" for column in groups)
        scale = group_scale[group]
        raise ValueError(
            f"{function}: target column {target!r} holds different values within one funnel "
            f"({where or 'the whole table'}; e.g. {lowest[group] * scale:g} and "
            f"{highest[group] * scale:g}); each funnel needs a single target, such as the "
            f"England value of that indicator and period."
        )
    return lowest


def _fit_by_kind(
    kinds: np.ndarray,
    x: np.ndarray,
    n: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    layout: tuple[np.ndarray, np.ndarray, np.ndarray],
    group_scale: np.ndarray,
    given_target: np.ndarray | None,
    overdispersion: bool,
    winsorise: float,
    transform: str,
    function: str,
    workspace: Sequence[np.ndarray] = (),
    denominator_range: bool = True,
) -> tuple[_Groups, np.ndarray, np.ndarray | None]:
    """Group statistics for every kind present; each group must have one kind.

    Returns the group statistics, the kind index of each group (-1 for a
    group without rows) and ``asin(sqrt(target))`` per group when there are
    proportions.
    """
    group_kind = _per_group(
        kinds, codes, layout, -1,
        f"{function}: a group mixes indicator kinds; each group (e.g. one indicator) "
        "needs a single kind.",
    )
    has_proportions = bool((group_kind == _PROPORTION).any())
    groups, centre = _group_statistics(
        x, n, codes, n_groups, layout, group_scale, given_target, kinds, has_proportions,
        overdispersion, winsorise, transform, workspace, denominator_range,
    )
    return groups, group_kind, centre


# --------------------------------------------------------------------------- public


def calculate_funnel_parameters(
    df: pd.DataFrame,
    numerator: str = "numerator",
    denominator: str = "denominator",
    kind: str = "proportion",
    group_columns: Sequence[str] | str | None = DEFAULT_GROUP_COLUMNS,
    multiplier: float | str = 100,
    overdispersion: bool = True,
    winsorise: float = 0.1,
    count_transform: str = "sqrt",
    poisson_method: str = DEFAULT_POISSON_METHOD,
    target: str | None = None,
) -> pd.DataFrame:
    """Funnel target and overdispersion estimates, one row per group.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per organisation (and indicator, period... as ``group_columns``).
    numerator, denominator : str
        Count columns. Rows with a zero or missing denominator are left out.
    kind : str, default "proportion"
        One of "proportion", "rate", "ratio", "none" for every row, or the
        name of a column holding one per row (constant within a group).
        "proportion" uses binomial limits; "rate" and "ratio" Poisson limits
        for the count around ``target x denominator``. "none" (ADQs, DDDs,
        costs) is not a count, so it never gets Poisson limits: it has
        limits only when the overdispersion adjustment widens them
        (tau^2 > 0, on the rates' transformed scale); otherwise its limits,
        flags and z-scores are missing. It requires ``overdispersion=True``.
    group_columns : sequence of str, default ("indicator_id", "org_level", "period", "period_type")
        One funnel per combination of these keys.
    multiplier : float or str, default 100
        Scale of the value, or a column name (constant within a group).
    overdispersion : bool, default True
        Estimate phi and tau^2 and widen the limits when tau^2 > 0.
    winsorise : float, default 0.1
        z-scores are Winsorised at this fraction and its complement (10th and
        90th percentiles) before estimating phi.
    count_transform : {"sqrt", "log"}, default "sqrt"
        Variance-stabilising scale for rates and ratios. "sqrt" copes with
        zero counts; "log" leaves zero counts out of the phi estimate.
    poisson_method : {"interpolated", "exact"}, default "interpolated"
        Unadjusted limits for rates and ratios (used when tau^2 is 0 or the
        adjustment is off). "interpolated" is the method of
        Spiegelhalter (2005, appendix A.2.1): the quantiles of a Poisson
        distribution with mean ``E = r0 n``, interpolated between whole
        counts (:func:`poisson_interpolated_quantile`); for ``E = 10`` the
        95% limits are 3.775 and 16.160. Its lines are slightly saw-toothed,
        and its upper limit is 0 while ``E`` is below ``-log(1 - a/2)``
        (0.025 at 95%). "exact" instead evaluates the exact (chi-squared)
        confidence interval of an *observed* count at ``E``
        (:func:`poisson_exact_control_limits`): smooth, but wider (4.795 to
        18.390 for ``E = 10``) because it answers a different question (where
        the mean lies given a count, not where a count falls given the mean).
    target : str or None, default None
        Column holding the target on the value scale (e.g. ``england_value``),
        one value per group (rows where it is missing take their group's
        value), instead of the pooled value of the group. The z-scores behind
        phi and tau^2 and the limits are then centred on it. Pass the same
        ``target`` to :func:`calculate_funnel_limits` so that row limits,
        lines and flags share one centre.

    Returns
    -------
    pandas.DataFrame
        The group columns, ``funnel_kind``, ``funnel_target`` (pooled value,
        or the given target, x multiplier), ``funnel_target_source``
        ("pooled" or the name of the target column), ``funnel_multiplier``,
        ``funnel_organisations`` (k), ``funnel_phi`` (NaN when k < 2 or
        overdispersion is off), ``funnel_tau2``, ``funnel_adjusted`` (True
        when the limits are widened), ``funnel_count_transform``,
        ``funnel_poisson_method``, ``denominator_min`` and
        ``denominator_max``.

    Raises
    ------
    ValueError
        On missing or non-numeric columns, negative counts, a numerator above
        its denominator for a proportion, a multiplier or target that varies
        within a group, or an unknown ``kind`` / ``count_transform`` /
        ``poisson_method``.

    Notes
    -----
    Proportions: ``y = asin(sqrt(x/n))``, target ``asin(sqrt(p0))`` with
    ``p0 = sum x / sum n`` (or the given target), ``s = 1 / (2 sqrt n)``.
    Rates and ratios with the square-root transform: expected ``E = r0 n``,
    ``y = sqrt(x/E)``, target 1, ``s = 1 / (2 sqrt E)``; with the log
    transform ``y = log(x/E)``, target 0, ``s = 1 / sqrt E``. Then
    ``z = (y - target) / s`` is Winsorised, ``phi = mean(z_w^2)``, and with
    ``w = 1/s^2``, ``tau^2 = (k phi - (k - 1)) / (sum w - sum w^2 / sum w)``
    when ``k phi > k - 1``, else 0. When tau^2 is 0 (or the adjustment is
    off) the unadjusted limits are used, as in FunnelPlotR, except for kind
    "none", which then has none.

    References
    ----------
    Spiegelhalter DJ (2005). Funnel plots for comparing institutional
    performance. Statistics in Medicine 24:1185-1202.
    Spiegelhalter DJ (2005). Handling over-dispersion of performance
    indicators. Quality and Safety in Health Care 14:347-351.
    Mainey C et al. FunnelPlotR (NHS-R Community), R package.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"numerator": [10, 30, 20], "denominator": [100, 100, 100]})
    >>> out = calculate_funnel_parameters(df, group_columns=None, multiplier=1)
    >>> float(out.loc[0, "funnel_target"]), int(out.loc[0, "funnel_organisations"])
    (0.2, 3)
    """
    function = "calculate_funnel_parameters"
    x, n, codes, n_groups, layout, groups, _, group_scale, given_target, kinds = _prepare(
        df, numerator, denominator, kind, group_columns, multiplier,
        overdispersion, winsorise, count_transform, target, function, poisson_method,
    )
    stats_, group_kind, _ = _fit_by_kind(
        kinds, x, n, codes, n_groups, layout, group_scale, given_target, overdispersion,
        winsorise, count_transform, function,
    )
    kind_names = np.array(INDICATOR_KINDS, dtype=object)[np.maximum(group_kind, 0)]
    out = _parameters_frame(df, codes, n_groups, groups, kind_names, count_transform, stats_)
    out.insert(out.columns.get_loc("funnel_target") + 1, "funnel_target_source",
               POOLED_TARGET if target is None else target)
    out.insert(out.columns.get_loc("funnel_count_transform") + 1, "funnel_poisson_method",
               poisson_method)
    return out


def _parameters_frame(df, codes, n_groups, groups, kind, transform, g: _Groups) -> pd.DataFrame:
    if groups:
        out = df.iloc[_first_row_of_each_group(codes)][groups].reset_index(drop=True)
    else:
        out = pd.DataFrame(index=range(n_groups))
    out["funnel_kind"] = kind
    out["funnel_target"] = g.target * g.multiplier
    out["funnel_multiplier"] = g.multiplier
    out["funnel_organisations"] = g.organisations
    out["funnel_phi"] = g.phi
    out["funnel_tau2"] = g.tau2
    out["funnel_adjusted"] = g.adjusted
    out["funnel_count_transform"] = transform
    out["denominator_min"] = g.denominator_min
    out["denominator_max"] = g.denominator_max
    return out


def _adjusted_z(
    family: str,
    x: np.ndarray,
    n: np.ndarray,
    target: np.ndarray,
    tau2: np.ndarray,
    adjusted: np.ndarray,
    transform: str,
    centre: np.ndarray | None,
) -> np.ndarray:
    """z-scores on the variance-stabilised scale, with tau^2 where the group is adjusted.

    ``(y - target) / sqrt(s^2 + tau^2)``, i.e. the unadjusted ``z`` times
    ``s / sqrt(s^2 + tau^2)``; the same scale and terms as the adjusted
    limits, so that ``|z| > z_level`` exactly when the value lies outside
    them. Missing for kind "none" when not adjusted (no Poisson z-score).
    """
    z, s = _z_scores(family, x, n, target, transform, centre)
    with np.errstate(divide="ignore", invalid="ignore"):
        widened = z * (s / np.sqrt(s * s + tau2))
    if family == "none":
        return np.where(adjusted, widened, np.nan)
    return np.where(adjusted, widened, z)


def calculate_funnel_limits(
    df: pd.DataFrame,
    numerator: str = "numerator",
    denominator: str = "denominator",
    kind: str = "proportion",
    group_columns: Sequence[str] | str | None = DEFAULT_GROUP_COLUMNS,
    confidence: float | Sequence[float] = DEFAULT_CONFIDENCE,
    multiplier: float | str = 100,
    overdispersion: bool = True,
    winsorise: float = 0.1,
    count_transform: str = "sqrt",
    target: str | None = None,
    poisson_method: str = DEFAULT_POISSON_METHOD,
) -> pd.DataFrame:
    """Add funnel limits at each organisation's denominator, a z-score and outlier flags.

    Parameters
    ----------
    df, numerator, denominator, kind, group_columns, multiplier, overdispersion,
    winsorise, count_transform, poisson_method, target
        As :func:`calculate_funnel_parameters` (``target``: a column such as
        ``england_value``, one value per group, to centre on instead of the
        pooled value of the group).
    confidence : float or sequence of float, default (0.95, 0.998)
        Limit levels, each strictly between 0 and 1.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``funnel_target``, ``funnel_lower_<level>``,
        ``funnel_upper_<level>`` (value scale), ``funnel_flag_<level>``
        (categorical "below" / "inside" / "above"; missing when the row has
        no value or no limits), ``funnel_z``, and the group's
        ``funnel_phi``, ``funnel_tau2`` and ``funnel_adjusted``.

        ``funnel_z`` is the z-score of the row on the variance-stabilised
        scale of its kind: ``(y - target) / sqrt(s^2 + tau^2)`` when the
        group is adjusted, ``(y - target) / s`` otherwise (``y``, ``target``
        and ``s`` as in :func:`calculate_funnel_parameters`). Missing when
        the row has no value, and for kind "none" without adjustment; minus
        infinity for a zero count on the log scale.

    Raises
    ------
    ValueError
        As :func:`calculate_funnel_parameters`, and for a bad confidence level.

    Notes
    -----
    Unadjusted proportion limits are ``p0 +/- z sqrt(p0 (1 - p0) / n)``
    truncated to [0, 1]; unadjusted rate/ratio limits are Poisson limits
    for the expected count ``E = r0 n`` divided by ``n`` (interpolated
    quantiles, or the exact form on request: see ``poisson_method``). Kind
    "none" has no unadjusted limits. Adjusted limits are
    ``sin^2(asin(sqrt p0) +/- z sqrt(s^2 + tau^2))`` for proportions and
    ``r0 (1 +/- z sqrt(s^2 + tau^2))^2`` (square-root scale) or
    ``r0 exp(+/- z sqrt(s^2 + tau^2))`` (log scale) for rates, ratios and
    "none". A value exactly on a limit is "inside".

    The flags compare the value with the limits. In an adjusted group this
    is the same as comparing ``funnel_z`` with ``z_level`` (1.959964 at 95%,
    3.090232 at 99.8%): "above" when ``funnel_z > z_level``, "below" when
    ``funnel_z < -z_level`` (up to rounding at the limit itself). Without
    adjustment the limits are binomial / Poisson, so near a limit the flag
    and the transformed-scale ``funnel_z`` may disagree; the flag is the
    verdict.

    References
    ----------
    Spiegelhalter DJ (2005). Funnel plots for comparing institutional
    performance. Statistics in Medicine 24:1185-1202.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"numerator": [20, 20, 70], "denominator": [100, 100, 200]})
    >>> out = calculate_funnel_limits(df, group_columns=None, confidence=0.95,
    ...                               multiplier=1, overdispersion=False)
    >>> out[["funnel_lower_95", "funnel_upper_95"]].round(6).iloc[0].tolist()
    [0.187485, 0.362515]
    >>> out["funnel_flag_95"].tolist()
    ['inside', 'inside', 'above']
    """
    function = "calculate_funnel_limits"
    levels = check_confidence(confidence, function)
    x, n, codes, n_groups, layout, groups, scale, group_scale, given_target, kinds = _prepare(
        df, numerator, denominator, kind, group_columns, multiplier,
        overdispersion, winsorise, count_transform, target, function, poisson_method,
        in_order_of_appearance=False,
    )
    size = len(df)
    # Every row of these is written below; until then they serve as workspace.
    funnel_target = np.empty(size)
    lowers = [np.empty(size) for _ in levels]
    uppers = [np.empty(size) for _ in levels]
    phi = np.empty(size)
    tau2 = np.empty(size)
    funnel_z = np.empty(size)
    adjusted = np.empty(size, dtype=bool)
    flags = [np.empty(size, dtype=np.int8) for _ in levels]
    g, _, group_centre = _fit_by_kind(
        kinds, x, n, codes, n_groups, layout, group_scale, given_target, overdispersion,
        winsorise, count_transform, function,
        workspace=[*lowers, *uppers, funnel_target, phi, tau2], denominator_range=False,
    )
    scaled_target = g.target * g.multiplier  # target x multiplier, per group

    def limits_block(block: slice) -> None:
        block_codes = codes[block]
        xb, nb = x[block], n[block]
        sb = scale if np.isscalar(scale) else scale[block]
        usable = (nb > 0) & np.isfinite(nb)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(usable, xb / nb, np.nan) * sb
        n_known = np.where(usable, nb, np.nan)
        tau2_b = g.tau2.take(block_codes)
        adjusted_b = g.adjusted.take(block_codes)
        tau2[block] = tau2_b
        adjusted[block] = adjusted_b
        phi[block] = g.phi.take(block_codes)
        target_b = g.target.take(block_codes)
        funnel_target[block] = scaled_target.take(block_codes)  # = target x multiplier
        z_b = funnel_z[block]  # a view: written in place
        for family, rows in _family_parts(kinds[block]):
            centre = None
            if family == "proportion" and group_centre is not None:
                centre = group_centre.take(_pick(block_codes, rows))
            part_limits = _limits_at(
                family, _pick(target_b, rows), _pick(n_known, rows), levels,
                _pick(tau2_b, rows), _pick(adjusted_b, rows), count_transform,
                poisson_method, centre,
            )
            part_value = _pick(value, rows)
            part_scale = _pick(sb, rows)
            value_known = np.isfinite(part_value)
            part_z = _adjusted_z(family, _pick(xb, rows), _pick(n_known, rows),
                                 _pick(target_b, rows), _pick(tau2_b, rows),
                                 _pick(adjusted_b, rows), count_transform, centre)
            part_z[~value_known] = np.nan
            if rows is None:
                z_b[:] = part_z
            else:
                z_b[rows] = part_z
            for i, (lower, upper) in enumerate(part_limits):
                lower *= part_scale  # fresh arrays: scaled in place
                upper *= part_scale
                below = part_value < lower
                above = part_value > upper
                above &= ~below
                # 0 below, 1 inside, 2 above; -1 where the value or a limit is missing
                flag = np.int8(1) - below.view(np.int8) + above.view(np.int8)
                flag[~(value_known & np.isfinite(lower) & np.isfinite(upper))] = -1
                for column, part in ((lowers[i], lower), (uppers[i], upper), (flags[i], flag)):
                    if rows is None:
                        column[block] = part
                    else:
                        column[block][rows] = part  # column[block] is a view

    map_blocks(limits_block, size)
    new_columns: dict[str, object] = {"funnel_target": funnel_target}
    for i, level in enumerate(levels):
        new_columns[funnel_lower_column(level)] = lowers[i]
        new_columns[funnel_upper_column(level)] = uppers[i]
        new_columns[funnel_flag_column(level)] = categorical_from_codes(flags[i], FLAG_CATEGORIES)
    new_columns[FUNNEL_Z_COLUMN] = funnel_z
    new_columns["funnel_phi"] = phi
    new_columns["funnel_tau2"] = tau2
    new_columns["funnel_adjusted"] = adjusted
    return assign_columns(df, new_columns)


def calculate_funnel_lines(
    parameters: pd.DataFrame,
    denominators: Sequence[float] | np.ndarray | None = None,
    points: int = 100,
    confidence: float | Sequence[float] = DEFAULT_CONFIDENCE,
    prefix: str = "funnel_",
    target: str | None = None,
) -> pd.DataFrame:
    """Smooth funnel limit lines over a grid of denominators, for drawing.

    Parameters
    ----------
    parameters : pandas.DataFrame
        Output of :func:`calculate_funnel_parameters` (one row per funnel).
    denominators : array-like or None, default None
        Denominators to evaluate for every funnel. ``None`` uses ``points``
        values spaced evenly on a log scale from each funnel's smallest to
        its largest denominator.
    points : int, default 100
        Grid size when ``denominators`` is None.
    confidence : float or sequence of float, default (0.95, 0.998)
        Levels of the lines.
    prefix : str, default "funnel_"
        Start of the limit and target column names. ``prefix=""`` gives
        ``lower_95``, ``upper_99_8``..., the names :mod:`moopt.charts.funnel`
        reads.
    target : str or None, default None
        The ``target`` the parameters were fitted with (e.g.
        ``"england_value"``; None for the pooled value). The lines are always
        centred on the parameters' ``funnel_target``; passing ``target``
        checks that this is the centre intended, so that lines, row limits
        and the drawn centre line cannot silently differ.

    Returns
    -------
    pandas.DataFrame
        Long format: the parameters' group columns, ``denominator``,
        ``<prefix>target`` and ``<prefix>lower_<level>`` /
        ``<prefix>upper_<level>`` on the value scale (missing for kind
        "none" without adjustment).

    Raises
    ------
    ValueError
        If ``parameters`` lacks the columns written by
        :func:`calculate_funnel_parameters`, ``points`` < 2, a denominator
        is not positive, or the parameters were fitted around a target other
        than ``target``.

    Notes
    -----
    The same formulas as :func:`calculate_funnel_limits`, so a line
    evaluated at an organisation's denominator equals its row limits when
    both were computed with the same ``target``.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"numerator": [20, 20], "denominator": [100, 100]})
    >>> p = calculate_funnel_parameters(df, group_columns=None, multiplier=1,
    ...                                 overdispersion=False)
    >>> lines = calculate_funnel_lines(p, denominators=[100], confidence=0.95)
    >>> lines[["funnel_lower_95", "funnel_upper_95"]].round(6).iloc[0].tolist()
    [0.121601, 0.278399]
    """
    function = "calculate_funnel_lines"
    check_dataframe(parameters, function)
    levels = check_confidence(confidence, function)
    required = [
        "funnel_kind", "funnel_target", "funnel_multiplier", "funnel_tau2",
        "funnel_adjusted", "funnel_count_transform", "denominator_min", "denominator_max",
    ]
    if "funnel_poisson_method" not in parameters.columns:
        parameters = parameters.assign(funnel_poisson_method=DEFAULT_POISSON_METHOD)
    check_columns(parameters, required, function)
    if target is not None:
        source = (parameters["funnel_target_source"] if "funnel_target_source" in parameters
                  else pd.Series(POOLED_TARGET, index=parameters.index))
        wrong = source != target
        if wrong.any():
            raise ValueError(
                f"{function}: target={target!r}, but the parameters were fitted around "
                f"{source[wrong].iloc[0]!r} (row {parameters.index[wrong.to_numpy()][0]}); call "
                f"calculate_funnel_parameters(..., target={target!r}) so that the lines, the "
                "row limits and the centre line share one target."
            )
    n_funnels = len(parameters)
    if denominators is None:
        if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 2:
            raise ValueError(f"{function}: points must be a whole number of at least 2.")
        lo = parameters["denominator_min"].to_numpy(dtype=float)
        hi = parameters["denominator_max"].to_numpy(dtype=float)
        lo = np.where(lo > 0, lo, np.where(hi > 0, hi / 1000.0, np.nan))
        step = np.linspace(0.0, 1.0, points)
        grid = np.exp(np.log(lo)[:, None] + (np.log(hi) - np.log(lo))[:, None] * step[None, :])
    else:
        given = np.asarray(denominators, dtype=float).ravel()
        if given.size == 0 or np.any(~np.isfinite(given)) or np.any(given <= 0):
            raise ValueError(f"{function}: denominators must be positive finite numbers.")
        grid = np.tile(given, (n_funnels, 1))
    per_funnel = grid.shape[1]
    funnel_index = np.repeat(np.arange(n_funnels), per_funnel)
    group_columns = [c for c in parameters.columns if c not in required and not c.startswith(
        "funnel_")]
    out = parameters.iloc[funnel_index][group_columns].reset_index(drop=True)
    out["denominator"] = grid.ravel()
    target_values = parameters["funnel_target"].to_numpy(dtype=float)
    scale = parameters["funnel_multiplier"].to_numpy(dtype=float)
    out[f"{prefix}target"] = target_values[funnel_index]
    n = grid.ravel()
    for level in levels:
        lower = np.full(n.shape, np.nan)
        upper = np.full(n.shape, np.nan)
        for (kind, transform, method), rows in parameters.groupby(
            ["funnel_kind", "funnel_count_transform", "funnel_poisson_method"], sort=False
        ).indices.items():
            pick = np.isin(funnel_index, rows)
            fi = funnel_index[pick]
            low, up = _limits(
                kind,
                target_values[fi] / scale[fi],
                n[pick],
                level,
                parameters["funnel_tau2"].to_numpy(dtype=float)[fi],
                parameters["funnel_adjusted"].to_numpy(dtype=bool)[fi],
                transform,
                method,
            )
            lower[pick] = low * scale[fi]
            upper[pick] = up * scale[fi]
        out[f"{prefix}lower_{confidence_label(level)}"] = lower
        out[f"{prefix}upper_{confidence_label(level)}"] = upper
    return out
