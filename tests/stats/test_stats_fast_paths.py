"""The vectorised per-row statistics against straightforward reference implementations.

The production code groups rows with integer codes, sorts each group once,
works block by block and shares level-independent terms between confidence
levels. The references below do the same statistics the plain way (pandas
groupby, one group at a time, SciPy's chi-squared quantiles, formulas
written out), on random national-shaped tables with missing values, zero
denominators, ties, small counts, one-organisation groups and every kind.
Each comparison is run with the default block size and with tiny blocks, so
that rows of several kinds and of adjusted and unadjusted groups meet
inside one block.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats as sps

import moopt.stats._validate as validate
import moopt.stats.funnels as funnels
import moopt.stats.intervals as intervals
from moopt.stats import (
    calculate_comparison,
    calculate_funnel_limits,
    calculate_funnel_parameters,
    calculate_intervals,
    poisson_exact_control_limits,
)
from moopt.stats.ranking import _first_row_of_each_group
from oracles.ranking import assign_percentiles, assign_percentiles_and_deciles, calculate_deciles

GROUPS = ["indicator_id", "org_level", "period", "period_type"]
KINDS = ("proportion", "rate", "ratio", "none")
MULTIPLIERS = {"proportion": 100.0, "rate": 1000.0, "ratio": 1.0, "none": 1.0}
Z = {0.95: sps.norm.ppf(0.975), 0.998: sps.norm.ppf(0.999)}


def random_table(seed: int, organisations=(1, 2, 7, 40, 300), indicators=8, months=3):
    """A tidy indicator table with awkward cases mixed in, rows shuffled.

    Level 0 has one organisation (called "england"); 5% of denominators are
    0, 3% of numerators missing, 8% of values tied at 5.0; counts are often
    below 10.
    """
    rng = np.random.default_rng(seed)
    level = np.repeat(np.arange(len(organisations)), organisations)
    org = np.concatenate([np.arange(count) for count in organisations])
    # every indicator x organisation x month x period type
    grid = np.stack(np.meshgrid(np.arange(indicators), np.arange(len(level)), np.arange(months),
                                np.arange(2), indexing="ij"), axis=-1).reshape(-1, 4)
    ind, who, month, ptype = grid.T
    size = len(grid)
    kind = np.array(KINDS)[ind % 4]
    lvl = level[who]
    den = np.round(rng.lognormal(2 + lvl, 1.5))
    den[rng.random(size) < 0.05] = 0.0
    share = rng.uniform(0.02, 0.98, indicators)[ind]
    rate = rng.uniform(0.001, 0.4, indicators)[ind] * rng.lognormal(0, 0.4, size)
    num = np.where(kind == "proportion", rng.binomial(den.astype(np.int64), share) * 1.0,
                   np.where(kind == "none", den * rng.gamma(3.0, 0.5, size),
                            rng.poisson(den * rate) * 1.0))
    num[rng.random(size) < 0.03] = np.nan
    df = pd.DataFrame({
        "indicator_id": np.char.add("IND", ind.astype(str)),
        "org_level": np.where(lvl == 0, "england", np.char.add("level", lvl.astype(str))),
        "org_code": np.char.add(np.char.add("L", lvl.astype(str)),
                                np.char.add("O", org[who].astype(str))),
        "period": pd.Timestamp("2024-01-01") + pd.to_timedelta(31 * month, unit="D"),
        "period_type": np.array(["month", "rolling_12m"])[ptype],
        "numerator": num,
        "denominator": den,
        "kind": kind,
        "multiplier": np.array([MULTIPLIERS[k] for k in KINDS])[ind % 4],
        "improvement_direction": np.array(["increase", "decrease", "neutral"])[ind % 3],
    })
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(df["denominator"] > 0, df["numerator"] / df["denominator"], np.nan)
    df["value"] = value * df["multiplier"]
    df.loc[rng.random(len(df)) < 0.08, "value"] = 5.0  # ties
    df["england_value"] = df.groupby(["indicator_id", "period", "period_type"])[
        "value"].transform("median")
    for column in ("indicator_id", "org_level", "org_code", "period_type", "kind",
                   "improvement_direction"):
        df[column] = df[column].astype("str")
    return df


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return random_table(11)


@pytest.fixture(params=["default blocks, one thread", "tiny blocks, four threads"])
def blocks(request, monkeypatch):
    """Run a test on one thread with the default block size, and on four threads with
    blocks of 997 rows (whatever the machine's core count), so that rows of several
    kinds meet inside one block and blocks and groups are shared among threads."""
    if request.param.startswith("tiny"):
        monkeypatch.setattr(validate, "BLOCK_ROWS", 997)
        monkeypatch.setattr(validate, "WORKER_THREADS", 4)
        monkeypatch.setattr(validate, "available_cores", lambda: 4)
        monkeypatch.setattr(funnels, "_THREADED_MINIMUM", 64)
    else:
        monkeypatch.setattr(validate, "WORKER_THREADS", 1)
    return request.param


# --------------------------------------------------------------------------- references


def reference_intervals(df: pd.DataFrame, levels=(0.95, 0.998)) -> dict[str, np.ndarray]:
    """Wilson and exact/Byar Poisson limits, formula by formula, kind by kind."""
    x = df["numerator"].to_numpy(float)
    n = df["denominator"].to_numpy(float)
    m = df["multiplier"].to_numpy(float)
    kind = df["kind"].to_numpy(object)
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for level in levels:
            z = Z[level]
            alpha = 1 - level
            wl = (2 * x + z**2 - z * np.sqrt(z**2 + np.maximum(4 * x * (1 - x / n), 0))) / (
                2 * (n + z**2))
            wu = (2 * x + z**2 + z * np.sqrt(z**2 + np.maximum(4 * x * (1 - x / n), 0))) / (
                2 * (n + z**2))
            wl = np.where(n > 0, np.clip(wl, 0, 1), np.nan) * m
            wu = np.where(n > 0, np.clip(wu, 0, 1), np.nan) * m
            o1 = x + 1
            byar_l = x * (1 - 1 / (9 * x) - z / (3 * np.sqrt(x))) ** 3
            byar_u = o1 * (1 - 1 / (9 * o1) + z / (3 * np.sqrt(o1))) ** 3
            exact_l = np.where(x == 0, 0.0, sps.chi2.ppf(alpha / 2, 2 * x) / 2)
            exact_u = sps.chi2.ppf(1 - alpha / 2, 2 * x + 2) / 2
            pl = np.where(x >= 10, byar_l, exact_l) * np.where(n > 0, m / n, np.nan)
            pu = np.where(x >= 10, byar_u, exact_u) * np.where(n > 0, m / n, np.nan)
            is_prop = kind == "proportion"
            is_count = (kind == "rate") | (kind == "ratio")
            label = f"{level * 100:.10g}".replace(".", "_")
            out[f"lower_{label}"] = np.where(is_prop, wl, np.where(is_count, pl, np.nan))
            out[f"upper_{label}"] = np.where(is_prop, wu, np.where(is_count, pu, np.nan))
    return out


def reference_percentiles(df: pd.DataFrame, value="value") -> np.ndarray:
    """OpenPrescribing percentiles with pandas' min rank, group by group."""
    grouped = df.groupby(GROUPS, dropna=False)[value]
    rank = grouped.rank(method="min")
    n = grouped.transform("count")
    return np.where(n > 1, (rank - 1) / (n - 1) * 100, np.nan)


def reference_deciles(df: pd.DataFrame, value="value") -> pd.DataFrame:
    """numpy.quantile (linear) of each group's non-missing values."""
    rows = []
    for keys, part in df.groupby(GROUPS, sort=False, dropna=False):
        values = part[value].dropna().to_numpy()
        deciles = (np.quantile(values, np.arange(1, 10) / 10) if len(values)
                   else np.full(9, np.nan))
        rows.append((*keys, len(values), *deciles))
    columns = [*GROUPS, "n_organisations"] + [f"decile_{d}" for d in range(10, 100, 10)]
    return pd.DataFrame(rows, columns=columns)


def interpolated_poisson_quantile(p: float, mean: np.ndarray) -> np.ndarray:
    """Spiegelhalter's interpolated Poisson quantile from SciPy's discrete quantile and CDF."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sps.poisson.ppf(p, mean)
        at, below = sps.poisson.cdf(r, mean), sps.poisson.cdf(r - 1, mean)
        return np.maximum(r - (at - p) / (at - below), 0.0)


def reference_funnel(df: pd.DataFrame, levels=(0.95, 0.998), overdispersion=True,
                     transform="sqrt", winsorise=0.1) -> dict[str, np.ndarray]:
    """Spiegelhalter's funnel written out for one group at a time."""
    size = len(df)
    out: dict[str, np.ndarray] = {name: np.full(size, np.nan) for name in (
        "funnel_target", "funnel_phi", "funnel_tau2")}
    out["funnel_adjusted"] = np.zeros(size, dtype=bool)
    for level in levels:
        label = f"{level * 100:.10g}".replace(".", "_")
        out[f"funnel_lower_{label}"] = np.full(size, np.nan)
        out[f"funnel_upper_{label}"] = np.full(size, np.nan)
        out[f"funnel_flag_{label}"] = np.full(size, None, dtype=object)
    kinds = df["kind"].to_numpy(object)
    multipliers = df["multiplier"].to_numpy(float)
    numerators = df["numerator"].to_numpy(float)
    denominators = df["denominator"].to_numpy(float)
    for rows in df.groupby(GROUPS, sort=False, dropna=False).indices.values():
        kind, mult = kinds[rows[0]], multipliers[rows[0]]
        x, n = numerators[rows], denominators[rows]
        usable = (n > 0) & np.isfinite(x) & np.isfinite(n)
        total_n = n[usable].sum()
        p0 = x[usable].sum() / total_n if total_n > 0 else np.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "proportion":
                s = 1 / (2 * np.sqrt(n))
                z = (np.arcsin(np.sqrt(x / n)) - np.arcsin(np.sqrt(p0))) / s
            elif transform == "sqrt":
                s = 1 / (2 * np.sqrt(p0 * n))
                z = 2 * (np.sqrt(x) - np.sqrt(p0 * n))
            else:
                s = 1 / np.sqrt(p0 * n)
                z = np.sqrt(p0 * n) * np.log(x / (p0 * n))
        scored = usable & np.isfinite(z) & np.isfinite(s) & (s > 0)
        k = int(scored.sum())
        phi, tau2 = np.nan, 0.0
        if overdispersion and k:
            lo, hi = np.quantile(z[scored], [winsorise, 1 - winsorise])
            z_w = np.clip(z[scored], lo, hi)
            if k >= 2:
                phi = np.mean(z_w**2)
                w = 1 / s[scored] ** 2
                spread = w.sum() - (w**2).sum() / w.sum()
                excess = k * phi - (k - 1)
                tau2 = excess / spread if excess > 0 and spread > 0 else 0.0
        adjusted = overdispersion and tau2 > 0
        # Limits exist wherever the denominator does, even without a numerator.
        n_safe = np.where((n > 0) & np.isfinite(n), n, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(usable, x / n, np.nan) * mult
            for level in levels:
                z_level, alpha = Z[level], 1 - level
                if kind == "proportion" and not adjusted:
                    half = z_level * np.sqrt(p0 * (1 - p0) / n_safe)
                    low, high = np.clip(p0 - half, 0, 1), np.clip(p0 + half, 0, 1)
                elif kind == "proportion":
                    half = z_level * np.sqrt(1 / (4 * n_safe) + tau2)
                    centre = np.arcsin(np.sqrt(p0))
                    low = np.sin(np.clip(centre - half, 0, np.pi / 2)) ** 2
                    high = np.sin(np.clip(centre + half, 0, np.pi / 2)) ** 2
                elif not adjusted and kind == "none":
                    low = high = np.full(len(rows), np.nan)  # not counts: no Poisson limits
                elif not adjusted:
                    e = p0 * n_safe  # NaN when the group has no target
                    low = interpolated_poisson_quantile(alpha / 2, e) / n_safe
                    high = interpolated_poisson_quantile(1 - alpha / 2, e) / n_safe
                elif transform == "sqrt":
                    half = z_level * np.sqrt(1 / (4 * p0 * n_safe) + tau2)
                    low, high = p0 * np.maximum(1 - half, 0) ** 2, p0 * (1 + half) ** 2
                else:
                    half = z_level * np.sqrt(1 / (p0 * n_safe) + tau2)
                    low, high = p0 * np.exp(-half), p0 * np.exp(half)
                label = f"{level * 100:.10g}".replace(".", "_")
                low, high = low * mult, high * mult
                flag = np.where(value < low, "below", np.where(value > high, "above", "inside"))
                known = np.isfinite(value) & np.isfinite(low) & np.isfinite(high)
                out[f"funnel_lower_{label}"][rows] = low
                out[f"funnel_upper_{label}"][rows] = high
                out[f"funnel_flag_{label}"][rows] = np.where(known, flag, None)
        out["funnel_target"][rows] = p0 * mult
        out["funnel_phi"][rows] = phi
        out["funnel_tau2"][rows] = tau2
        out["funnel_adjusted"][rows] = adjusted
    return out


def assert_close(actual, expected, rtol=1e-12, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float),
                               rtol=rtol, atol=atol, equal_nan=True)


def assert_flags_agree(actual: pd.Series, expected: np.ndarray, value, lower, upper):
    """Flags equal, except where the value sits within rounding of a limit."""
    near = np.isclose(value, lower, rtol=1e-9) | np.isclose(value, upper, rtol=1e-9)
    a, e = (np.array([None if pd.isna(v) else v for v in flags], dtype=object)
            for flags in (actual, expected))
    differ = (a != e) & ~near
    assert not differ.any(), pd.DataFrame({"actual": a, "expected": e})[differ].head()


# --------------------------------------------------------------------------- tests


def test_intervals_match_formula_by_formula(table, blocks):
    out = calculate_intervals(table)
    for name, expected in reference_intervals(table).items():
        assert_close(out[name], expected, rtol=1e-13)


def test_comparison_matches_plain_rules(table, blocks):
    out = calculate_comparison(calculate_intervals(table))
    for label in ("95", "99_8"):
        lower, upper = out[f"lower_{label}"], out[f"upper_{label}"]
        target = out["england_value"]
        usable = lower.notna() & upper.notna() & target.notna() & (out["org_level"] != "england")
        side = np.select([lower > target, upper < target], ["higher", "lower"], "similar")
        expected = np.where(usable, side, None).tolist()
        actual = out[f"england_comparison_{label}"]
        assert actual.astype(object).where(actual.notna(), None).tolist() == expected
        better = {"increase": {"higher": "better", "lower": "worse"},
                  "decrease": {"higher": "worse", "lower": "better"},
                  "neutral": {"higher": "higher", "lower": "lower"}}
        assessment = [None if s is None else ("similar" if s == "similar" else better[d][s])
                      for s, d in zip(expected, out["improvement_direction"])]
        actual = out[f"england_assessment_{label}"]
        assert actual.astype(object).where(actual.notna(), None).tolist() == assessment


def test_percentiles_match_pandas_min_rank(table, blocks):
    out = assign_percentiles_and_deciles(table)
    np.testing.assert_array_equal(out["percentile"].to_numpy(), reference_percentiles(table))
    np.testing.assert_array_equal(assign_percentiles(table)["percentile"].to_numpy(),
                                  reference_percentiles(table))


def test_percentiles_with_many_small_groups_match_pandas(table, blocks):
    # ~2 rows per group takes the one-global-sort branch rather than group by group.
    keys = ["org_code", "indicator_id", "period_type"]
    out = assign_percentiles(table, group_columns=keys)
    grouped = table.groupby(keys)["value"]
    rank, n = grouped.rank(method="min"), grouped.transform("count")
    np.testing.assert_array_equal(out["percentile"].to_numpy(),
                                  np.where(n > 1, (rank - 1) / (n - 1) * 100, np.nan))


def test_deciles_match_numpy_quantile_per_group(table, blocks):
    expected = reference_deciles(table)
    got = calculate_deciles(table)
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_dtype=False)
    per_row = assign_percentiles_and_deciles(table)
    lookup = expected.set_index(GROUPS)
    joined = table[GROUPS].join(lookup, on=GROUPS)
    for d in range(10, 100, 10):
        np.testing.assert_array_equal(per_row[f"decile_{d}"].to_numpy(),
                                      joined[f"decile_{d}"].to_numpy())


