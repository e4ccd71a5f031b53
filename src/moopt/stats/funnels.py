"""Funnel-plot control limits, with Spiegelhalter's overdispersion adjustment.

A funnel plot shows each organisation's value against its denominator, with
control limits around a target (the pooled value of the organisations
compared) that narrow as the denominator grows. Prescribing data vary far
more between organisations than chance alone allows, so by default the
limits are widened by an additive random effect (Spiegelhalter 2005, as in
the NHS-R ``FunnelPlotR`` package); switch it off with
``overdispersion=False``.

Three public functions:

* :func:`calculate_funnel_parameters` - one row per group (indicator x level x
  period x period type by default): target, phi, tau^2, whether the limits
  were adjusted, and the denominator range.
* :func:`calculate_funnel_limits` - the limits at each organisation's own
  denominator and a flag "below" / "inside" / "above", added to every row.
* :func:`calculate_funnel_lines` - smooth limit lines over a grid of
  denominators, for drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from moopt.stats._validate import (
    DEFAULT_CONFIDENCE,
    DEFAULT_GROUP_COLUMNS,
    INDICATOR_KINDS,
    assign_columns,
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
    group_codes,
    kind_codes,
    multiplier_values,
    numeric_column,
    z_for,
)
from moopt.stats.ranking import _quantiles_from_sorted, _sort_within_groups

FLAG_CATEGORIES: tuple[str, ...] = ("below", "inside", "above")
COUNT_TRANSFORMS: tuple[str, ...] = ("sqrt", "log")
POISSON_METHODS: tuple[str, ...] = ("exact", "interpolated")


def funnel_lower_column(level: float) -> str:
    """'funnel_lower_95' for 0.95."""
    return f"funnel_lower_{confidence_label(level)}"


def funnel_upper_column(level: float) -> str:
    """'funnel_upper_99_8' for 0.998."""
    return f"funnel_upper_{confidence_label(level)}"


def funnel_flag_column(level: float) -> str:
    """'funnel_flag_95' for 0.95."""
    return f"funnel_flag_{confidence_label(level)}"


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
    """
    e = np.asarray(expected, dtype=np.float64)
    alpha = 1.0 - level
    with np.errstate(invalid="ignore"):
        lower = np.where(e > 0, stats.chi2.ppf(alpha / 2.0, 2.0 * e) / 2.0, 0.0)
        upper = stats.chi2.ppf(1.0 - alpha / 2.0, 2.0 * e + 2.0) / 2.0
    bad = ~(np.isfinite(e) & (e >= 0))
    lower = np.where(bad, np.nan, lower)
    upper = np.where(bad, np.nan, upper)
    return lower, upper


@dataclass
class _Groups:
    """Per-group quantities for one indicator kind."""

    target: np.ndarray  # pooled value per group, per unit (not multiplied)
    multiplier: np.ndarray
    organisations: np.ndarray
    phi: np.ndarray
    tau2: np.ndarray
    adjusted: np.ndarray
    denominator_min: np.ndarray
    denominator_max: np.ndarray


