"""Funnel edge cases (issue 9): the unadjusted count limits, kind "none", one target, funnel_z.

Oracles are written out here: Spiegelhalter's worked values, SciPy's Poisson
quantiles and CDF, and the transformed-scale formulas of statistics.md.
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from moopt.stats import (
    calculate_funnel_limits,
    calculate_funnel_lines,
    calculate_funnel_parameters,
)

Z_95 = stats.norm.ppf(0.975)
Z_99_8 = stats.norm.ppf(0.999)


def scipy_interpolated_quantile(p, mean):
    """Spiegelhalter (2005) A.2.1: r_p - (F(r_p) - p) / (F(r_p) - F(r_p - 1)), via SciPy."""
    r = stats.poisson.ppf(p, mean)
    at, below = stats.poisson.cdf(r, mean), stats.poisson.cdf(r - 1, mean)
    return max(r - (at - p) / (at - below), 0.0)


def overdispersed(rng, kind, k=80, centre=0.3):
    """k organisations whose true values spread well beyond chance."""
    n = rng.integers(500, 50_000, k).astype(float)
    if kind == "proportion":
        truth = np.clip(rng.normal(centre, 0.06, k), 0.01, 0.99)
        x = rng.binomial(n.astype(int), truth).astype(float)
    else:
        x = rng.poisson(n * centre * rng.gamma(16, 1 / 16, k)).astype(float)
    return pd.DataFrame({"numerator": x, "denominator": n})


# ------------------------------------------------------- (a) unadjusted count limits


@pytest.mark.parametrize("kind", ["rate", "ratio"])
def test_unadjusted_count_limits_reproduce_spiegelhalter_worked_values_for_expected_ten(kind):
    # r0 = 0.01 per unit; at n = 1000 the expected count is 10, and with a
    # multiplier of 1000 the limits are on the count scale.
    df = pd.DataFrame({"numerator": [5, 15], "denominator": [1000, 1000]})
    out = calculate_funnel_limits(df, kind=kind, group_columns=None, multiplier=1000,
                                  overdispersion=False, confidence=0.95)
    assert round(out["funnel_lower_95"].iloc[0], 3) == 3.775
    assert round(out["funnel_upper_95"].iloc[0], 3) == 16.160
    params = calculate_funnel_parameters(df, kind=kind, group_columns=None, multiplier=1000,
                                         overdispersion=False)
    line = calculate_funnel_lines(params, denominators=[1000], confidence=0.95)
    assert round(line["funnel_lower_95"].iloc[0], 3) == 3.775
    assert round(line["funnel_upper_95"].iloc[0], 3) == 16.160


def test_unadjusted_count_limits_match_scipy_interpolated_quantiles():
    expected_counts = [0.7, 3.0, 10.0, 42.5, 400.0, 12_345.6]
    # One group per expected count; two organisations with the same denominator,
    # counts either side of E so the pooled rate is exactly E / 1000.
    rows = []
    for group, e in enumerate(expected_counts):
        rows += [{"g": group, "numerator": e * 0.5, "denominator": 1000.0},
                 {"g": group, "numerator": e * 1.5, "denominator": 1000.0}]
    df = pd.DataFrame(rows)
    out = calculate_funnel_limits(df, kind="rate", group_columns="g", multiplier=1000,
                                  overdispersion=False)
    for group, e in enumerate(expected_counts):
        row = out[out["g"] == group].iloc[0]
        for level, label in ((0.95, "95"), (0.998, "99_8")):
            alpha = 1 - level
            assert row[f"funnel_lower_{label}"] == pytest.approx(
                scipy_interpolated_quantile(alpha / 2, e), rel=1e-9, abs=1e-9)
            assert row[f"funnel_upper_{label}"] == pytest.approx(
                scipy_interpolated_quantile(1 - alpha / 2, e), rel=1e-9, abs=1e-9)


def test_exact_form_remains_available_as_an_option():
    df = pd.DataFrame({"numerator": [5, 15], "denominator": [1000, 1000]})
    out = calculate_funnel_limits(df, kind="rate", group_columns=None, multiplier=1000,
                                  overdispersion=False, confidence=0.95,
                                  poisson_method="exact")
    assert round(out["funnel_lower_95"].iloc[0], 3) == 4.795
    assert round(out["funnel_upper_95"].iloc[0], 3) == 18.390


# ------------------------------------------------------------------ (b) kind "none"


def test_none_kind_gets_no_limits_when_tau2_is_zero():
    # Identical rates: every z-score is 0, so tau^2 = 0 and nothing widens the
    # limits; Poisson limits would be meaningless for ADQs and pounds.
    df = pd.DataFrame({"numerator": [1000.0, 2000.0, 3000.0, 4000.0],
                       "denominator": [100.0, 200.0, 300.0, 400.0]})
    out = calculate_funnel_limits(df, kind="none", group_columns=None, multiplier=1)
    assert (out["funnel_tau2"] == 0).all() and not out["funnel_adjusted"].any()
    for label in ("95", "99_8"):
        assert out[f"funnel_lower_{label}"].isna().all()
        assert out[f"funnel_upper_{label}"].isna().all()
        assert out[f"funnel_flag_{label}"].isna().all()
    assert out["funnel_z"].isna().all()
    params = calculate_funnel_parameters(df, kind="none", group_columns=None, multiplier=1)
    lines = calculate_funnel_lines(params, points=10)
    assert lines[["funnel_lower_95", "funnel_upper_95", "funnel_lower_99_8",
                  "funnel_upper_99_8"]].isna().all().all()
    assert (lines["funnel_target"] == 10.0).all()


def test_none_kind_single_organisation_gets_no_limits():
    df = pd.DataFrame({"numerator": [523.0], "denominator": [40.0]})
    out = calculate_funnel_limits(df, kind="none", group_columns=None, multiplier=1)
    assert out["funnel_lower_95"].isna().all() and out["funnel_flag_99_8"].isna().all()


def test_none_kind_adjusted_limits_are_the_transformed_scale_formula():
    rng = np.random.default_rng(31)
    spread = overdispersed(rng, "rate", k=60, centre=8.0).assign(indicator_id="ADQ")
    flat = pd.DataFrame({"numerator": [1000.0, 2000.0, 3000.0],
                         "denominator": [100.0, 200.0, 300.0], "indicator_id": "COST"})
    df = pd.concat([spread, flat], ignore_index=True)
    out = calculate_funnel_limits(df, kind="none", group_columns="indicator_id", multiplier=1)
    adq = out[out["indicator_id"] == "ADQ"]
    tau2 = adq["funnel_tau2"].iloc[0]
    assert tau2 > 0 and adq["funnel_adjusted"].all()
    r0 = spread["numerator"].sum() / spread["denominator"].sum()
    expected = r0 * spread["denominator"].to_numpy()
    half = Z_99_8 * np.sqrt(1 / (4 * expected) + tau2)
    np.testing.assert_allclose(adq["funnel_lower_99_8"], r0 * np.maximum(1 - half, 0) ** 2,
                               rtol=1e-12)
    np.testing.assert_allclose(adq["funnel_upper_99_8"], r0 * (1 + half) ** 2, rtol=1e-12)
    # In the same call, the group without overdispersion still has none.
    assert out.loc[out["indicator_id"] == "COST", "funnel_upper_99_8"].isna().all()


def test_none_kind_in_a_kind_column_alongside_rates():
    flat = pd.DataFrame({"numerator": [1000.0, 2000.0, 3000.0],
                         "denominator": [100.0, 200.0, 300.0]})
    df = pd.concat([flat.assign(indicator_id="R", kind="rate"),
                    flat.assign(indicator_id="N", kind="none")], ignore_index=True)
    out = calculate_funnel_limits(df, kind="kind", group_columns="indicator_id", multiplier=1)
    rate, none = out[out["kind"] == "rate"], out[out["kind"] == "none"]
    assert rate["funnel_upper_95"].notna().all() and rate["funnel_flag_95"].notna().all()
    assert none["funnel_upper_95"].isna().all() and none["funnel_z"].isna().all()


# --------------------------------------------------------------- (c) one target


@pytest.mark.parametrize("kind, england", [("proportion", 25.0), ("rate", 280.0)])
@pytest.mark.parametrize("overdispersion", [True, False])
def test_lines_row_limits_and_parameters_share_the_england_target(kind, england, overdispersion):
    # Part of England: the organisations pool to 30 (per 100) / 300 (per 1000),
    # while England's value is lower.
    rng = np.random.default_rng(8)
    multiplier = 100 if kind == "proportion" else 1000
    df = overdispersed(rng, kind, k=50, centre=0.3).assign(
        indicator_id="A", england_value=england)
    options = dict(kind=kind, group_columns="indicator_id", multiplier=multiplier,
                   overdispersion=overdispersion)
    rows = calculate_funnel_limits(df, target="england_value", **options)
    params = calculate_funnel_parameters(df, target="england_value", **options)
    lines = calculate_funnel_lines(params, denominators=df["denominator"].to_numpy(),
                                   target="england_value")
    assert params["funnel_target"].iloc[0] == pytest.approx(england, rel=1e-12)
    assert params["funnel_target_source"].iloc[0] == "england_value"
    assert (rows["funnel_target"] == params["funnel_target"].iloc[0]).all()
    assert (lines["funnel_target"] == params["funnel_target"].iloc[0]).all()
    assert rows["funnel_tau2"].iloc[0] == params["funnel_tau2"].iloc[0]
    for label in ("95", "99_8"):
        np.testing.assert_allclose(lines[f"funnel_lower_{label}"], rows[f"funnel_lower_{label}"],
                                   rtol=1e-12)
        np.testing.assert_allclose(lines[f"funnel_upper_{label}"], rows[f"funnel_upper_{label}"],
                                   rtol=1e-12)
    pooled = calculate_funnel_parameters(df, **options)
    assert pooled["funnel_target"].iloc[0] != pytest.approx(england, rel=1e-3)


def test_lines_refuse_parameters_fitted_around_another_target():
    df = pd.DataFrame({"numerator": [20, 30], "denominator": [100, 100], "england_value": 22.0})
    pooled = calculate_funnel_parameters(df, group_columns=None)
    assert pooled["funnel_target_source"].iloc[0] == "pooled"
    with pytest.raises(ValueError, match="fitted around 'pooled'.*target='england_value'"):
        calculate_funnel_lines(pooled, points=5, target="england_value")


def test_target_that_varies_within_a_funnel_is_an_error_naming_the_group():
    df = pd.DataFrame({"indicator_id": ["A", "A", "B", "B"], "numerator": [20, 30, 5, 6],
                       "denominator": [100, 100, 100, 100],
                       "england_value": [22.0, 22.0, 5.0, 7.0]})
    for function in (calculate_funnel_parameters, calculate_funnel_limits):
        with pytest.raises(ValueError, match=r"indicator_id='B'.*5 and 7"):
            function(df, group_columns="indicator_id", target="england_value")


def test_rows_missing_the_target_take_their_group_value():
    df = pd.DataFrame({"numerator": [20, 30, 25], "denominator": [100, 100, 100],
                       "england_value": [22.0, np.nan, 22.0]})
    out = calculate_funnel_limits(df, group_columns=None, target="england_value",
                                  overdispersion=False)
    assert out["funnel_target"].tolist() == [22.0, 22.0, 22.0]
    assert out["funnel_upper_95"].notna().all()


# ------------------------------------------------------------------- funnel_z


@pytest.mark.parametrize("kind, transform", [("proportion", "sqrt"), ("rate", "sqrt"),
                                             ("rate", "log")])
def test_flags_follow_funnel_z_against_the_normal_quantile_when_adjusted(kind, transform):
    rng = np.random.default_rng(17)
    df = pd.concat([overdispersed(rng, kind, k=400, centre=c).assign(indicator_id=name)
                    for name, c in (("A", 0.2), ("B", 0.45))], ignore_index=True)
    out = calculate_funnel_limits(df, kind=kind, group_columns="indicator_id",
                                  multiplier=100, count_transform=transform)
    assert out["funnel_adjusted"].all()
    z = out["funnel_z"].to_numpy()
    value = df["numerator"] / df["denominator"] * 100
    for label, z_level in (("95", Z_95), ("99_8", Z_99_8)):
        flag = out[f"funnel_flag_{label}"].astype(str).to_numpy()
        clear = np.abs(np.abs(z) - z_level) > 1e-9  # rows not on a limit up to rounding
        np.testing.assert_array_equal((flag == "above")[clear], (z > z_level)[clear])
        np.testing.assert_array_equal((flag == "below")[clear], (z < -z_level)[clear])
        np.testing.assert_array_equal(flag == "above", value > out[f"funnel_upper_{label}"])
        np.testing.assert_array_equal(flag == "below", value < out[f"funnel_lower_{label}"])
        if label == "99_8":  # both sides occur, so the equivalence is tested, not vacuous
            assert (flag == "above").any() and (flag == "below").any()


def test_funnel_z_matches_the_transformed_scale_formulas():
    rng = np.random.default_rng(3)
    prop = overdispersed(rng, "proportion", k=60)
    out = calculate_funnel_limits(prop, group_columns=None, multiplier=1)
    p0 = prop["numerator"].sum() / prop["denominator"].sum()
    x, n = prop["numerator"].to_numpy(), prop["denominator"].to_numpy()
    tau2 = out["funnel_tau2"].iloc[0]
    expected = (np.arcsin(np.sqrt(x / n)) - math.asin(math.sqrt(p0))) / np.sqrt(1 / (4 * n) + tau2)
    np.testing.assert_allclose(out["funnel_z"], expected, rtol=1e-10)

    rate = overdispersed(rng, "rate", k=60)
    x, n = rate["numerator"].to_numpy(), rate["denominator"].to_numpy()
    e = x.sum() / n.sum() * n
    for transform in ("sqrt", "log"):
        out = calculate_funnel_limits(rate, kind="rate", group_columns=None, multiplier=1,
                                      count_transform=transform)
        tau2 = out["funnel_tau2"].iloc[0]
        if transform == "sqrt":
            expected = (np.sqrt(x / e) - 1) / np.sqrt(1 / (4 * e) + tau2)
        else:
            expected = np.log(x / e) / np.sqrt(1 / e + tau2)
        np.testing.assert_allclose(out["funnel_z"], expected, rtol=1e-10)


def test_funnel_z_without_adjustment_and_with_a_given_target():
    df = pd.DataFrame({"numerator": [20, 35, np.nan, 0], "denominator": [100, 100, 100, 0],
                       "england_value": 25.0})
    out = calculate_funnel_limits(df, group_columns=None, overdispersion=False,
                                  target="england_value")
    centre = math.asin(math.sqrt(0.25))
    expected = [(math.asin(math.sqrt(p)) - centre) * 2 * math.sqrt(100) for p in (0.2, 0.35)]
    np.testing.assert_allclose(out["funnel_z"].iloc[:2], expected, rtol=1e-12)
    assert out["funnel_z"].iloc[2:].isna().all()  # no numerator / no denominator