@pytest.mark.parametrize("options", [
    {},
    {"overdispersion": False},
    {"count_transform": "log"},
    {"winsorise": 0.25},
], ids=["adjusted", "unadjusted", "log", "winsorise-25"])
def test_funnel_limits_match_group_by_group_reference(table, blocks, options):
    data = table if options.get("overdispersion", True) else table[table["kind"] != "none"]
    out = calculate_funnel_limits(data, kind="kind", multiplier="multiplier", **options)
    expected = reference_funnel(
        data, overdispersion=options.get("overdispersion", True),
        transform=options.get("count_transform", "sqrt"), winsorise=options.get("winsorise", 0.1))
    np.testing.assert_array_equal(out["funnel_adjusted"].to_numpy(), expected["funnel_adjusted"])
    for column in ("funnel_target", "funnel_phi", "funnel_tau2"):
        assert_close(out[column], expected[column], rtol=1e-9)
    value = np.where(data["denominator"] > 0, data["numerator"] / data["denominator"], np.nan)
    value = value * data["multiplier"].to_numpy()
    for label in ("95", "99_8"):
        lower, upper = f"funnel_lower_{label}", f"funnel_upper_{label}"
        assert_close(out[lower], expected[lower], rtol=1e-9, atol=1e-12)
        assert_close(out[upper], expected[upper], rtol=1e-9, atol=1e-12)
        assert_flags_agree(out[f"funnel_flag_{label}"], expected[f"funnel_flag_{label}"],
                           value, out[lower].to_numpy(), out[upper].to_numpy())