def _z_scores(
    kind: str, x: np.ndarray, n: np.ndarray, target: np.ndarray, transform: str
) -> tuple[np.ndarray, np.ndarray]:
    """Unadjusted z-scores on the variance-stabilised scale, and their s."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "proportion":
            s = 1.0 / (2.0 * np.sqrt(n))
            z = (np.arcsin(np.sqrt(x / n)) - np.arcsin(np.sqrt(target))) / s
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
    poisson_method: str = "exact",
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper limits per unit (before the multiplier) at denominator n."""
    z = z_for(level)
    lower = np.full(n.shape, np.nan)
    upper = np.full(n.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        plain = ~adjusted
        if kind == "proportion":
            if plain.any():
                p0, nn = target[plain], n[plain]
                half = z * np.sqrt(p0 * (1.0 - p0) / nn)
                lower[plain] = np.clip(p0 - half, 0.0, 1.0)
                upper[plain] = np.clip(p0 + half, 0.0, 1.0)
            if adjusted.any():
                p0, nn, t2 = target[adjusted], n[adjusted], tau2[adjusted]
                centre = np.arcsin(np.sqrt(p0))
                half = z * np.sqrt(1.0 / (4.0 * nn) + t2)
                lower[adjusted] = np.sin(np.clip(centre - half, 0.0, np.pi / 2)) ** 2
                upper[adjusted] = np.sin(np.clip(centre + half, 0.0, np.pi / 2)) ** 2
        else:
            if plain.any():
                r0, nn = target[plain], n[plain]
                expected = r0 * nn
                alpha = 1.0 - level
                if poisson_method == "exact":
                    low, high = poisson_exact_control_limits(expected, level)
                else:
                    low = poisson_interpolated_quantile(alpha / 2.0, expected)
                    high = poisson_interpolated_quantile(1.0 - alpha / 2.0, expected)
                lower[plain] = np.where(nn > 0, low / nn, np.nan)
                upper[plain] = np.where(nn > 0, high / nn, np.nan)
            if adjusted.any():
                r0, nn, t2 = target[adjusted], n[adjusted], tau2[adjusted]
                expected = r0 * nn
                if transform == "sqrt":
                    half = z * np.sqrt(1.0 / (4.0 * expected) + t2)
                    lower[adjusted] = r0 * np.maximum(1.0 - half, 0.0) ** 2
                    upper[adjusted] = r0 * (1.0 + half) ** 2
                else:
                    half = z * np.sqrt(1.0 / expected + t2)
                    lower[adjusted] = r0 * np.exp(-half)
                    upper[adjusted] = r0 * np.exp(half)
    return lower, upper


def _group_statistics(
    kind: str,
    x: np.ndarray,
    n: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    scale: np.ndarray,
    row_target: np.ndarray | None,
    overdispersion: bool,
    winsorise: float,
    transform: str,
) -> tuple[_Groups, np.ndarray]:
    """Targets, phi and tau^2 per group; also returns the per-row target."""
    usable = (n > 0) & np.isfinite(x) & np.isfinite(n)
    weights = usable.astype(np.float64)
    sum_x = np.bincount(codes, weights=np.where(usable, x, 0.0), minlength=n_groups)
    sum_n = np.bincount(codes, weights=np.where(usable, n, 0.0), minlength=n_groups)
    organisations = np.bincount(codes, weights=weights, minlength=n_groups).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.where(sum_n > 0, sum_x / sum_n, np.nan)
    target = pooled[codes] if row_target is None else row_target

    den_min = np.full(n_groups, np.inf)
    den_max = np.full(n_groups, -np.inf)
    np.minimum.at(den_min, codes[usable], n[usable])
    np.maximum.at(den_max, codes[usable], n[usable])
    den_min[~np.isfinite(den_min)] = np.nan
    den_max[~np.isfinite(den_max)] = np.nan

    # Multiplier per group (validated constant within each group by the caller).
    group_scale = np.ones(n_groups)
    group_scale[codes] = scale

    phi = np.full(n_groups, np.nan)
    tau2 = np.zeros(n_groups)
    if overdispersion:
        z, s = _z_scores(kind, x, n, target, transform)
        scored = usable & np.isfinite(z) & np.isfinite(s) & (s > 0)
        zc = np.where(scored, z, np.nan)
        _, sorted_z, _, starts, counts = _sort_within_groups(
            codes, zc, n_groups, with_rows=False
        )
        bounds = _quantiles_from_sorted(sorted_z, starts, counts, [winsorise, 1.0 - winsorise])
        z_w = np.clip(zc, bounds[codes, 0], bounds[codes, 1])
        k = np.bincount(codes, weights=scored.astype(np.float64), minlength=n_groups)
        sum_z2 = np.bincount(codes, weights=np.where(scored, z_w * z_w, 0.0), minlength=n_groups)
        w = np.where(scored, 1.0 / np.where(scored, s, 1.0) ** 2, 0.0)
        sum_w = np.bincount(codes, weights=w, minlength=n_groups)
        sum_w2 = np.bincount(codes, weights=w * w, minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            phi = np.where(k >= 2, sum_z2 / k, np.nan)
            spread = sum_w - sum_w2 / sum_w
            excess = k * phi - (k - 1.0)
            tau2 = np.where((k >= 2) & (excess > 0) & (spread > 0), excess / spread, 0.0)
    adjusted = overdispersion & (tau2 > 0)
    groups = _Groups(
        target=pooled,
        multiplier=group_scale,
        organisations=organisations,
        phi=phi,
        tau2=tau2,
        adjusted=np.asarray(adjusted, dtype=bool),
        denominator_min=den_min,
        denominator_max=den_max,
    )
    return groups, target


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
    poisson_method: str = "exact",
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
    is_proportion = kinds == INDICATOR_KINDS.index("proportion")
    if not overdispersion and (kinds == INDICATOR_KINDS.index("none")).any():
        raise ValueError(
            f"{function}: kind='none' (ADQs, DDDs, costs) has no Poisson variance, so "
            "its funnel only makes sense with overdispersion=True."
        )
    x = numeric_column(df, numerator, function)
    n = numeric_column(df, denominator, function)
    for values, name in ((x, numerator), (n, denominator)):
        check_finite_or_missing(values, name, df, function)
        check_non_negative(values, name, df, function)
    if is_proportion.any():
        check_numerator_within_denominator(
            np.where(is_proportion, x, 0.0), n, (numerator, denominator), df, function
        )
    codes, n_groups = group_codes(df, groups, function)
    scale = multiplier_values(df, multiplier, function)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), x.shape).copy()
    first = np.zeros(n_groups)
    first[codes] = scale
    if np.any(first[codes] != scale):
        raise ValueError(
            f"{function}: the multiplier differs between rows of the same group; "
            "each group (e.g. one indicator) needs one multiplier."
        )
    row_target = None
    if target is not None:
        check_columns(df, [target], function)
        row_target = numeric_column(df, target, function) / scale
        if np.any(is_proportion & ((row_target < 0) | (row_target > 1))):
            raise ValueError(
                f"{function}: target column {target!r} must lie between 0 and the multiplier "
                "for a proportion."
            )
    return x, n, codes, n_groups, groups, scale, row_target, kinds


