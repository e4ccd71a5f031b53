"""Funnel limits: worked value, overdispersion against a plain re-derivation, lines, properties."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from moopt.stats import (
    calculate_funnel_limits,
    calculate_funnel_lines,
    calculate_funnel_parameters,
    poisson_interpolated_quantile,
)


def test_worked_proportion_limits_around_pooled_value():
    df = pd.DataFrame({"numerator": [20, 10, 40], "denominator": [100, 50, 200]})  # p0 = 0.2
    out = calculate_funnel_limits(
        df, group_columns=None, multiplier=1, overdispersion=False, confidence=(0.95, 0.998)
    )
    assert round(out["funnel_target"].iloc[0], 6) == 0.2
    assert round(out["funnel_lower_95"].iloc[0], 6) == 0.121601
    assert round(out["funnel_upper_95"].iloc[0], 6) == 0.278399
    z = 3.090232306
    assert out["funnel_upper_99_8"].iloc[0] == pytest.approx(0.2 + z * 0.04, abs=1e-9)
    assert out["funnel_flag_95"].tolist() == ["inside"] * 3


def test_limits_truncated_to_zero_one_and_scaled():
    df = pd.DataFrame({"numerator": [1, 0, 1], "denominator": [2, 2, 1]})  # p0 = 0.4
    out = calculate_funnel_limits(df, group_columns=None, overdispersion=False, multiplier=100)
    assert out["funnel_lower_99_8"].min() == 0.0
    assert out["funnel_upper_99_8"].max() == 100.0


def _plain_overdispersion(x, n, kind, winsor=0.1):
    """Spiegelhalter's recipe written out step by step for one group."""
    if kind == "proportion":
        p0 = x.sum() / n.sum()
        y = np.arcsin(np.sqrt(x / n))
        target = math.asin(math.sqrt(p0))
        s = 1 / (2 * np.sqrt(n))
        z = (y - target) / s
    else:
        r0 = x.sum() / n.sum()
        expected = r0 * n
        s = 1 / (2 * np.sqrt(expected))
        z = (np.sqrt(x / expected) - 1) / s
    lo, hi = np.quantile(z, [winsor, 1 - winsor])
    zw = np.clip(z, lo, hi)
    k = len(z)
    phi = np.mean(zw**2)
    w = 1 / s**2
    tau2 = (k * phi - (k - 1)) / (w.sum() - (w**2).sum() / w.sum()) if k * phi > k - 1 else 0.0
    return phi, tau2


def _overdispersed_proportions(rng, k=60, p=0.3, spread=0.05):
    n = rng.integers(200, 20_000, k).astype(float)
    true_p = np.clip(rng.normal(p, spread, k), 0.01, 0.99)
    x = rng.binomial(n.astype(int), true_p).astype(float)
    return pd.DataFrame({"numerator": x, "denominator": n})


def test_overdispersion_matches_plain_recipe_for_proportions():
    rng = np.random.default_rng(11)
    frames = []
    for name in ["A", "B"]:
        part = _overdispersed_proportions(rng)
        part["indicator_id"] = name
        frames.append(part)
    df = pd.concat(frames, ignore_index=True)
    params = calculate_funnel_parameters(df, group_columns="indicator_id", multiplier=100)
    for name, part in df.groupby("indicator_id"):
        phi, tau2 = _plain_overdispersion(part["numerator"].values, part["denominator"].values,
                                          "proportion")
        row = params.set_index("indicator_id").loc[name]
        assert row["funnel_phi"] == pytest.approx(phi, rel=1e-10)
        assert row["funnel_tau2"] == pytest.approx(tau2, rel=1e-10)
        assert tau2 > 0 and bool(row["funnel_adjusted"])

    out = calculate_funnel_limits(df, group_columns="indicator_id", multiplier=1)
    first = out.iloc[0]
    p0 = df.loc[df.indicator_id == "A", "numerator"].sum() / df.loc[
        df.indicator_id == "A", "denominator"].sum()
    tau2 = params.set_index("indicator_id").loc["A", "funnel_tau2"]
    half = 1.959963985 * math.sqrt(1 / (4 * first["denominator"]) + tau2)
    assert first["funnel_lower_95"] == pytest.approx(math.sin(math.asin(math.sqrt(p0)) - half) ** 2)
    assert first["funnel_upper_95"] == pytest.approx(math.sin(math.asin(math.sqrt(p0)) + half) ** 2)