def test_funnel_parameters_agree_with_row_limits(table, blocks):
    params = calculate_funnel_parameters(table, kind="kind", multiplier="multiplier")
    rows = calculate_funnel_limits(table, kind="kind", multiplier="multiplier")
    first = rows.drop_duplicates(GROUPS)[GROUPS + ["funnel_target", "funnel_tau2"]]
    merged = params.merge(first, on=GROUPS, suffixes=("", "_row"))
    assert len(merged) == len(params) == table.groupby(GROUPS).ngroups
    assert_close(merged["funnel_target"], merged["funnel_target_row"], rtol=0)
    assert_close(merged["funnel_tau2"], merged["funnel_tau2_row"], rtol=0)
    usable = table[(table["denominator"] > 0) & table["numerator"].notna()]
    expected = usable.groupby(GROUPS, sort=False)["denominator"].agg(["min", "max"])
    indexed = params.set_index(GROUPS)
    got = indexed.loc[expected.index]
    np.testing.assert_array_equal(got["denominator_min"], expected["min"])
    np.testing.assert_array_equal(got["denominator_max"], expected["max"])
    # Groups without a usable row have no denominator range.
    empty = indexed.drop(index=expected.index)
    assert len(empty) > 0
    assert empty["denominator_min"].isna().all() and empty["denominator_max"].isna().all()


