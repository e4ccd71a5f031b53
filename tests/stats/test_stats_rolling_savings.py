"""Rolling 12-month values and cost-saving opportunity."""

import numpy as np
import pandas as pd
import pytest

from moopt.stats import calculate_cost_savings
from oracles.rolling import calculate_rolling_values

# ---------------------------------------------------------------- rolling


def monthly(n=24, code="A", start="2023-01-01"):
    rng = np.random.default_rng(hash(code) % 1000)
    return pd.DataFrame(
        {
            "org_code": code,
            "period": pd.date_range(start, periods=n, freq="MS"),
            "numerator": rng.integers(0, 100, n).astype(float),
            "denominator": rng.uniform(900, 1100, n),
        }
    )


def test_rolling_sum_matches_pandas_rolling():
    df = pd.concat([monthly(code="A"), monthly(code="B")], ignore_index=True)
    out = calculate_rolling_values(df, series_columns="org_code", multiplier=1000)
    for code, part in out.groupby("org_code"):
        expected = part["numerator"].rolling(12).sum()
        np.testing.assert_allclose(part["numerator_rolling_12m"], expected, equal_nan=True)
        expected_den = part["denominator"].rolling(12).sum()
        np.testing.assert_allclose(part["denominator_rolling_12m"], expected_den, equal_nan=True)
        np.testing.assert_allclose(part["value_rolling_12m"], expected / expected_den * 1000,
                                   equal_nan=True)
    assert out["numerator_rolling_12m"].isna().sum() == 2 * 11


def test_denominator_mean_and_last():
    df = monthly()
    mean = calculate_rolling_values(df, series_columns=None, denominator_method="mean")
    np.testing.assert_allclose(mean["denominator_rolling_12m"].iloc[11],
                               df["denominator"].iloc[:12].mean())
    last = calculate_rolling_values(df, series_columns=None, denominator_method="last")
    assert last["denominator_rolling_12m"].iloc[15] == df["denominator"].iloc[15]


def test_missing_month_or_value_gives_nan_windows():
    df = monthly().drop(index=5).reset_index(drop=True)
    out = calculate_rolling_values(df, series_columns=None)
    # Windows ending in months 12..17 of the original series span the gap (month 6).
    assert out["numerator_rolling_12m"].iloc[:16].isna().all()
    assert out["numerator_rolling_12m"].iloc[16:].notna().all()
    df = monthly()
    df.loc[3, "numerator"] = np.nan
    out = calculate_rolling_values(df, series_columns=None)
    assert out["numerator_rolling_12m"].iloc[11:15].isna().all()
    assert out["numerator_rolling_12m"].iloc[15] == df["numerator"].iloc[4:16].sum()


def test_rolling_rows_in_any_order_and_other_windows():
    df = monthly().sample(frac=1, random_state=2)
    out = calculate_rolling_values(df, series_columns=None, window=3).sort_values("period")
    expected = out["numerator"].rolling(3).sum()
    np.testing.assert_allclose(out["numerator_rolling_3m"], expected, equal_nan=True)


def test_rolling_validation():
    with pytest.raises(ValueError, match="window"):
        calculate_rolling_values(monthly(), series_columns=None, window=0)
    with pytest.raises(ValueError, match="same period twice"):
        calculate_rolling_values(pd.concat([monthly(), monthly()]), series_columns=None)
    with pytest.raises(ValueError, match="denominator_method"):
        calculate_rolling_values(monthly(), series_columns=None, denominator_method="median")


# ---------------------------------------------------------------- savings


def cost_frame(**overrides):
    base = {
        "indicator_id": ["X", "X", "X"],
        "org_level": ["sub_icb"] * 3,
        "period": [1, 1, 1],
        "period_type": ["month"] * 3,
        "numerator": [40.0, 0.0, 10.0],
        "denominator": [100.0, 50.0, 10.0],
        "numerator_cost": [400.0, 0.0, 150.0],
        "denominator_cost": [520.0, 100.0, 150.0],
        "multiplier": [100.0] * 3,
        "decile_10": [10.0] * 3,
        "decile_50": [40.0] * 3,
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_saving_equals_spend_now_minus_spend_at_target():
    out = calculate_cost_savings(
        cost_frame(), numerator_cost="numerator_cost", denominator_cost="denominator_cost"
    )
    # Row 0, at 10%: 10 items at 10.00 and 90 at 2.00 cost 280, against 520 now.
    assert out["cost_saving_10"].iloc[0] == pytest.approx(520 - (10 * 10 + 90 * 2))
    # At 40% (its own ratio) the saving is zero.
    assert out["cost_saving_50"].iloc[0] == pytest.approx(0.0)


def test_saving_matches_openprescribing_expanded_formula():
    df = cost_frame()
    out = calculate_cost_savings(df, numerator_cost="numerator_cost",
                                 denominator_cost="denominator_cost", targets=["decile_10"])
    r = df.iloc[0]
    t = 0.10
    expanded = r.denominator_cost - (
        t * r.denominator * (r.numerator_cost / r.numerator)
        + (r.denominator - t * r.denominator)
        * ((r.denominator_cost - r.numerator_cost) / (r.denominator - r.numerator))
    )
    assert out["cost_saving_10"].iloc[0] == pytest.approx(expanded)


def test_fallback_to_pooled_unit_costs():
    out = calculate_cost_savings(cost_frame(), numerator_cost="numerator_cost",
                                 denominator_cost="denominator_cost")
    pooled_num_unit = (400 + 0 + 150) / (40 + 0 + 10)  # row 1 has no numerator items
    pooled_other_unit = (120 + 100 + 0) / (60 + 50 + 0)  # row 2 has no other items
    assert out["cost_saving_10"].iloc[1] == pytest.approx((0 - 5) * (pooled_num_unit - 2.0))
    assert out["cost_saving_10"].iloc[2] == pytest.approx((10 - 1) * (15 - pooled_other_unit))
    clipped = calculate_cost_savings(cost_frame(), numerator_cost="numerator_cost",
                                     denominator_cost="denominator_cost", clip_negative=True)
    assert clipped["cost_saving_10"].iloc[1] == 0.0


def test_cost_per_population_form():
    df = pd.DataFrame({"indicator_id": ["D"], "org_level": ["icb"], "period": [1],
                       "period_type": ["month"], "numerator": [50_000.0],
                       "denominator": [100_000.0], "multiplier": [1000.0],
                       "decile_10": [300.0], "decile_50": [450.0]})
    out = calculate_cost_savings(df)
    # £500 per 1,000 patients now; at £300 per 1,000 the spend would be £30,000.
    assert out["cost_saving_10"].iloc[0] == pytest.approx(20_000.0)
    assert out["cost_saving_50"].iloc[0] == pytest.approx(5_000.0)


def test_savings_validation():
    with pytest.raises(ValueError, match="both"):
        calculate_cost_savings(cost_frame(), numerator_cost="numerator_cost")
    with pytest.raises(ValueError, match="greater than"):
        calculate_cost_savings(cost_frame(numerator_cost=[600.0, 0.0, 150.0]),
                               numerator_cost="numerator_cost", denominator_cost="denominator_cost")
    with pytest.raises(ValueError, match="not found"):
        calculate_cost_savings(cost_frame(), targets=["decile_20"])