def test_overdispersion_widens_limits_and_reduces_outliers():
    rng = np.random.default_rng(5)
    df = _overdispersed_proportions(rng, k=100)
    plain = calculate_funnel_limits(df, group_columns=None, overdispersion=False)
    adjusted = calculate_funnel_limits(df, group_columns=None)
    assert (adjusted["funnel_upper_99_8"] >= plain["funnel_upper_99_8"] - 1e-12).all()
    assert (adjusted["funnel_flag_99_8"] != "inside").sum() < (
        plain["funnel_flag_99_8"] != "inside").sum()
    assert adjusted["funnel_tau2"].iloc[0] > 0 and plain["funnel_tau2"].iloc[0] == 0
    assert np.isnan(plain["funnel_phi"].iloc[0])


def test_no_overdispersion_falls_back_to_unadjusted_limits():
    # Identical proportions: every z is 0, phi = 0, tau^2 = 0.
    df = pd.DataFrame({"numerator": [10, 20, 30, 40], "denominator": [100, 200, 300, 400]})
    on = calculate_funnel_limits(df, group_columns=None)
    off = calculate_funnel_limits(df, group_columns=None, overdispersion=False)
    assert on["funnel_phi"].iloc[0] == 0 and not on["funnel_adjusted"].any()
    np.testing.assert_allclose(on["funnel_lower_95"], off["funnel_lower_95"])


def _interpolated_quantile_by_summation(p, mean):
    """Spiegelhalter's interpolated Poisson quantile from a hand-summed CDF."""
    cdf = 0.0
    for r in range(int(mean + 60 * math.sqrt(mean) + 100)):
        previous = cdf
        # Each term from logs, so large means do not underflow at r = 0.
        cdf += math.exp(-mean + r * math.log(mean) - math.lgamma(r + 1))
        if cdf >= p:
            return max(r - (cdf - p) / (cdf - previous), 0.0)
    raise AssertionError("quantile not reached")


@pytest.mark.parametrize("mean", [0.01, 0.3, 1.0, 4.5, 10.0, 37.2, 250.0, 999.9])
@pytest.mark.parametrize("p", [0.001, 0.025, 0.975, 0.999])
def test_interpolated_poisson_quantile_against_summation(mean, p):
    got = poisson_interpolated_quantile(p, np.array([mean]))[0]
    # Summing the CDF term by term loses ~1e-13, which the division by a small
    # probability step magnifies; agreement to 1e-7 counts is the meaningful check.
    assert got == pytest.approx(_interpolated_quantile_by_summation(p, mean), abs=1e-7)


def test_interpolated_quantile_is_continuous_and_increasing():
    means = np.linspace(0.5, 60, 4001)
    q = poisson_interpolated_quantile(0.975, means)
    assert np.all(np.diff(q) > 0)
    # Mean step 0.015: the slope is steeper near the kinks, but a discrete
    # quantile would jump by a whole count there.
    assert np.max(np.abs(np.diff(q))) < 0.25
    big = poisson_interpolated_quantile(0.975, np.array([1e6]))[0]
    assert big == pytest.approx(1e6 + 1.959964 * 1e3, rel=1e-5)


def test_rate_funnel_unadjusted_uses_interpolated_poisson_quantiles_by_default():
    # statistics.md: count limits are the Poisson quantiles around the expected
    # count, interpolated (Spiegelhalter 2005, A.2.1). This test used to assert
    # the exact interval of E treated as an observed count as the default (issue 9).
    df = pd.DataFrame({"numerator": [50, 100, 150], "denominator": [1000, 2000, 3000]})  # r0=0.05
    out = calculate_funnel_limits(
        df, kind="rate", group_columns=None, multiplier=1000, overdispersion=False,
        confidence=0.95,
    )
    assert out["funnel_target"].iloc[0] == pytest.approx(50.0)
    # E = 50 at the first row; the value scale is per 1000, n = 1000.
    assert out["funnel_upper_95"].iloc[0] == pytest.approx(
        _interpolated_quantile_by_summation(0.975, 50.0), abs=1e-9)
    assert out["funnel_lower_95"].iloc[0] == pytest.approx(
        _interpolated_quantile_by_summation(0.025, 50.0), abs=1e-9)
    params = calculate_funnel_parameters(df, kind="rate", group_columns=None, multiplier=1000,
                                         overdispersion=False)
    assert params["funnel_poisson_method"].iloc[0] == "interpolated"
    lines = calculate_funnel_lines(params, denominators=[1000], confidence=0.95)
    assert lines["funnel_upper_95"].iloc[0] == pytest.approx(out["funnel_upper_95"].iloc[0],
                                                             abs=1e-9)