def test_results_do_not_depend_on_block_size(table, monkeypatch):
    def everything():
        out = calculate_comparison(calculate_intervals(table))
        out = assign_percentiles_and_deciles(out)
        return calculate_funnel_limits(out, kind="kind", multiplier="multiplier")

    default = everything()
    monkeypatch.setattr(validate, "BLOCK_ROWS", 101)
    pd.testing.assert_frame_equal(everything(), default, check_exact=True)


def test_exact_poisson_limits_equal_scipy_chi2_including_threaded(monkeypatch):
    monkeypatch.setattr(funnels, "_THREADED_MINIMUM", 1000)  # several threads, small array
    rng = np.random.default_rng(5)
    expected = np.concatenate([rng.lognormal(1.0, 3.0, 5000), [0.0, 1e-9, 0.5, np.nan, -1.0]])
    for level in (0.95, 0.998):
        alpha = 1 - level
        lower, upper = poisson_exact_control_limits(expected, level)
        with np.errstate(invalid="ignore"):
            ref_lower = np.where(expected > 0, sps.chi2.ppf(alpha / 2, 2 * expected) / 2, 0.0)
            ref_upper = sps.chi2.ppf(1 - alpha / 2, 2 * expected + 2) / 2
        bad = ~(np.isfinite(expected) & (expected >= 0))
        np.testing.assert_array_equal(lower, np.where(bad, np.nan, ref_lower))
        np.testing.assert_array_equal(upper, np.where(bad, np.nan, ref_upper))


