"""Peer groups (standardised nearest neighbours) and peer benchmarks."""

import numpy as np
import pandas as pd
import pytest

from moopt.stats import assign_peer_groups, calculate_comparison, calculate_peer_benchmark


def organisations(n=30, level="sub_icb", seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "org_level": level,
            "org_code": [f"{level[:1].upper()}{i:03d}" for i in range(n)],
            "list_size": rng.uniform(50_000, 900_000, n),
            "percent_65_plus": rng.uniform(10, 30, n),
            "imd_score": rng.uniform(5, 45, n),
        }
    )


ATTRIBUTES = ["list_size", "percent_65_plus", "imd_score"]


def test_matches_brute_force_standardised_distance():
    orgs = organisations()
    out = assign_peer_groups(orgs, ATTRIBUTES, k=5)
    x = orgs[ATTRIBUTES].to_numpy()
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    for i, code in enumerate(orgs["org_code"]):
        d = np.sqrt(((z - z[i]) ** 2).sum(axis=1))
        d[i] = np.inf
        expected = orgs["org_code"].to_numpy()[np.argsort(d)[:5]].tolist()
        got = out.loc[out.org_code == code].sort_values("peer_rank")
        assert got["peer_code"].tolist() == expected
        np.testing.assert_allclose(got["distance"], np.sort(d)[:5], rtol=1e-9)


def test_units_do_not_matter_and_self_is_excluded():
    orgs = organisations()
    a = assign_peer_groups(orgs, ATTRIBUTES, k=4)
    b = assign_peer_groups(orgs.assign(list_size=orgs.list_size / 1000), ATTRIBUTES, k=4)
    assert a["peer_code"].tolist() == b["peer_code"].tolist()
    assert (a["org_code"] != a["peer_code"]).all()
    assert a.groupby("org_code").size().eq(4).all()


def test_levels_are_kept_apart_and_k_is_capped():
    orgs = pd.concat([organisations(12, "sub_icb"), organisations(4, "icb", seed=1)])
    out = assign_peer_groups(orgs, ATTRIBUTES)
    icb = out[out.org_level == "icb"]
    assert icb.groupby("org_code").size().eq(3).all()
    assert set(icb["peer_code"]) <= set(orgs.loc[orgs.org_level == "icb", "org_code"])
    assert out[out.org_level == "sub_icb"].groupby("org_code").size().eq(10).all()


def test_weights_change_the_neighbours():
    orgs = pd.DataFrame({"org_level": "pcn", "org_code": list("ABC"),
                         "a": [0.0, 1.0, 0.0], "b": [0.0, 0.0, 1.2]})
    near_on_a = assign_peer_groups(orgs, ["a", "b"], k=1, weights={"a": 0.0, "b": 1.0})
    assert near_on_a.set_index("org_code").loc["A", "peer_code"] == "B"
    near_on_b = assign_peer_groups(orgs, ["a", "b"], k=1, weights={"a": 1.0, "b": 0.0})
    assert near_on_b.set_index("org_code").loc["A", "peer_code"] == "C"


def test_validation():
    orgs = organisations(5)
    with pytest.raises(ValueError, match="missing or infinite"):
        assign_peer_groups(orgs.assign(imd_score=[1.0, np.nan, 2, 3, 4]), ATTRIBUTES)
    with pytest.raises(ValueError, match="repeat"):
        assign_peer_groups(pd.concat([orgs, orgs.iloc[:1]]), ATTRIBUTES)
    with pytest.raises(ValueError, match="k must"):
        assign_peer_groups(orgs, ATTRIBUTES, k=0)
    with pytest.raises(ValueError, match="not found"):
        assign_peer_groups(orgs, ["age"])


def test_peer_benchmark_is_ratio_of_peer_sums_and_feeds_comparison():
    orgs = organisations(6)
    peers = assign_peer_groups(orgs, ATTRIBUTES, k=2)
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"indicator_id": "X", "period": 1, "period_type": "month",
                       "org_level": "sub_icb", "org_code": orgs["org_code"],
                       "numerator": rng.integers(100, 200, 6).astype(float),
                       "denominator": rng.integers(1000, 2000, 6).astype(float),
                       "multiplier": 100.0})
    out = calculate_peer_benchmark(df, peers)
    indexed = df.set_index("org_code")
    for code, row in out.set_index("org_code").iterrows():
        mine = peers.loc[peers.org_code == code, "peer_code"]
        expected = indexed.loc[mine, "numerator"].sum() / indexed.loc[mine, "denominator"].sum()
        assert row["peer_value"] == pytest.approx(expected * 100)
        assert row["peer_value_peers"] == 2
    both = out.assign(lower_95=out.peer_value + 1, upper_95=out.peer_value + 2)
    compared = calculate_comparison(both, benchmark="peer_value", prefix="peer",
                                    improvement_direction="neutral", confidence=0.95)
    assert (compared["peer_comparison_95"] == "higher").all()
    with pytest.raises(ValueError, match="rows repeat"):
        calculate_peer_benchmark(pd.concat([df, df.iloc[:1]]), peers)
