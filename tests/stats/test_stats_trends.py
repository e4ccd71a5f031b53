"""Seasonal adjustment, GLM trend per year, and the Fingertips recent-trend marker."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from moopt.stats import (
    calculate_recent_trend,
    calculate_seasonal_adjustment,
    calculate_trend_model,
)

MONTHS = pd.date_range("2021-01-01", periods=36, freq="MS")


def seasonal_series(n=36, code="A", growth=0.0, seed=0, scale=1000.0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    denominator = np.full(n, 50_000.0)
    mu = denominator * 0.02 * np.exp(growth / 12 * t) * (1 + 0.25 * np.cos(2 * np.pi * t / 12))
    numerator = rng.poisson(mu).astype(float)
    return pd.DataFrame(
        {
            "org_code": code,
            "period": pd.date_range("2021-01-01", periods=n, freq="MS"),
            "numerator": numerator,
            "denominator": denominator,
            "value": numerator / denominator * scale,
        }
    )


# ---------------------------------------------------------------- STL


def test_stl_removes_seasonality_and_keeps_level():
    t = np.arange(36)
    y = 100 + 0.5 * t + 15 * np.sin(2 * np.pi * t / 12)
    out = calculate_seasonal_adjustment(
        pd.DataFrame({"period": MONTHS, "value": y}), series_columns=None
    )
    np.testing.assert_allclose(out["seasonally_adjusted"], 100 + 0.5 * t, atol=1.0)
    np.testing.assert_allclose(out["seasonal_component"] + out["seasonally_adjusted"], y)
    assert abs(out["seasonal_component"].iloc[:12].sum()) < 5


def test_stl_refuses_fewer_than_24_points():
    df = seasonal_series(n=23)
    with pytest.raises(ValueError, match="at least 24"):
        calculate_seasonal_adjustment(df, series_columns="org_code")
    skipped = calculate_seasonal_adjustment(df, series_columns="org_code", on_short_series="skip")
    assert skipped["seasonally_adjusted"].isna().all()
    ok = calculate_seasonal_adjustment(seasonal_series(n=24), series_columns="org_code")
    assert ok["seasonally_adjusted"].notna().all()


def test_stl_refuses_gaps_and_non_dates():
    df = seasonal_series(n=30).drop(index=10)
    with pytest.raises(ValueError, match="skips"):
        calculate_seasonal_adjustment(df, series_columns="org_code")
    with pytest.raises(ValueError, match="datetime64"):
        calculate_seasonal_adjustment(df.assign(period=range(len(df))), series_columns="org_code")


def test_stl_many_series():
    df = pd.concat([seasonal_series(code=c, seed=i) for i, c in enumerate("ABC")])
    out = calculate_seasonal_adjustment(df, series_columns="org_code")
    for _, part in out.groupby("org_code"):
        # Seasonal swing of +/-25% is largely removed.
        assert part["seasonally_adjusted"].std() < 0.5 * part["value"].std()


# ---------------------------------------------------------------- GLM trend


def test_trend_recovers_known_growth_with_seasonality():
    frames = [seasonal_series(code=f"S{i}", growth=np.log(1.10), seed=i) for i in range(8)]
    df = pd.concat(frames, ignore_index=True)
    out = calculate_trend_model(df, series_columns="org_code")
    assert len(out) == 8
    assert out["change_per_year"].between(0.06, 0.14).all()
    covered = (out["change_per_year_lower"] <= 0.10) & (out["change_per_year_upper"] >= 0.10)
    assert covered.mean() >= 0.6
    assert (out["change_per_year_lower"] < out["change_per_year"]).all()


def test_trend_point_estimate_equals_plain_poisson_glm():
    df = seasonal_series(growth=-0.05, seed=3)
    out = calculate_trend_model(df, series_columns="org_code", seasonal=False)
    x = sm.add_constant(np.arange(36.0))
    ref = sm.GLM(df["numerator"], x, family=sm.families.Poisson(),
                 offset=np.log(df["denominator"])).fit()
    assert out["trend_log_slope"].iloc[0] == pytest.approx(ref.params.iloc[1], rel=1e-8)
    assert out["change_per_year"].iloc[0] == pytest.approx(np.expm1(12 * ref.params.iloc[1]))


def test_negative_binomial_family_runs_and_reports_alpha():
    rng = np.random.default_rng(8)
    df = seasonal_series(seed=1)
    df["numerator"] = rng.negative_binomial(5, 5 / (5 + 1000), 36).astype(float)
    out = calculate_trend_model(df, series_columns="org_code", family="negative_binomial")
    assert out["trend_family"].iloc[0] == "negative_binomial"
    assert out["trend_dispersion"].iloc[0] > 0
    assert np.isfinite(out["change_per_year"].iloc[0])


def test_trend_short_series_raise_or_skip():
    df = seasonal_series(n=12)
    with pytest.raises(ValueError, match="at least 24"):
        calculate_trend_model(df, series_columns="org_code")
    out = calculate_trend_model(df, series_columns="org_code", on_short_series="skip")
    assert np.isnan(out["change_per_year"].iloc[0])
    assert "at least 24" in out["trend_note"].iloc[0]
    with pytest.raises(ValueError, match="family"):
        calculate_trend_model(seasonal_series(), series_columns="org_code", family="poisson")


# ---------------------------------------------------------------- recent trend


def recent(numerators, denominators, kind="proportion"):
    df = pd.DataFrame({"period": range(len(numerators)), "numerator": numerators,
                       "denominator": denominators})
    return calculate_recent_trend(df, series_columns=None, kind=kind).iloc[0]


def test_threshold_is_chi_squared_99_8():
    assert round(stats.chi2.ppf(0.998, 1), 4) == 9.5495


def test_armitage_statistic_equals_n_times_squared_correlation():
    # Independent route: the trend chi-squared is N r^2, with r the correlation
    # between individual 0/1 outcomes and their time scores.
    x = np.array([30, 42, 35, 51, 60])
    n = np.array([200, 210, 190, 205, 220])
    t = np.arange(1, 6)
    outcome = np.concatenate([np.r_[np.ones(a), np.zeros(b - a)] for a, b in zip(x, n)])
    score = np.repeat(t, n)
    r = np.corrcoef(outcome, score)[0, 1]
    got = recent(x, n)
    assert got["recent_trend_statistic"] == pytest.approx(n.sum() * r**2, rel=1e-10)
    assert got["recent_trend"] == "increasing"


def test_poisson_statistic_equals_glm_score_test():
    x = np.array([100.0, 120, 140, 160, 180])
    n = np.full(5, 1000.0)
    fit = sm.GLM(x, np.ones((5, 1)), family=sm.families.Poisson(), offset=np.log(n)).fit()
    score = fit.score_test(exog_extra=np.arange(1.0, 6.0)[:, None])[0]
    got = recent(x, n, kind="rate")
    assert got["recent_trend_statistic"] == pytest.approx(float(np.squeeze(score)), rel=1e-10)


def test_markers():
    assert recent([180, 160, 140, 120, 100], [1000] * 5)["recent_trend"] == "decreasing"
    assert recent([100, 101, 99, 100, 102], [1000] * 5)["recent_trend"] == "no significant change"
    assert recent([100, 110, 120, 130], [1000] * 4)["recent_trend"] == "cannot be calculated"
    assert recent([0] * 5, [1000] * 5)["recent_trend"] == "cannot be calculated"
    assert recent([10, 20, np.nan, 40, 50], [100] * 5)["recent_trend"] == "cannot be calculated"


def test_only_latest_points_are_used_per_series():
    df = pd.DataFrame(
        {
            "org_code": ["A"] * 8 + ["B"] * 5,
            "period": list(range(8)) + list(range(5)),
            # A falls steeply early on, then is flat for the last five points.
            "numerator": [900, 700, 500, 300, 300, 301, 299, 300, 100, 130, 160, 190, 220],
            "denominator": [1000] * 13,
        }
    )
    out = calculate_recent_trend(df.sample(frac=1, random_state=0), series_columns="org_code")
    out = out.set_index("org_code")
    assert out.loc["A", "recent_trend"] == "no significant change"
    assert out.loc["B", "recent_trend"] == "increasing"


def test_recent_trend_validation():
    with pytest.raises(ValueError, match="kind"):
        recent([1] * 5, [10] * 5, kind="none")
    with pytest.raises(ValueError, match="exceed"):
        recent([11] * 5, [10] * 5)


def test_seasonal_degree_zero_keeps_month_to_month_noise_in_two_cycles():
    """With 24 months a degree-1 seasonal fit leaves a straight line; degree 0 keeps the noise."""
    rng = np.random.default_rng(7)
    months = pd.date_range("2024-10-01", periods=24, freq="MS")
    noise = rng.normal(0, 0.04, 24)
    y = 100 * (1 + 0.2 * np.cos(2 * np.pi * np.arange(24) / 12)) * (1 + noise)
    frame = pd.DataFrame({"period": months, "value": y})
    straight = calculate_seasonal_adjustment(frame, series_columns=None, robust=False)["seasonally_adjusted"]
    kept = calculate_seasonal_adjustment(frame, series_columns=None, robust=False, seasonal_degree=0)
    assert np.abs(np.diff(straight.to_numpy(), 2)).max() < 1e-6  # the defect: an exact straight line
    assert np.corrcoef(kept["seasonally_adjusted"].to_numpy(), noise)[0, 1] > 0.5
    # robust fits (the default) keep the noise too, and better than degree 1 does
    robust_1 = calculate_seasonal_adjustment(frame, series_columns=None)["seasonally_adjusted"].to_numpy()
    robust_0 = calculate_seasonal_adjustment(frame, series_columns=None, seasonal_degree=0)["seasonally_adjusted"]
    assert np.corrcoef(robust_0.to_numpy(), noise)[0, 1] > np.corrcoef(robust_1, noise)[0, 1]
    with pytest.raises(ValueError, match="seasonal_degree"):
        calculate_seasonal_adjustment(frame, series_columns=None, seasonal_degree=2)