def test_group_codes_number_the_same_groups_either_way(table):
    in_order, n_in_order = validate.group_codes(table, GROUPS, "test")
    any_order, n_any = validate.group_codes(table, GROUPS, "test", in_order_of_appearance=False)
    expected = table.groupby(GROUPS, sort=False, dropna=False).ngroup().to_numpy()
    np.testing.assert_array_equal(in_order, expected)
    assert n_in_order == n_any == expected.max() + 1
    # any_order is a relabelling of the same partition
    pairs = pd.DataFrame({"a": in_order, "b": any_order}).drop_duplicates()
    assert len(pairs) == n_in_order and pairs["b"].nunique() == n_in_order
    first = _first_row_of_each_group(in_order)
    np.testing.assert_array_equal(first, pd.Series(in_order).drop_duplicates().index)


def test_group_codes_keep_missing_keys_as_their_own_group():
    df = pd.DataFrame({"a": pd.array(["x", None, "x", None, "y"], dtype="str"),
                       "b": [1.0, 1.0, np.nan, np.nan, 1.0]})
    codes, n_groups = validate.group_codes(df, ["a", "b"], "test")
    expected = df.groupby(["a", "b"], sort=False, dropna=False).ngroup().to_numpy()
    np.testing.assert_array_equal(codes, expected)
    assert n_groups == 5


