"""The percentile and decile oracle (tests/oracles/ranking.py) on worked values and pandas/NumPy."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.ranking import (
    assign_deciles,
    assign_percentiles,
    assign_percentiles_and_deciles,
    calculate_deciles,
)

WORKED = [0.12, 0.09, 0.15, 0.09, 0.14, 0.075, 0.15, 0.08, 0.10, 0.16, 0.11, 0.13]
WORKED_DECILES = [0.081, 0.09, 0.093, 0.104, 0.115, 0.126, 0.137, 0.148, 0.15]


def tidy(values, **keys):
    n = len(values)
    base = {
        "indicator_id": "AMR01",
        "org_level": "sub_icb",
        "period": pd.Timestamp("2024-03-01"),
        "period_type": "month",
    }
    base.update(keys)
    out = pd.DataFrame({k: [v] * n if not isinstance(v, list) else v for k, v in base.items()})
    out["value"] = values
    return out


def test_worked_deciles_and_percentile():
    df = tidy(WORKED)
    deciles = calculate_deciles(df)
    assert deciles.shape[0] == 1
    got = deciles[[f"decile_{d}" for d in range(10, 100, 10)]].iloc[0].round(6).tolist()
    assert got == WORKED_DECILES
    assert round(assign_percentiles(df)["percentile"].iloc[0], 6) == 54.545455


def test_deciles_match_numpy_linear_quantile():
    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, 1.0, 257)
    df = tidy(list(values))
    got = calculate_deciles(df).iloc[0, -9:].to_numpy(dtype=float)
    expected = np.quantile(values, np.arange(1, 10) / 10)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_percentile_matches_pandas_min_rank_oracle_across_groups():
    rng = np.random.default_rng(7)
    n = 3000
    df = pd.DataFrame(
        {
            "indicator_id": rng.choice(["A", "B", "C"], n),
            "org_level": rng.choice(["practice", "pcn"], n),
            "period": pd.to_datetime("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 3, n) * 31, "D"),
            "period_type": "month",
            # Rounded to create many ties; some missing.
            "value": np.where(rng.random(n) < 0.1, np.nan, np.round(rng.normal(5, 1, n), 1)),
        }
    )
    out = assign_percentiles(df)
    keys = ["indicator_id", "org_level", "period", "period_type"]
    grouped = df.groupby(keys)["value"]
    rank = grouped.rank(method="min")
    count = grouped.transform("count")
    expected = (rank - 1) / (count - 1) * 100
    expected[count == 1] = np.nan
    np.testing.assert_allclose(out["percentile"], expected, equal_nan=True)

    dec = assign_deciles(df)
    oracle = grouped.transform(lambda s: s.quantile(0.3))
    np.testing.assert_allclose(dec["decile_30"], oracle, atol=1e-12)


def test_nulls_stay_null_and_are_not_counted():
    df = tidy([1.0, np.nan, 3.0, 2.0])
    out = assign_percentiles(df)
    assert out["percentile"].tolist()[0] == 0.0
    assert np.isnan(out["percentile"].iloc[1])
    assert out["percentile"].tolist()[2:] == [100.0, 50.0]


def test_single_organisation_gets_nan_and_ties_share_lowest_rank():
    single = assign_percentiles(tidy([4.2]))
    assert np.isnan(single["percentile"].iloc[0])
    ties = assign_percentiles(tidy([1.0, 1.0, 2.0, 2.0, 3.0]))
    assert ties["percentile"].tolist() == [0.0, 0.0, 50.0, 50.0, 100.0]


def test_all_missing_group():
    out = assign_percentiles_and_deciles(tidy([np.nan, np.nan]))
    assert out["percentile"].isna().all() and out["decile_50"].isna().all()


def test_groups_are_ranked_separately():
    df = pd.concat([tidy([1.0, 2.0], org_level="pcn"), tidy([10.0, 20.0, 30.0], org_level="icb")])
    out = assign_percentiles_and_deciles(df)
    assert out["percentile"].tolist() == [0.0, 100.0, 0.0, 50.0, 100.0]
    assert out["decile_50"].tolist() == [1.5, 1.5, 20.0, 20.0, 20.0]


def test_bad_inputs():
    with pytest.raises(ValueError, match="not found"):
        assign_percentiles(tidy([1.0]).drop(columns="period"))
    with pytest.raises(ValueError, match="infinite"):
        assign_percentiles(tidy([1.0, np.inf]))
    with pytest.raises(ValueError, match="between 0 and 100"):
        calculate_deciles(tidy([1.0]), deciles=[110])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)),
        min_size=1,
        max_size=60,
    )
)
def test_percentiles_bounded_and_monotone(values):
    values = [np.nan if v is None else v for v in values]
    out = assign_percentiles_and_deciles(tidy(values))
    pct = out["percentile"].to_numpy()
    v = out["value"].to_numpy()
    present = ~np.isnan(v)
    assert np.array_equal(np.isnan(pct[present]), np.full(present.sum(), present.sum() == 1))
    assert np.isnan(pct[~present]).all()
    if present.sum() > 1:
        p, x = pct[present], v[present]
        assert ((p >= 0) & (p <= 100)).all()
        order = np.argsort(x, kind="stable")
        assert np.all(np.diff(p[order]) >= 0)  # monotone in the value
        assert p.min() == 0
        # Ties share the lowest rank, so the top value's percentile counts those below it.
        assert p.max() == pytest.approx((x < x.max()).sum() / (len(x) - 1) * 100)
        deciles = out.iloc[0][[f"decile_{d}" for d in range(10, 100, 10)]].to_numpy(dtype=float)
        assert np.all(np.diff(deciles) >= -1e-9)
        assert deciles[0] >= x.min() and deciles[-1] <= x.max()
