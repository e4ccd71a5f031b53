"""Trends over time: seasonal adjustment, modelled change per year, recent-trend marker.

* :func:`calculate_seasonal_adjustment` - STL decomposition (period 12) of
  monthly series, giving seasonally adjusted values for SPC on seasonal
  indicators such as antibiotics.
* :func:`calculate_trend_model` - a GLM per series with a log(denominator)
  offset, month-of-year terms and quasi-Poisson or negative binomial
  variance, reported as the percentage change per year with HAC
  (autocorrelation-robust) confidence limits.
* :func:`calculate_recent_trend` - the Fingertips-style marker over the last
  five points: a chi-squared test for trend at 99.8%.

The first two fit one small model per series (a loop over series, not rows);
the marker is fully vectorised.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from moopt.stats._validate import (
    INDICATOR_KINDS,
    assign_columns,
    check_choice,
    check_columns,
    check_dataframe,
    check_group_columns,
    check_non_negative,
    numeric_column,
    z_for,
)
from moopt.stats.spc import DEFAULT_SERIES_COLUMNS, _series_order

TREND_MARKERS: tuple[str, ...] = (
    "increasing",
    "decreasing",
    "no significant change",
    "cannot be calculated",
)
FAMILIES: tuple[str, ...] = ("quasi_poisson", "negative_binomial")
ON_PROBLEM: tuple[str, ...] = ("raise", "skip")


def _month_index(df: pd.DataFrame, period: str, function: str) -> np.ndarray:
    """Months since year 0 for a datetime period column."""
    values = df[period]
    if not pd.api.types.is_datetime64_any_dtype(values.dtype):
        raise ValueError(
            f"{function}: column {period!r} must hold dates (datetime64) so that months "
            f"can be told apart; it has dtype {values.dtype}."
        )
    return (values.dt.year * 12 + values.dt.month - 1).to_numpy(dtype=np.int64)


def _series_blocks(order: np.ndarray, codes: np.ndarray) -> list[np.ndarray]:
    """Row positions of each series, each sorted by period."""
    c = codes[order]
    cuts = np.flatnonzero(c[1:] != c[:-1]) + 1
    return np.split(order, cuts) if len(order) else []


def _series_label(df: pd.DataFrame, row: int, series: list[str]) -> str:
    if not series:
        return "the series"
    return ", ".join(f"{c}={df[c].iloc[row]!r}" for c in series)


def calculate_seasonal_adjustment(
    df: pd.DataFrame,
    value: str = "value",
    period: str = "period",
    series_columns: Sequence[str] | str | None = DEFAULT_SERIES_COLUMNS,
    seasonal_period: int = 12,
    robust: bool = True,
    on_short_series: str = "raise",
    seasonal_degree: int = 1,
) -> pd.DataFrame:
    """Add STL seasonal, trend and seasonally adjusted columns to monthly series.

    Parameters
    ----------
    df : pandas.DataFrame
        Monthly values, one row per series and month.
    value : str, default "value"
        Column to decompose.
    period : str, default "period"
        Datetime column (one row per calendar month, no gaps).
    series_columns : sequence of str, default DEFAULT_SERIES_COLUMNS
        Columns identifying one series: ("indicator_id", "org_level",
        "org_code", "period_type").
    seasonal_period : int, default 12
        Length of the seasonal cycle in months.
    robust : bool, default True
        Robust STL (down-weights outlying months).
    on_short_series : {"raise", "skip"}, default "raise"
        What to do with a series shorter than two seasonal cycles, with gaps
        or with missing values: raise, or leave its new columns NaN.
    seasonal_degree : {0, 1}, default 1
        Degree of STL's seasonal LOESS (statsmodels' ``seasonal_deg``). With
        only two or three cycles a degree-1 fit passes through every
        calendar month's values, so the seasonal component absorbs all the
        month-to-month noise and the adjusted series is a straight line;
        degree 0 (a local mean) keeps that noise, which SPC needs.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``seasonal_component``, ``trend_component`` and
        ``seasonally_adjusted`` (= value - seasonal component).

    Raises
    ------
    ValueError
        With ``on_short_series="raise"``: a series has fewer than
        ``2 x seasonal_period`` (24) points, skips a month or has a missing
        value. Also for missing columns or a non-date period.

    Notes
    -----
    STL (Seasonal-Trend decomposition using LOESS) from statsmodels with the
    default seasonal smoother. With fewer than two full cycles the seasonal
    pattern cannot be separated from noise, so such series are refused.
    Only use on monthly series: rolling 12-month sums have no seasonality
    left to remove.

    References
    ----------
    Cleveland RB, Cleveland WS, McRae JE, Terpenning I (1990). STL: a
    seasonal-trend decomposition procedure based on loess. Journal of
    Official Statistics 6:3-73.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> months = pd.date_range("2022-01-01", periods=36, freq="MS")
    >>> y = 100 + 10 * np.cos(2 * np.pi * np.arange(36) / 12)
    >>> out = calculate_seasonal_adjustment(pd.DataFrame({"period": months, "value": y}),
    ...                                     series_columns=None)
    >>> bool(np.allclose(out["seasonally_adjusted"], 100, atol=0.5))
    True
    """
    from statsmodels.tsa.seasonal import STL

    function = "calculate_seasonal_adjustment"
    check_dataframe(df, function)
    if seasonal_degree not in (0, 1) or isinstance(seasonal_degree, bool):
        raise ValueError(f"{function}: seasonal_degree must be 0 or 1, not {seasonal_degree!r}.")
    check_choice(on_short_series, ON_PROBLEM, "on_short_series", function)
    if isinstance(seasonal_period, bool) or not isinstance(seasonal_period, (int, np.integer)) or (
        seasonal_period < 2
    ):
        raise ValueError(f"{function}: seasonal_period must be a whole number >= 2.")
    series = check_group_columns(series_columns)
    check_columns(df, [value, period, *series], function)
    y = numeric_column(df, value, function)
    months = _month_index(df, period, function)
    order, codes, _ = _series_order(df, period, series, function)

    seasonal = np.full(len(df), np.nan)
    trend = np.full(len(df), np.nan)
    minimum = 2 * seasonal_period
    for rows in _series_blocks(order, codes):
        problem = None
        if len(rows) < minimum:
            problem = (
                f"has {len(rows)} points; seasonal adjustment needs at least {minimum} "
                f"(two full {seasonal_period}-month cycles)"
            )
        elif np.any(np.diff(months[rows]) != 1):
            problem = "skips one or more months"
        elif not np.all(np.isfinite(y[rows])):
            problem = "has missing values"
        if problem is not None:
            if on_short_series == "raise":
                raise ValueError(
                    f"{function}: series {_series_label(df, rows[0], series)} {problem}."
                )
            continue
        fit = STL(y[rows], period=seasonal_period, robust=robust, seasonal_deg=seasonal_degree).fit()
        seasonal[rows] = fit.seasonal
        trend[rows] = fit.trend
    return assign_columns(
        df,
        {
            "seasonal_component": seasonal,
            "trend_component": trend,
            "seasonally_adjusted": y - seasonal,
        },
    )


def _newey_west_lags(n: int) -> int:
    # Newey & West (1994) plug-in rule of thumb: floor(4 (n/100)^(2/9)).
    return int(np.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))


def _negative_binomial_alpha(y: np.ndarray, mu: np.ndarray, dof: int) -> float:
    """Moment estimate of the NB2 dispersion: Pearson chi2 / dof = 1."""

    def pearson_excess(alpha: float) -> float:
        return float(np.sum((y - mu) ** 2 / (mu + alpha * mu * mu)) - dof)

    if dof <= 0 or pearson_excess(0.0) <= 0:
        return 1e-8  # no overdispersion: NB reduces to Poisson
    high = 1.0
    while pearson_excess(high) > 0 and high < 1e8:
        high *= 10.0
    return float(optimize.brentq(pearson_excess, 0.0, high))


def calculate_trend_model(
    df: pd.DataFrame,
    numerator: str = "numerator",
    denominator: str = "denominator",
    period: str = "period",
    series_columns: Sequence[str] | str | None = DEFAULT_SERIES_COLUMNS,
    family: str = "quasi_poisson",
    seasonal: bool = True,
    confidence: float = 0.95,
    hac_maxlags: int | None = None,
    on_short_series: str = "raise",
) -> pd.DataFrame:
    """Fit a log-linear trend per monthly series and report the change per year.

    Parameters
    ----------
    df : pandas.DataFrame
        Monthly counts, one row per series and month.
    numerator : str, default "numerator"
        Event counts (non-negative).
    denominator : str, default "denominator"
        Exposure (list size, STAR-PU...); enters as a log offset, must be > 0.
    period : str, default "period"
        Datetime column; months must be consecutive.
    series_columns : sequence of str, default DEFAULT_SERIES_COLUMNS
        Columns identifying one series: ("indicator_id", "org_level",
        "org_code", "period_type").
    family : {"quasi_poisson", "negative_binomial"}, default "quasi_poisson"
        Variance model. Quasi-Poisson estimates the dispersion from the
        Pearson chi-squared (``scale="X2"``); negative binomial uses a
        moment estimate of alpha.
    seasonal : bool, default True
        Include month-of-year terms (needs at least 24 points; otherwise 6).
    confidence : float, default 0.95
        Level of the limits of the change per year.
    hac_maxlags : int or None, default None
        Lags for the HAC (Newey-West) covariance; None uses
        ``floor(4 (n/100)^(2/9))``.
    on_short_series : {"raise", "skip"}, default "raise"
        Raise on a short, gappy or invalid series, or return NaN with a note.

    Returns
    -------
    pandas.DataFrame
        One row per series: the series columns, ``trend_points``,
        ``trend_family``, ``trend_log_slope`` (per month),
        ``trend_standard_error`` (HAC), ``trend_p_value``,
        ``trend_dispersion`` (Pearson scale, or NB alpha),
        ``change_per_year`` = exp(12 beta) - 1 and its limits
        ``change_per_year_lower`` / ``change_per_year_upper``, and
        ``trend_note`` (why a series was skipped, else missing).

    Raises
    ------
    ValueError
        For missing columns, a bad ``family``, a confidence level outside
        (0, 1), and (with ``on_short_series="raise"``) a series with too few
        points, a skipped month, a missing count or a denominator <= 0.

    Notes
    -----
    Model: ``log E[y_t] = log(denominator_t) + a + beta t + month terms``,
    t in months. The point estimate is the same under both variance models;
    the HAC sandwich covariance (with small-sample correction) guards
    against autocorrelation, which monthly prescribing has. With 24 points
    and 13 parameters the standard errors are rough: read the limits as
    indicative. Fit on monthly values, never on rolling 12-month sums.

    References
    ----------
    McCullagh P, Nelder JA (1989). Generalized Linear Models, 2nd ed.
    Newey WK, West KD (1987). A simple, positive semi-definite,
    heteroskedasticity and autocorrelation consistent covariance matrix.
    Econometrica 55:703-708.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> months = pd.date_range("2022-01-01", periods=36, freq="MS")
    >>> den = np.full(36, 10000.0)
    >>> num = np.round(500 * 1.1 ** (np.arange(36) / 12))
    >>> df = pd.DataFrame({"period": months, "numerator": num, "denominator": den})
    >>> out = calculate_trend_model(df, series_columns=None, seasonal=False)
    >>> round(float(out["change_per_year"].iloc[0]), 2)
    0.1
    """
    import statsmodels.api as sm

    function = "calculate_trend_model"
    check_dataframe(df, function)
    check_choice(family, FAMILIES, "family", function)
    check_choice(on_short_series, ON_PROBLEM, "on_short_series", function)
    if not 0 < confidence < 1:
        raise ValueError(f"{function}: confidence must be between 0 and 1, not {confidence!r}.")
    series = check_group_columns(series_columns)
    check_columns(df, [numerator, denominator, period, *series], function)
    y_all = numeric_column(df, numerator, function)
    n_all = numeric_column(df, denominator, function)
    check_non_negative(y_all, numerator, df, function)
    months = _month_index(df, period, function)
    order, codes, _ = _series_order(df, period, series, function)
    z = z_for(confidence)
    minimum = 24 if seasonal else 6

    records = []
    for rows in _series_blocks(order, codes):
        record = {
            "trend_points": len(rows),
            "trend_family": family,
            "trend_log_slope": np.nan,
            "trend_standard_error": np.nan,
            "trend_p_value": np.nan,
            "trend_dispersion": np.nan,
            "change_per_year": np.nan,
            "change_per_year_lower": np.nan,
            "change_per_year_upper": np.nan,
            "trend_note": None,
        }
        y, n, m = y_all[rows], n_all[rows], months[rows]
        problem = None
        if len(rows) < minimum:
            problem = f"has {len(rows)} points; the model needs at least {minimum}"
        elif np.any(np.diff(m) != 1):
            problem = "skips one or more months"
        elif not (np.all(np.isfinite(y)) and np.all(np.isfinite(n))):
            problem = "has missing numerators or denominators"
        elif np.any(n <= 0):
            problem = "has a denominator of zero or less"
        elif y.sum() == 0:
            problem = "has no events at all"
        if problem is not None:
            if on_short_series == "raise":
                raise ValueError(
                    f"{function}: series {_series_label(df, rows[0], series)} {problem}."
                )
            record["trend_note"] = f"not fitted: series {problem}"
            records.append((rows[0], record))
            continue

        t = (m - m[0]).astype(float)
        columns = [np.ones(len(rows)), t]
        if seasonal:
            month_of_year = m % 12
            columns += [(month_of_year == k).astype(float) for k in range(1, 12)]
        x = np.column_stack(columns)
        if seasonal:  # drop month columns absent from the data (all zero)
            keep = np.r_[True, True, x[:, 2:].sum(axis=0) > 0]
            x = x[:, keep]
        lags = _newey_west_lags(len(rows)) if hac_maxlags is None else int(hac_maxlags)
        cov = {"maxlags": lags, "use_correction": True}
        offset = np.log(n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            poisson = sm.GLM(y, x, family=sm.families.Poisson(), offset=offset)
            if family == "quasi_poisson":
                fit = poisson.fit(scale="X2", cov_type="HAC", cov_kwds=cov)
                dispersion = float(fit.scale)
            else:
                first = poisson.fit()
                alpha = _negative_binomial_alpha(y, first.mu, len(rows) - x.shape[1])
                nb = sm.GLM(
                    y, x, family=sm.families.NegativeBinomial(alpha=alpha), offset=offset
                )
                fit = nb.fit(cov_type="HAC", cov_kwds=cov)
                dispersion = alpha
        beta = float(fit.params[1])
        se = float(fit.bse[1])
        record.update(
            trend_log_slope=beta,
            trend_standard_error=se,
            trend_p_value=float(2 * stats.norm.sf(abs(beta / se))) if se > 0 else np.nan,
            trend_dispersion=dispersion,
            change_per_year=np.expm1(12 * beta),
            change_per_year_lower=np.expm1(12 * (beta - z * se)),
            change_per_year_upper=np.expm1(12 * (beta + z * se)),
        )
        records.append((rows[0], record))

    first_rows = [r for r, _ in records]
    out = df.iloc[first_rows][series].reset_index(drop=True) if series else pd.DataFrame(
        index=range(len(records))
    )
    body = pd.DataFrame([rec for _, rec in records])
    if body.empty:
        return out
    body["trend_note"] = body["trend_note"].astype("object")
    return pd.concat([out, body], axis=1)


def calculate_recent_trend(
    df: pd.DataFrame,
    numerator: str = "numerator",
    denominator: str = "denominator",
    period: str = "period",
    series_columns: Sequence[str] | str | None = DEFAULT_SERIES_COLUMNS,
    kind: str = "proportion",
    points: int = 5,
    confidence: float = 0.998,
) -> pd.DataFrame:
    """Fingertips-style recent trend over the latest points of each series.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per series and period.
    numerator, denominator : str
        Counts; for proportions the numerator may not exceed the denominator.
    period : str, default "period"
        Sortable time column.
    series_columns : sequence of str, default DEFAULT_SERIES_COLUMNS
        Columns identifying one series: ("indicator_id", "org_level",
        "org_code", "period_type").
    kind : {"proportion", "rate", "ratio"}, default "proportion"
        Binomial (Cochran-Armitage) or Poisson score test for trend.
    points : int, default 5
        How many of the latest points are tested.
    confidence : float, default 0.998
        Significance level: the statistic is compared with the chi-squared
        (1 df) quantile, 9.5495 at 99.8%.

    Returns
    -------
    pandas.DataFrame
        One row per series: the series columns, ``recent_trend_points``
        (points with usable counts among the latest ``points``),
        ``recent_trend_statistic`` and ``recent_trend`` (categorical:
        "increasing", "decreasing", "no significant change",
        "cannot be calculated").

    Raises
    ------
    ValueError
        For missing or non-numeric columns, negative counts, an unknown or
        "none" kind, ``points`` < 3, or a bad confidence level.

    Notes
    -----
    Time scores ``t = 1..k`` for the k latest points, ``N = sum n``,
    ``X = sum x``, ``t_bar = sum(n t) / N`` and ``U = sum(x t) - X t_bar``.
    Proportions: ``Var = p (1 - p) (sum(n t^2) - N t_bar^2)`` with
    ``p = X/N``; rates and ratios: ``Var = (X/N)(sum(n t^2) - N t_bar^2)``.
    The statistic ``U^2 / Var`` is chi-squared with 1 df under no trend;
    the sign of U gives the direction. "cannot be calculated" when fewer
    than ``points`` usable points exist or the variance is 0 (e.g. every
    value 0% or 100%).

    References
    ----------
    Armitage P (1955). Tests for linear trends in proportions and
    frequencies. Biometrics 11:375-386.
    Public Health England. Fingertips: recent trends (technical guidance).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"period": range(5), "numerator": [100, 120, 140, 160, 180],
    ...                    "denominator": [1000] * 5})
    >>> calculate_recent_trend(df, series_columns=None)["recent_trend"].tolist()
    ['increasing']
    """
    function = "calculate_recent_trend"
    check_dataframe(df, function)
    check_choice(kind, tuple(k for k in INDICATOR_KINDS if k != "none"), "kind", function)
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 3:
        raise ValueError(f"{function}: points must be a whole number of at least 3.")
    if not 0 < confidence < 1:
        raise ValueError(f"{function}: confidence must be between 0 and 1, not {confidence!r}.")
    series = check_group_columns(series_columns)
    check_columns(df, [numerator, denominator, period, *series], function)
    x_all = numeric_column(df, numerator, function)
    n_all = numeric_column(df, denominator, function)
    check_non_negative(x_all, numerator, df, function)
    check_non_negative(n_all, denominator, df, function)
    if kind == "proportion" and np.any(x_all > n_all):
        raise ValueError(
            f"{function}: some numerators exceed their denominators; not a proportion."
        )
    order, codes, n_series = _series_order(df, period, series, function)

    g = codes[order]
    size = len(order)
    ends = np.flatnonzero(np.r_[g[1:] != g[:-1], True]) if size else np.array([], dtype=int)
    end_position = np.empty(size, dtype=np.int64)
    if size:
        series_end = np.repeat(ends, np.diff(np.r_[-1, ends]))
        end_position = series_end
    from_end = end_position - np.arange(size)  # 0 for the latest point
    latest = from_end < points
    x = x_all[order]
    n = n_all[order]
    usable = latest & np.isfinite(x) & np.isfinite(n) & (n > 0)
    t = (points - from_end).astype(float)  # 1..points, oldest to latest

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(g, weights=np.where(usable, values, 0.0), minlength=n_series)

    count = total(np.ones(size))
    big_n, big_x = total(n), total(x)
    sum_nt, sum_nt2, sum_xt = total(n * t), total(n * t * t), total(x * t)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_bar = sum_nt / big_n
        u = sum_xt - big_x * t_bar
        spread = sum_nt2 - big_n * t_bar * t_bar
        p = big_x / big_n
        variance = p * (1.0 - p) * spread if kind == "proportion" else p * spread
        statistic = u * u / variance
    computable = (count == points) & np.isfinite(statistic) & (variance > 0)
    threshold = stats.chi2.ppf(confidence, 1)
    marker = np.where(
        ~computable,
        3,
        np.where(statistic > threshold, np.where(u > 0, 0, 1), 2),
    )
    first_rows = order[np.r_[0, ends[:-1] + 1]] if size else np.array([], dtype=int)
    out = df.iloc[first_rows][series].reset_index(drop=True) if series else pd.DataFrame(
        index=range(n_series)
    )
    series_of_first = codes[first_rows]
    out["recent_trend_points"] = count[series_of_first].astype(np.int64)
    out["recent_trend_statistic"] = np.where(computable, statistic, np.nan)[series_of_first]
    out["recent_trend"] = pd.Categorical.from_codes(
        marker[series_of_first].astype(np.int8), categories=list(TREND_MARKERS)
    )
    return out