def test_factorised_columns_are_remembered_only_while_unchanged():
    df = pd.DataFrame({"kind": pd.array(["rate", "proportion"] * 3, dtype="str"),
                       "numerator": [5.0, 1, 5, 1, 5, 1], "denominator": [10.0] * 6,
                       "multiplier": 1.0})
    first = calculate_intervals(df, confidence=0.95)
    derived = df.assign(extra=1)  # shares the Arrow array of "kind"
    codes_a, _ = validate.factorize_column(df, "kind")
    codes_b, _ = validate.factorize_column(derived, "kind")
    assert codes_a is codes_b  # remembered, not recomputed
    changed = df.copy()
    changed.loc[0, "kind"] = "proportion"  # a new Arrow array: factorised afresh
    second = calculate_intervals(changed, confidence=0.95)
    assert first.loc[0, "upper_95"] > 1 and second.loc[0, "upper_95"] < 1
    codes_c, uniques_c = validate.factorize_column(changed, "kind")
    assert codes_c is not codes_a and list(uniques_c[codes_c[:2]]) == ["proportion"] * 2
    # Entries go when their array does (dropped at the next use of the cache).
    before = len(validate._FACTORIZE_CACHE)
    del df, derived, first, codes_a, codes_b
    gc.collect()
    validate.factorize_column(changed, "kind")
    assert len(validate._FACTORIZE_CACHE) < before


def test_numpy_backed_key_columns_are_never_stale():
    df = pd.DataFrame({"g": np.array([1, 1, 2, 2]), "value": [1.0, 2.0, 3.0, 4.0]})
    assert assign_percentiles(df, group_columns="g")["percentile"].tolist() == [0, 100, 0, 100]
    df.loc[1, "g"] = 2  # changed in place
    out = assign_percentiles(df, group_columns="g")["percentile"].tolist()
    assert np.isnan(out[0]) and out[1:] == [0.0, 50.0, 100.0]


def test_remembered_group_codes_follow_changes_to_any_key_column():
    df = pd.DataFrame({"g": pd.array(["a", "a", "b", "b"], dtype="str"),
                       "month": pd.to_datetime(["2024-01-01"] * 4),
                       "value": [1.0, 2.0, 3.0, 4.0]})
    keys = ["g", "month"]
    first, _ = validate.group_codes(df, keys, "test")
    again, _ = validate.group_codes(df.assign(other=0), keys, "test")
    assert again is first  # a derived frame shares the columns: codes reused
    assert not first.flags.writeable
    changed_text = df.copy()
    changed_text.loc[1, "g"] = "b"
    changed_date = df.copy()
    changed_date.loc[0, "month"] = pd.Timestamp("2024-02-01")
    for changed, expected in ((changed_text, [0, 1, 1, 1]), (changed_date, [0, 1, 2, 2])):
        codes, n_groups = validate.group_codes(changed, keys, "test")
        assert codes.tolist() == expected and n_groups == max(expected) + 1
    validate.clear_caches()
    fresh, _ = validate.group_codes(df, keys, "test")
    assert fresh is not first and fresh.tolist() == first.tolist()
    # An entry goes once its text column does.
    lonely = pd.DataFrame({"g": pd.array(["x", "y"], dtype="str"),
                           "month": pd.to_datetime(["2024-01-01"] * 2)})
    validate.clear_caches()
    lonely_codes, _ = validate.group_codes(lonely, keys, "test")
    del lonely, lonely_codes
    gc.collect()
    validate.group_codes(changed_date, keys, "test")  # drops the dead entry, adds its own
    assert len(validate._GROUP_CACHE) == 1


@pytest.mark.parametrize(("kind", "column", "value", "message"), [
    ("proportion", "numerator", -1.0, "calculate_wilson_interval: column 'numerator' has 1 neg"),
    ("rate", "numerator", 2.5, "calculate_intervals: column 'numerator' has 1 non-whole"),
    ("ratio", "denominator", np.inf, "calculate_intervals: column 'denominator' has 1 inf"),
    ("proportion", "numerator", 1e9, "calculate_wilson_interval: 1 row"),
    ("rate", "multiplier", 0.0, "calculate_intervals: multiplier column"),
])
def test_interval_checks_name_the_method_of_the_kind_at_fault(table, kind, column, value,
                                                              message):
    bad = table.copy()
    bad.loc[bad.index[bad["kind"] == kind][0], column] = value
    with pytest.raises(ValueError, match=message):
        calculate_intervals(bad)


def test_interval_checks_ignore_rows_without_intervals(table):
    # ADQ-like rows ("none") get no interval, so their numbers are not checked.
    odd = table.copy()
    none_rows = odd.index[odd["kind"] == "none"][:3]
    odd.loc[none_rows, ["numerator", "multiplier"]] = [[2.5, 0.0], [-1.0, 0.0], [np.inf, 0.0]]
    out = calculate_intervals(odd)
    assert out.loc[none_rows, "lower_95"].isna().all()
    kept = odd.index.difference(none_rows)
    pd.testing.assert_frame_equal(out.loc[kept], calculate_intervals(table).loc[kept],
                                  check_exact=True)


