"""Confidence intervals: worked values from statistics.md, oracles and properties."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats
from statsmodels.stats.proportion import proportion_confint

from moopt.stats import (
    calculate_intervals,
    calculate_rate_interval,
    calculate_ratio_interval,
    calculate_wilson_interval,
    poisson_count_limits,
    wilson_limits,
)


def one_row(**columns):
    return pd.DataFrame({k: [v] for k, v in columns.items()})


# ---------------------------------------------------------------- worked values


def test_wilson_worked_value_20_of_100_both_levels():
    out = calculate_wilson_interval(one_row(numerator=20, denominator=100), multiplier=1)
    row = out.iloc[0]
    assert round(row["lower_95"], 6) == 0.133367
    assert round(row["upper_95"], 6) == 0.288829
    assert round(row["lower_99_8"], 6) == 0.105192
    assert round(row["upper_99_8"], 6) == 0.347111


def test_z_values_match_statistics_reference():
    # z95 = 1.959963985, z99.8 = 3.090232306 in the reference; recover z from a
    # Wilson interval's width is awkward, so check the quantile helper directly.
    from moopt.stats._validate import z_for

    assert z_for(0.95) == pytest.approx(1.959963985, abs=1e-9)
    assert z_for(0.998) == pytest.approx(3.090232306, abs=1e-9)


def test_byar_worked_value_count_10():
    out = calculate_rate_interval(
        one_row(numerator=10, denominator=1), confidence=0.95, multiplier=1
    )
    assert round(out["lower_95"].iloc[0], 6) == 4.787450
    assert round(out["upper_95"].iloc[0], 6) == 18.391459


def test_exact_worked_value_count_5():
    out = calculate_rate_interval(
        one_row(numerator=5, denominator=1), confidence=0.95, multiplier=1
    )
    assert round(out["lower_95"].iloc[0], 6) == 1.623486
    assert round(out["upper_95"].iloc[0], 6) == 11.668332


def test_wilson_formula_written_out_by_hand():
    # The reference formula, transcribed separately from the implementation.
    z = 1.959963985
    x, n = 20, 100
    lower = (2 * x + z**2 - z * math.sqrt(z**2 + 4 * x * (1 - x / n))) / (2 * (n + z**2))
    upper = (2 * x + z**2 + z * math.sqrt(z**2 + 4 * x * (1 - x / n))) / (2 * (n + z**2))
    got = wilson_limits(np.array([x]), np.array([n]), 0.95)
    assert got[0][0] == pytest.approx(lower, abs=1e-9)
    assert got[1][0] == pytest.approx(upper, abs=1e-9)


# ---------------------------------------------------------------- oracles


@pytest.mark.parametrize("level", [0.95, 0.998])
def test_wilson_agrees_with_statsmodels(level):
    x = np.array([0, 1, 5, 20, 50, 99, 100, 0, 3, 7_000, 123_456])
    n = np.array([100, 100, 100, 100, 100, 100, 100, 1, 3, 10_000, 1_000_000])
    lower, upper = wilson_limits(x, n, level)
    ref_lower, ref_upper = proportion_confint(x, n, alpha=1 - level, method="wilson")
    np.testing.assert_allclose(lower, ref_lower, atol=1e-10)
    np.testing.assert_allclose(upper, ref_upper, atol=1e-10)


def _exact_poisson_by_root_finding(count, level):
    """Garwood limits from their definition, P(X >= O | lo) = P(X <= O | hi) = a/2."""
    half = (1 - level) / 2
    lo = 0.0 if count == 0 else optimize.brentq(
        lambda m: stats.poisson.sf(count - 1, m) - half, 1e-12, 100
    )
    hi = optimize.brentq(lambda m: stats.poisson.cdf(count, m) - half, 1e-12, 100)
    return lo, hi


@pytest.mark.parametrize("level", [0.95, 0.998])
def test_exact_poisson_matches_definition_for_small_counts(level):
    counts = np.arange(10)
    lower, upper = poisson_count_limits(counts, level)
    for o, lo, hi in zip(counts, lower, upper):
        ref_lo, ref_hi = _exact_poisson_by_root_finding(int(o), level)
        assert lo == pytest.approx(ref_lo, abs=1e-8)
        assert hi == pytest.approx(ref_hi, abs=1e-8)


@pytest.mark.parametrize("count", [10, 50, 500, 50_000])
def test_byar_is_close_to_exact_for_larger_counts(count):
    lower, upper = poisson_count_limits(np.array([count]), 0.95)
    ref_lo = stats.chi2.ppf(0.025, 2 * count) / 2
    ref_hi = stats.chi2.ppf(0.975, 2 * count + 2) / 2
    # Byar's approximation is good to well under 1% from 10 events upwards.
    assert lower[0] == pytest.approx(ref_lo, rel=5e-3)
    assert upper[0] == pytest.approx(ref_hi, rel=5e-3)


def test_method_switches_at_ten():
    lower, _ = poisson_count_limits(np.array([9, 10]), 0.95)
    assert lower[0] == pytest.approx(stats.chi2.ppf(0.025, 18) / 2)
    o = 10
    byar = o * (1 - 1 / (9 * o) - 1.959963985 / (3 * math.sqrt(o))) ** 3
    assert lower[1] == pytest.approx(byar, abs=1e-6)


def test_ratio_is_count_interval_divided_by_expected():
    out = calculate_ratio_interval(one_row(numerator=10, denominator=8.0), confidence=0.95)
    assert out["lower_95"].iloc[0] == pytest.approx(4.787450 / 8, abs=1e-6)
    assert out["upper_95"].iloc[0] == pytest.approx(18.391459 / 8, abs=1e-6)


def test_rate_uses_multiplier_and_denominator():
    out = calculate_rate_interval(one_row(numerator=5, denominator=2000), confidence=0.95)
    assert out["lower_95"].iloc[0] == pytest.approx(1.623486 / 2000 * 1000, abs=1e-6)
    assert out["upper_95"].iloc[0] == pytest.approx(11.668332 / 2000 * 1000, abs=1e-6)


# ---------------------------------------------------------------- edge cases


def test_zero_of_n_and_n_of_n():
    df = pd.DataFrame({"numerator": [0, 50], "denominator": [50, 50]})
    out = calculate_wilson_interval(df, multiplier=1)
    assert out["lower_95"].iloc[0] == 0.0
    assert out["upper_95"].iloc[1] == 1.0
    assert 0 < out["upper_95"].iloc[0] < 0.1
    assert 0.9 < out["lower_95"].iloc[1] < 1


def test_zero_count_has_lower_limit_zero_and_exact_upper():
    out = calculate_rate_interval(one_row(numerator=0, denominator=1), multiplier=1)
    assert out["lower_95"].iloc[0] == 0.0
    assert out["upper_95"].iloc[0] == pytest.approx(-math.log(0.025), abs=1e-9)
    assert out["upper_99_8"].iloc[0] == pytest.approx(-math.log(0.001), abs=1e-9)


def test_zero_or_missing_denominator_gives_nan():
    df = pd.DataFrame({"numerator": [0.0, 1.0, np.nan], "denominator": [0.0, np.nan, 10.0]})
    for func in (calculate_wilson_interval, calculate_rate_interval):
        out = func(df)
        assert out[["lower_95", "upper_95"]].isna().all().all()


def test_tiny_and_huge_denominators():
    df = pd.DataFrame({"numerator": [1, 200_000_000], "denominator": [1, 1_000_000_000]})
    out = calculate_wilson_interval(df, multiplier=1)
    # 1 of 1: the Wilson lower limit reduces to 1 / (1 + z^2).
    assert out["lower_95"].iloc[0] == pytest.approx(1 / (1 + 1.959963985**2), abs=1e-9)
    assert out["upper_95"].iloc[0] == 1.0
    assert out["lower_95"].iloc[1] < 0.2 < out["upper_95"].iloc[1]
    assert out["upper_95"].iloc[1] - out["lower_95"].iloc[1] < 1e-4


def test_multiplier_from_column_and_original_untouched():
    df = pd.DataFrame({"numerator": [20, 20], "denominator": [100, 100], "multiplier": [1, 100]})
    out = calculate_wilson_interval(df, multiplier="multiplier", confidence=0.95)
    assert out["lower_95"].iloc[1] == pytest.approx(100 * out["lower_95"].iloc[0])
    assert "lower_95" not in df.columns


def test_calculate_intervals_picks_method_by_kind_column():
    df = pd.DataFrame(
        {
            "kind": ["proportion", "rate", "ratio", "none"],
            "numerator": [20, 10, 10, 1234.5],
            "denominator": [100, 1, 8.0, 10.0],
            "multiplier": [1, 1, 1, 1],
        }
    )
    out = calculate_intervals(df, kind="kind", confidence=(0.95, 0.998))
    assert round(out["lower_95"].iloc[0], 6) == 0.133367
    assert round(out["upper_95"].iloc[1], 6) == 18.391459
    assert out["upper_95"].iloc[2] == pytest.approx(18.391459 / 8, abs=1e-6)
    assert np.isnan(out["lower_95"].iloc[3]) and np.isnan(out["upper_99_8"].iloc[3])


def test_calculate_intervals_with_constant_kind():
    df = pd.DataFrame({"numerator": [20], "denominator": [100], "multiplier": [100]})
    out = calculate_intervals(df, kind="proportion", confidence=0.95)
    assert round(out["lower_95"].iloc[0], 4) == 13.3367


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"numerator": [1]}), "not found"),
        (pd.DataFrame({"numerator": [-1], "denominator": [5]}), "negative"),
        (pd.DataFrame({"numerator": [6], "denominator": [5]}), "greater than"),
        (pd.DataFrame({"numerator": ["a"], "denominator": [5]}), "must hold numbers"),
        (pd.DataFrame({"numerator": [np.inf], "denominator": [5]}), "infinite"),
    ],
)
def test_wilson_rejects_bad_input(frame, message):
    with pytest.raises(ValueError, match=message):
        calculate_wilson_interval(frame)


@pytest.mark.parametrize("confidence", [0, 1, 1.5, -0.1, (0.95, 95), "0.95", ()])
def test_rejects_confidence_outside_unit_interval(confidence):
    with pytest.raises(ValueError):
        calculate_wilson_interval(one_row(numerator=1, denominator=2), confidence=confidence)


def test_poisson_rejects_non_counts():
    with pytest.raises(ValueError, match="kind='none'"):
        calculate_rate_interval(one_row(numerator=2.5, denominator=10))


def test_unknown_kind_is_rejected():
    df = pd.DataFrame(
        {"kind": ["percent"], "numerator": [1], "denominator": [2], "multiplier": [1]}
    )
    with pytest.raises(ValueError, match="allowed are"):
        calculate_intervals(df)
    with pytest.raises(ValueError, match="neither"):
        calculate_intervals(df, kind="percentage")


def test_not_a_dataframe():
    with pytest.raises(ValueError, match="DataFrame"):
        calculate_wilson_interval({"numerator": [1], "denominator": [2]})


# ---------------------------------------------------------------- properties

counts = st.integers(min_value=0, max_value=10_000)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_wilson_interval_contains_value_and_nests(data):
    n = data.draw(st.integers(min_value=1, max_value=1_000_000))
    x = data.draw(st.integers(min_value=0, max_value=n))
    out = calculate_wilson_interval(one_row(numerator=x, denominator=n), multiplier=1).iloc[0]
    p = x / n
    assert out["lower_95"] <= p + 1e-12 <= out["upper_95"] + 2e-12
    assert out["lower_99_8"] <= out["lower_95"] + 1e-12
    assert out["upper_99_8"] >= out["upper_95"] - 1e-12
    assert 0 <= out["lower_99_8"] and out["upper_99_8"] <= 1


@settings(max_examples=150, deadline=None)
@given(count=counts, denominator=st.floats(min_value=0.01, max_value=1e7))
def test_poisson_interval_contains_value_and_nests(count, denominator):
    out = calculate_rate_interval(
        one_row(numerator=count, denominator=denominator), multiplier=1
    ).iloc[0]
    rate = count / denominator
    assert out["lower_95"] <= rate * (1 + 1e-12) <= out["upper_95"] * (1 + 1e-12) + 1e-300
    assert out["lower_99_8"] <= out["lower_95"] * (1 + 1e-12)
    assert out["upper_99_8"] >= out["upper_95"] * (1 - 1e-12)
    assert out["lower_99_8"] >= 0