def _fit_by_kind(
    kinds: np.ndarray,
    x: np.ndarray,
    n: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    scale: np.ndarray,
    row_target: np.ndarray | None,
    overdispersion: bool,
    winsorise: float,
    transform: str,
    function: str,
) -> tuple[_Groups, np.ndarray, np.ndarray, list[tuple[str, np.ndarray | None]]]:
    """Group statistics for every kind present; each group must have one kind.

    Returns the merged group statistics, the kind index of each group, the
    per-row target, and (kind, row mask or None for all rows) pairs.
    """
    merged = _Groups(
        target=np.full(n_groups, np.nan),
        multiplier=np.ones(n_groups),
        organisations=np.zeros(n_groups, dtype=np.int64),
        phi=np.full(n_groups, np.nan),
        tau2=np.zeros(n_groups),
        adjusted=np.zeros(n_groups, dtype=bool),
        denominator_min=np.full(n_groups, np.nan),
        denominator_max=np.full(n_groups, np.nan),
    )
    group_kind = np.full(n_groups, -1)
    per_row_target = np.full(len(x), np.nan)
    parts: list[tuple[str, np.ndarray | None]] = []
    for index, each in enumerate(INDICATOR_KINDS):
        mask = kinds == index
        if not mask.any():
            continue
        everything = bool(mask.all())
        pick = (lambda a: a) if everything else (lambda a: a[mask])
        sub_codes = pick(codes)
        stats_, target = _group_statistics(
            each, pick(x), pick(n), sub_codes, n_groups, pick(scale),
            None if row_target is None else pick(row_target), overdispersion, winsorise,
            transform,
        )
        present = np.bincount(sub_codes, minlength=n_groups) > 0
        if (group_kind[present] >= 0).any():
            raise ValueError(
                f"{function}: a group mixes indicator kinds; each group (e.g. one indicator) "
                "needs a single kind."
            )
        group_kind[present] = index
        for field in ("target", "multiplier", "organisations", "phi", "tau2", "adjusted",
                      "denominator_min", "denominator_max"):
            getattr(merged, field)[present] = getattr(stats_, field)[present]
        if everything:
            per_row_target = target
        else:
            per_row_target[mask] = target
        parts.append((each, None if everything else mask))
    return merged, group_kind, per_row_target, parts


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
    poisson_method: str = "exact",
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
        for the count around ``target x denominator``; "none" (ADQs, costs)
        is treated like a rate but only with ``overdispersion=True``.
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
    poisson_method : {"exact", "interpolated"}, default "exact"
        Unadjusted limits for rates and ratios: "exact" evaluates the exact
        (chi-squared) Poisson interval at the expected count ``E = r0 n``,
        which is smooth and narrows steadily as ``n`` grows; "interpolated"
        uses Spiegelhalter's interpolated discrete quantile
        (:func:`poisson_interpolated_quantile`), whose lines are slightly
        saw-toothed and whose upper limit is 0 while ``E`` is below about
        ``-log(1 - a/2)`` (0.025 at 95%).

    Returns
    -------
    pandas.DataFrame
        The group columns, ``funnel_kind``, ``funnel_target`` (pooled value
        x multiplier), ``funnel_multiplier``, ``funnel_organisations`` (k),
        ``funnel_phi`` (NaN when k < 2 or overdispersion is off),
        ``funnel_tau2``, ``funnel_adjusted`` (True when the limits are
        widened), ``funnel_count_transform``, ``funnel_poisson_method``,
        ``denominator_min`` and
        ``denominator_max``.

    Raises
    ------
    ValueError
        On missing or non-numeric columns, negative counts, a numerator above
        its denominator for a proportion, a multiplier that varies within a
        group, or an unknown ``kind`` / ``count_transform``.

    Notes
    -----
    Proportions: ``y = asin(sqrt(x/n))``, target ``asin(sqrt(p0))`` with
    ``p0 = sum x / sum n``, ``s = 1 / (2 sqrt n)``. Rates and ratios with the
    square-root transform: expected ``E = r0 n``, ``y = sqrt(x/E)``, target 1,
    ``s = 1 / (2 sqrt E)``; with the log transform ``y = log(x/E)``, target
    0, ``s = 1 / sqrt E``. Then ``z = (y - target) / s`` is Winsorised,
    ``phi = mean(z_w^2)``, and with ``w = 1/s^2``,
    ``tau^2 = (k phi - (k - 1)) / (sum w - sum w^2 / sum w)`` when
    ``k phi > k - 1``, else 0. When tau^2 is 0 (or the adjustment is off)
    the unadjusted limits are used, as in FunnelPlotR.

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
    x, n, codes, n_groups, groups, scale, _, kinds = _prepare(
        df, numerator, denominator, kind, group_columns, multiplier,
        overdispersion, winsorise, count_transform, None, function, poisson_method,
    )
    stats_, group_kind, _, _ = _fit_by_kind(
        kinds, x, n, codes, n_groups, scale, None, overdispersion, winsorise, count_transform,
        function,
    )
    kind_names = np.array(INDICATOR_KINDS, dtype=object)[np.maximum(group_kind, 0)]
    out = _parameters_frame(df, codes, n_groups, groups, kind_names, count_transform, stats_)
    out.insert(out.columns.get_loc("funnel_count_transform") + 1, "funnel_poisson_method",
               poisson_method)
    return out