def test_remembered_entries_need_the_very_same_arrow_array():
    # Python may give a new array the id of a dead one: an entry keyed on that
    # id but made for another array must be ignored.
    validate.clear_caches()
    other = pa.chunked_array([["zzz", "zzz"]])
    df = pd.DataFrame({"k": pd.array(["a", "b"], dtype="str"),
                       "month": pd.to_datetime(["2024-01-01"] * 2)})
    arrow = df["k"].array.__arrow_array__()
    validate._FACTORIZE_CACHE[id(arrow)] = (
        weakref.ref(other), np.array([0, 0], dtype=np.int8), pd.Index(["zzz"]))
    codes, uniques = validate.factorize_column(df, "k")
    assert codes.tolist() == [0, 1] and list(uniques) == ["a", "b"]

    keys = tuple(validate._column_identity(df[c])[0] for c in ("k", "month"))
    validate._GROUP_CACHE[(keys, True, 2)] = {
        "codes": np.array([0, 0]), "n_groups": 1, "held": [weakref.ref(other), df["month"]]}
    codes, n_groups = validate.group_codes(df, ["k", "month"], "test")
    assert codes.tolist() == [0, 1] and n_groups == 2
    validate.clear_caches()


# --------------------------------------------------------------------------- threads and shortcuts