def test_rate_funnel_exact_option_evaluates_the_exact_interval_at_the_expected_count():
    df = pd.DataFrame({"numerator": [50, 100, 150], "denominator": [1000, 2000, 3000]})  # r0=0.05
    exact = calculate_funnel_limits(
        df, kind="rate", group_columns=None, multiplier=1000, overdispersion=False,
        confidence=0.95, poisson_method="exact",
    )
    # E = 50 at the first row: the exact interval formulas with O replaced by E.
    assert exact["funnel_lower_95"].iloc[0] == pytest.approx(stats.chi2.ppf(0.025, 100) / 2)
    assert exact["funnel_upper_95"].iloc[0] == pytest.approx(stats.chi2.ppf(0.975, 102) / 2)
    params = calculate_funnel_parameters(df, kind="rate", group_columns=None, multiplier=1000,
                                         overdispersion=False, poisson_method="exact")
    lines = calculate_funnel_lines(params, denominators=[1000], confidence=0.95)
    assert lines["funnel_upper_95"].iloc[0] == pytest.approx(stats.chi2.ppf(0.975, 102) / 2)


def test_interpolated_limits_saw_tooth_while_exact_limits_narrow_smoothly():
    # Documented behaviour: for tiny expected counts the interpolated upper limit is 0.
    assert poisson_interpolated_quantile(0.975, np.array([0.02]))[0] == 0.0
    means = np.geomspace(0.01, 500, 5000)
    from moopt.stats import poisson_exact_control_limits

    lower, upper = poisson_exact_control_limits(means, 0.95)
    assert np.all(np.diff(upper / means) < 0) and np.all(np.diff(lower / means) > 0)


def test_rate_funnel_overdispersion_sqrt_scale_matches_plain_recipe():
    rng = np.random.default_rng(2)
    n = rng.uniform(5_000, 60_000, 80)
    x = rng.poisson(n * 0.08 * rng.gamma(20, 1 / 20, 80)).astype(float)
    df = pd.DataFrame({"numerator": x, "denominator": n})
    params = calculate_funnel_parameters(df, kind="rate", group_columns=None, multiplier=1000)
    phi, tau2 = _plain_overdispersion(x, n, "rate")
    assert params["funnel_phi"].iloc[0] == pytest.approx(phi, rel=1e-10)
    assert params["funnel_tau2"].iloc[0] == pytest.approx(tau2, rel=1e-10)
    out = calculate_funnel_limits(df, kind="rate", group_columns=None, multiplier=1000,
                                  confidence=0.998)
    r0 = x.sum() / n.sum()
    half = 3.090232306 * math.sqrt(1 / (4 * r0 * n[0]) + tau2)
    assert out["funnel_upper_99_8"].iloc[0] == pytest.approx(r0 * (1 + half) ** 2 * 1000)


def test_log_transform_leaves_out_zero_counts():
    rng = np.random.default_rng(9)
    n = rng.uniform(100, 5000, 50)
    x = rng.poisson(n * 0.01 * rng.gamma(5, 0.2, 50)).astype(float)
    x[:3] = 0
    df = pd.DataFrame({"numerator": x, "denominator": n})
    params = calculate_funnel_parameters(df, kind="ratio", group_columns=None, multiplier=1,
                                         count_transform="log")
    assert np.isfinite(params["funnel_phi"].iloc[0])
    assert params["funnel_organisations"].iloc[0] == 50


def test_lines_agree_with_row_limits_and_narrow():
    rng = np.random.default_rng(4)
    df = _overdispersed_proportions(rng, k=40)
    df["indicator_id"] = "A"
    rows = calculate_funnel_limits(df, group_columns="indicator_id")
    params = calculate_funnel_parameters(df, group_columns="indicator_id")
    lines = calculate_funnel_lines(params, denominators=df["denominator"].to_numpy())
    np.testing.assert_allclose(lines["funnel_lower_95"], rows["funnel_lower_95"])
    np.testing.assert_allclose(lines["funnel_upper_99_8"], rows["funnel_upper_99_8"])
    assert list(lines["indicator_id"].unique()) == ["A"]
    plain = calculate_funnel_lines(params, points=5, prefix="")
    assert {"denominator", "lower_95", "upper_95", "lower_99_8", "upper_99_8"} <= set(plain)
    grid = calculate_funnel_lines(params, points=50)
    assert len(grid) == 50
    assert grid["denominator"].iloc[0] == pytest.approx(df["denominator"].min())
    assert np.all(np.diff(grid["funnel_upper_95"]) <= 1e-12)