def _parameters_frame(df, codes, n_groups, groups, kind, transform, g: _Groups) -> pd.DataFrame:
    if groups:
        first = pd.Series(codes).drop_duplicates().index.to_numpy()
        out = df.iloc[first][groups].reset_index(drop=True)
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
    poisson_method: str = "exact",
) -> pd.DataFrame:
    """Add funnel limits at each organisation's denominator and an outlier flag.

    Parameters
    ----------
    df, numerator, denominator, kind, group_columns, multiplier, overdispersion,
    winsorise, count_transform, poisson_method
        As :func:`calculate_funnel_parameters`.
    confidence : float or sequence of float, default (0.95, 0.998)
        Limit levels, each strictly between 0 and 1.
    target : str or None, default None
        Column holding the target on the value scale (e.g. ``england_value``)
        instead of the pooled value of the group.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``funnel_target``, ``funnel_lower_<level>``,
        ``funnel_upper_<level>`` (value scale), ``funnel_flag_<level>``
        (categorical "below" / "inside" / "above"; missing when the row has
        no value), and the group's ``funnel_phi``, ``funnel_tau2`` and
        ``funnel_adjusted``.

    Raises
    ------
    ValueError
        As :func:`calculate_funnel_parameters`, and for a bad confidence level.

    Notes
    -----
    Unadjusted proportion limits are ``p0 +/- z sqrt(p0 (1 - p0) / n)``
    truncated to [0, 1]; unadjusted rate/ratio limits are exact Poisson
    limits at the expected count ``E = r0 n`` divided by ``n``
    (:func:`poisson_exact_control_limits`, or
    :func:`poisson_interpolated_quantile` on request). Adjusted limits are
    ``sin^2(asin(sqrt p0) +/- z sqrt(s^2 + tau^2))`` for proportions and
    ``r0 (1 +/- z sqrt(s^2 + tau^2))^2`` (square-root scale) or
    ``r0 exp(+/- z sqrt(s^2 + tau^2))`` (log scale) for rates. A value
    exactly on a limit is "inside".

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
    x, n, codes, n_groups, groups, scale, row_target, kinds = _prepare(
        df, numerator, denominator, kind, group_columns, multiplier,
        overdispersion, winsorise, count_transform, target, function, poisson_method,
    )
    g, _, per_row_target, parts = _fit_by_kind(
        kinds, x, n, codes, n_groups, scale, row_target, overdispersion, winsorise,
        count_transform, function,
    )
    usable = (n > 0) & np.isfinite(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(usable, x / n, np.nan) * scale
    new_columns: dict[str, object] = {"funnel_target": per_row_target * scale}
    adjusted = g.adjusted[codes]
    tau2 = g.tau2[codes]
    n_safe = np.where(usable, n, np.nan)
    for level in levels:
        lower = np.full(len(df), np.nan)
        upper = np.full(len(df), np.nan)
        for each, mask in parts:
            if mask is None:
                lower, upper = _limits(
                    each, per_row_target, n_safe, level, tau2, adjusted, count_transform,
                    poisson_method,
                )
            else:
                lower[mask], upper[mask] = _limits(
                    each, per_row_target[mask], n_safe[mask], level, tau2[mask],
                    adjusted[mask], count_transform, poisson_method,
                )
        lower, upper = lower * scale, upper * scale
        flag = np.where(value < lower, 0, np.where(value > upper, 2, 1))
        known = np.isfinite(value) & np.isfinite(lower) & np.isfinite(upper)
        new_columns[funnel_lower_column(level)] = lower
        new_columns[funnel_upper_column(level)] = upper
        new_columns[funnel_flag_column(level)] = categorical_from_codes(
            np.where(known, flag, -1), FLAG_CATEGORIES
        )
    new_columns["funnel_phi"] = g.phi[codes]
    new_columns["funnel_tau2"] = tau2
    new_columns["funnel_adjusted"] = adjusted
    return assign_columns(df, new_columns)


def calculate_funnel_lines(
    parameters: pd.DataFrame,
    denominators: Sequence[float] | np.ndarray | None = None,
    points: int = 100,
    confidence: float | Sequence[float] = DEFAULT_CONFIDENCE,
    prefix: str = "funnel_",
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

    Returns
    -------
    pandas.DataFrame
        Long format: the parameters' group columns, ``denominator``,
        ``<prefix>target`` and ``<prefix>lower_<level>`` /
        ``<prefix>upper_<level>`` on the value scale.

    Raises
    ------
    ValueError
        If ``parameters`` lacks the columns written by
        :func:`calculate_funnel_parameters`, ``points`` < 2, or a
        denominator is not positive.

    Notes
    -----
    The same formulas as :func:`calculate_funnel_limits`, so a line
    evaluated at an organisation's denominator equals its row limits.

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
        parameters = parameters.assign(funnel_poisson_method="exact")
    check_columns(parameters, required, function)
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
    target = parameters["funnel_target"].to_numpy(dtype=float)
    scale = parameters["funnel_multiplier"].to_numpy(dtype=float)
    out[f"{prefix}target"] = target[funnel_index]
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
                target[fi] / scale[fi],
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