def everything(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every per-row step and the group tables, as the national run chains them."""
    out = calculate_comparison(calculate_intervals(df))
    out = assign_percentiles_and_deciles(out)
    counts = df[df["kind"] != "none"]
    return {
        "chained": calculate_funnel_limits(out, kind="kind", multiplier="multiplier"),
        "unadjusted": calculate_funnel_limits(counts, kind="kind", multiplier="multiplier",
                                              overdispersion=False),
        "interpolated": calculate_funnel_limits(counts, kind="kind", multiplier="multiplier",
                                                overdispersion=False,
                                                poisson_method="interpolated"),
        "own target": calculate_funnel_limits(df, kind="kind", multiplier="multiplier",
                                              target="england_value", count_transform="log"),
        "parameters": calculate_funnel_parameters(df, kind="kind", multiplier="multiplier"),
        "deciles": calculate_deciles(df),
        "percentiles": assign_percentiles(df),
        "small groups": assign_percentiles_and_deciles(
            df, group_columns=["org_code", "indicator_id", "period_type"]),
    }


@pytest.mark.parametrize("seed", [11, 4])
def test_threads_and_blocks_do_not_change_any_result(seed, monkeypatch):
    # One thread and one block per step is the plain path; many small blocks
    # and groups shared among four threads must give the very same bits.
    df = random_table(seed)
    monkeypatch.setattr(validate, "WORKER_THREADS", 1)
    monkeypatch.setattr(validate, "BLOCK_ROWS", len(df) + 1)
    plain = everything(df)
    monkeypatch.setattr(validate, "WORKER_THREADS", 4)
    monkeypatch.setattr(validate, "available_cores", lambda: 4)
    monkeypatch.setattr(validate, "BLOCK_ROWS", 613)
    monkeypatch.setattr(funnels, "_THREADED_MINIMUM", 64)
    threaded = everything(df)
    for name, frame in plain.items():
        pd.testing.assert_frame_equal(threaded[name], frame, check_exact=True, obj=name)


def test_small_counts_read_from_the_table_equal_chi2():
    # Counts below 10 take exact limits from a table of 0..9; counts that are
    # whole only to within the checks' tolerance are worked out on their own.
    counts = np.array([0, 1, 2, 3, 9, 2.0000000001, 8.9999999999, 10, 11, 250, np.nan, 4, 0])
    levels = (0.95, 0.998, 0.9)
    for level, (lower, upper) in zip(levels, intervals._poisson_count_limits_at(counts, levels)):
        alpha, z = 1 - level, sps.norm.ppf(0.5 + level / 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            exact_lower = np.where(counts == 0, 0.0, sps.chi2.ppf(alpha / 2, 2 * counts) / 2)
            exact_upper = sps.chi2.ppf(1 - alpha / 2, 2 * counts + 2) / 2
            byar_lower = counts * (1 - 1 / (9 * counts) - z / (3 * np.sqrt(counts))) ** 3
            o1 = counts + 1
            byar_upper = o1 * (1 - 1 / (9 * o1) + z / (3 * np.sqrt(o1))) ** 3
        big = counts >= 10
        np.testing.assert_array_equal(lower, np.where(big, byar_lower, exact_lower))
        np.testing.assert_array_equal(upper, np.where(big, byar_upper, exact_upper))
    # The near-whole counts really differ from the whole ones next to them.
    lower, _ = intervals.poisson_count_limits(np.array([2.0, 2.0000000001]), 0.95)
    assert lower[0] != lower[1]


def test_funnel_group_values_come_from_every_row(table):
    # Organisations are counted by leaving out the unusable rows; the
    # multiplier and kind of a group are read off its first row and every
    # other row is checked against them.
    params = calculate_funnel_parameters(table, kind="kind", multiplier="multiplier")
    usable = table[(table["denominator"] > 0) & table["numerator"].notna()]
    counted = usable.groupby(GROUPS, sort=False).size()
    got = params.set_index(GROUPS)["funnel_organisations"]
    np.testing.assert_array_equal(got.loc[counted.index].to_numpy(), counted.to_numpy())
    assert (got.drop(index=counted.index) == 0).all()
    group = table.groupby(GROUPS, sort=False).indices
    rows = next(r for r in group.values() if len(r) > 3)
    later = table.index[rows[-1]]  # not the group's first row
    odd = table.copy()
    odd.loc[later, "multiplier"] = 7.0
    with pytest.raises(ValueError, match="multiplier differs"):
        calculate_funnel_limits(odd, kind="kind", multiplier="multiplier")
    odd = table.copy()
    other = "rate" if odd.loc[later, "kind"] != "rate" else "ratio"
    odd.loc[later, "kind"] = other
    odd.loc[later, "multiplier"] = odd.loc[table.index[rows[0]], "multiplier"]
    odd.loc[later, "numerator"] = np.round(odd.loc[later, "numerator"])
    with pytest.raises(ValueError, match="mixes indicator kinds"):
        calculate_funnel_parameters(odd, kind="kind", multiplier="multiplier")


@pytest.mark.parametrize("kind", ["funnel", "intervals"])
def test_checks_in_blocks_count_and_name_every_bad_row(table, monkeypatch, kind):
    monkeypatch.setattr(validate, "BLOCK_ROWS", 97)
    monkeypatch.setattr(validate, "available_cores", lambda: 4)
    bad = table.copy()
    proportions = bad.index[bad["kind"] == "proportion"]
    first, last = proportions[3], proportions[-2]  # far apart: different blocks
    bad.loc[[first, last], "numerator"] = -2.0
    if kind == "funnel":
        with pytest.raises(ValueError, match=rf"2 negative value\(s\) \(first at index {first}"):
            calculate_funnel_limits(bad, kind="kind", multiplier="multiplier")
    else:
        with pytest.raises(ValueError, match=rf"2 negative value\(s\) \(first at index {first}"):
            calculate_intervals(bad)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_group_chunks_cover_every_group_once_in_order(monkeypatch, threads):
    monkeypatch.setattr(validate, "WORKER_THREADS", threads)
    monkeypatch.setattr(validate, "available_cores", lambda: 4)
    rng = np.random.default_rng(threads)
    for sizes in (rng.integers(0, 50, 200), np.array([5]), np.array([0, 0, 7]),
                  np.array([1000, 1, 1, 1]), np.array([], dtype=np.int64)):
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        chunks = validate.group_chunks(starts, sizes)
        covered = [g for chunk in chunks for g in chunk]
        assert covered == list(range(len(sizes)))
        assert all(len(chunk) for chunk in chunks)
        if threads == 1:
            assert len(chunks) <= 1


def test_parallel_helpers_keep_order_raise_and_nest(monkeypatch):
    monkeypatch.setattr(validate, "WORKER_THREADS", 4)
    monkeypatch.setattr(validate, "available_cores", lambda: 4)
    monkeypatch.setattr(validate, "BLOCK_ROWS", 10)
    mask = np.zeros(95, dtype=bool)
    mask[[3, 4, 57, 94]] = True  # blocks 0, 5 and 9 have rows; the rest are skipped
    assert validate.map_blocks(lambda b: np.asarray(b).tolist(), 95, mask) == [[3, 4], [57], [94]]

    def inner(block):  # a parallel call inside a worker runs in line: no deadlock
        return sum(validate.map_blocks(lambda b: b.stop - b.start, 30))

    assert validate.map_blocks(inner, 95) == [30] * 10

    def fail(block):
        if block.start == 50:
            raise ValueError("block 50 failed")

    with pytest.raises(ValueError, match="block 50 failed"):
        validate.map_blocks(fail, 95)