def test_kind_column_processes_each_kind_like_a_single_call():
    rng = np.random.default_rng(21)
    prop = _overdispersed_proportions(rng, k=30).assign(indicator_id="P", kind="proportion",
                                                         multiplier=100.0)
    n = rng.uniform(1000, 9000, 30)
    rate = pd.DataFrame({"numerator": rng.poisson(n * 0.2).astype(float), "denominator": n,
                         "indicator_id": "R", "kind": "rate", "multiplier": 1000.0})
    both = pd.concat([prop, rate], ignore_index=True).sample(frac=1, random_state=3)
    together = calculate_funnel_limits(both, kind="kind", group_columns="indicator_id",
                                       multiplier="multiplier").sort_index()
    for name, kind in [("P", "proportion"), ("R", "rate")]:
        alone = calculate_funnel_limits(both[both.indicator_id == name], kind=kind,
                                        group_columns="indicator_id", multiplier="multiplier")
        part = together.loc[alone.index]
        for column in ["funnel_target", "funnel_lower_95", "funnel_upper_99_8", "funnel_tau2"]:
            np.testing.assert_allclose(part[column], alone[column])
        assert part["funnel_flag_95"].tolist() == alone["funnel_flag_95"].tolist()
    params = calculate_funnel_parameters(both, kind="kind", group_columns="indicator_id",
                                         multiplier="multiplier").set_index("indicator_id")
    assert params["funnel_kind"].to_dict() == {"P": "proportion", "R": "rate"} or (
        params["funnel_kind"].to_dict() == {"R": "rate", "P": "proportion"})


def test_groups_get_their_own_targets():
    df = pd.DataFrame(
        {
            "indicator_id": ["A", "A", "B", "B"],
            "numerator": [10, 30, 50, 50],
            "denominator": [100, 100, 100, 100],
        }
    )
    out = calculate_funnel_limits(df, group_columns="indicator_id", multiplier=100)
    assert out["funnel_target"].tolist() == [20.0, 20.0, 50.0, 50.0]


def test_target_column_overrides_pooled_value():
    df = pd.DataFrame({"numerator": [20, 20], "denominator": [100, 100], "england": [10.0, 10.0]})
    out = calculate_funnel_limits(df, group_columns=None, target="england", overdispersion=False)
    assert out["funnel_target"].iloc[0] == 10.0
    assert out["funnel_flag_95"].iloc[0] == "above"


def test_missing_values_give_missing_flags():
    df = pd.DataFrame({"numerator": [20, np.nan, 0], "denominator": [100, 100, 0]})
    out = calculate_funnel_limits(df, group_columns=None, overdispersion=False)
    assert out["funnel_flag_95"].isna().tolist() == [False, True, True]


def test_validation():
    df = pd.DataFrame({"numerator": [5, 3], "denominator": [4, 10], "m": [1, 100]})
    with pytest.raises(ValueError, match="greater than"):
        calculate_funnel_limits(df, group_columns=None)
    with pytest.raises(ValueError, match="multiplier differs"):
        calculate_funnel_limits(df, kind="rate", group_columns=None, multiplier="m")
    with pytest.raises(ValueError, match="overdispersion=True"):
        calculate_funnel_limits(df, kind="none", group_columns=None, overdispersion=False)
    with pytest.raises(ValueError, match="is neither one of"):
        calculate_funnel_limits(df, kind="percent", group_columns=None)
    mixed = df.assign(kind=["rate", "ratio"], numerator=[1, 3])
    with pytest.raises(ValueError, match="mixes indicator kinds"):
        calculate_funnel_limits(mixed, kind="kind", group_columns=None, multiplier=1)
    with pytest.raises(ValueError, match="winsorise"):
        calculate_funnel_limits(df, kind="rate", group_columns=None, winsorise=0.6)
    with pytest.raises(ValueError, match="lacks|not found"):
        calculate_funnel_lines(pd.DataFrame({"x": [1]}))


@settings(max_examples=60, deadline=None)
@given(
    p0=st.floats(min_value=0.01, max_value=0.99),
    n1=st.floats(min_value=1, max_value=1e5),
    factor=st.floats(min_value=1.01, max_value=100),
    tau2=st.sampled_from([0.0, 1e-4, 1e-2]),
    kind=st.sampled_from(["proportion", "rate"]),
)
def test_funnel_limits_narrow_as_denominator_grows(p0, n1, factor, tau2, kind):
    params = pd.DataFrame(
        {
            "funnel_kind": [kind],
            "funnel_target": [p0],
            "funnel_multiplier": [1.0],
            "funnel_tau2": [tau2],
            "funnel_adjusted": [tau2 > 0],
            "funnel_count_transform": ["sqrt"],
            "funnel_poisson_method": ["exact"],
            "denominator_min": [1.0],
            "denominator_max": [1e6],
        }
    )
    lines = calculate_funnel_lines(params, denominators=[n1, n1 * factor])
    lower, upper = lines["funnel_lower_95"].to_numpy(), lines["funnel_upper_95"].to_numpy()
    assert upper[1] <= upper[0] + 1e-9
    assert lower[1] >= lower[0] - 1e-9
    assert lower[1] <= p0 <= upper[1] + 1e-12
    outer = calculate_funnel_lines(params, denominators=[n1], confidence=0.998)
    assert outer["funnel_lower_99_8"].iloc[0] <= lower[0] + 1e-12
    assert outer["funnel_upper_99_8"].iloc[0] >= upper[0] - 1e-12
