"""The engine's percentiles, deciles, quartiles and rolling 12-month values against the NumPy oracles.

The indicator engine (Ibis on DuckDB) is the one place builds compute these. Here it runs on
hand-made tables, and on a small store end to end, and every number is checked against the
independent implementations in ``tests/oracles`` and, for the reference example, against the
worked values in ``../shared/reference/statistics.md``.
"""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd
import pytest

import factories as f
from moopt.indicators import load_indicators
from moopt.indicators.engine import DECILES, PARENT_COLUMNS, SPREAD_COLUMNS, IndicatorEngine
from oracles.ranking import assign_deciles, assign_percentiles_and_deciles
from oracles.rolling import calculate_rolling_values

GROUPS = ["indicator_id", "org_level", "period", "period_type"]
SERIES = ["indicator_id", "org_level", "org_code"]
DECIMALS = 6
# statistics.md, "Percentiles and deciles (OpenPrescribing convention)".
WORKED = [0.12, 0.09, 0.15, 0.09, 0.14, 0.075, 0.15, 0.08, 0.10, 0.16, 0.11, 0.13]
WORKED_DECILES = [0.081, 0.09, 0.093, 0.104, 0.115, 0.126, 0.137, 0.148, 0.15]
WORKED_FIRST_PERCENTILE = 54.545455


# --------------------------------------------------------------------------- helpers


def tidy(values, org_level="pcn", indicator_id="X01", period="2025-01-01", period_type="month"):
    """One group of organisations with the given values (None: no value)."""
    return pd.DataFrame({
        "indicator_id": indicator_id, "org_level": org_level,
        "org_code": [f"{org_level[:1].upper()}{i:03d}" for i in range(len(values))],
        "period": pd.Timestamp(period), "period_type": period_type,
        "value": pd.array(values, dtype="Float64").astype("float64"),
    })


def run_benchmarked(frame: pd.DataFrame) -> pd.DataFrame:
    """The engine's ``benchmarked`` step on ``frame``, in an in-memory DuckDB, one row per input row."""
    con = ibis.duckdb.connect()
    try:
        out = IndicatorEngine.benchmarked(con.create_table("values_in", frame)).to_pandas()
    finally:
        con.disconnect()
    assert len(out) == len(frame)
    return out.sort_values([*GROUPS, "org_code"]).reset_index(drop=True)


def oracle_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Percentile and spread by the oracle: among organisations with a value, England left out.

    The lowest and highest values are the 0th and 100th percentiles (linear interpolation
    reads them straight off the sorted values).
    """
    ranked = frame[frame["org_level"] != "england"]
    ranked = assign_percentiles_and_deciles(ranked, group_columns=GROUPS, deciles=DECILES)
    ranked = assign_deciles(ranked, group_columns=GROUPS, deciles=[0, 25, 75, 100]).rename(columns={
        "decile_0": "lowest", "decile_25": "quartile_25", "decile_75": "quartile_75",
        "decile_100": "highest"})
    england = frame[frame["org_level"] == "england"].assign(
        percentile=np.nan, **dict.fromkeys(SPREAD_COLUMNS, np.nan))
    both = pd.concat([ranked, england], ignore_index=True)
    return both.sort_values([*GROUPS, "org_code"]).reset_index(drop=True)


def assert_spread_agrees(engine: pd.DataFrame, oracle: pd.DataFrame) -> None:
    """Percentile and every spread column equal to 6 decimal places, missing in the same rows."""
    keys = [*GROUPS, "org_code"]
    merged = engine.merge(oracle, on=keys, suffixes=("_engine", "_oracle"), validate="one_to_one")
    assert len(merged) == len(engine) == len(oracle)
    for column in ("percentile", *SPREAD_COLUMNS):
        got = merged[f"{column}_engine"].to_numpy(dtype=float)
        want = merged[f"{column}_oracle"].to_numpy(dtype=float)
        differ = ~(np.isclose(got, want, rtol=0, atol=10.0 ** -DECIMALS) | (np.isnan(got) & np.isnan(want)))
        assert not differ.any(), (
            f"{column}: engine and oracle disagree in {int(differ.sum())} row(s), first:\n"
            f"{merged.loc[differ, [*keys, 'value_engine', f'{column}_engine', f'{column}_oracle']].head()}")


# --------------------------------------------------------------------------- percentiles and spread


def test_worked_reference_values():
    engine = run_benchmarked(tidy(WORKED))
    first = engine.set_index("org_code").loc["P000"]
    assert round(first["percentile"], DECIMALS) == WORKED_FIRST_PERCENTILE
    assert [round(first[f"decile_{d}"], DECIMALS) for d in DECILES] == WORKED_DECILES
    assert (first["lowest"], first["highest"]) == (min(WORKED), max(WORKED))
    assert_spread_agrees(engine, oracle_spread(tidy(WORKED)))


def test_ties_share_the_lowest_rank():
    frame = tidy([2.0, 1.0, 2.0, 3.0, 2.0, 1.0])
    engine = run_benchmarked(frame)
    # Sorted 1 1 2 2 2 3: the 2s start at rank 3, so (3 - 1) / 5 x 100 = 40 for each.
    assert engine.loc[engine["value"] == 2.0, "percentile"].tolist() == [40.0, 40.0, 40.0]
    assert engine.loc[engine["value"] == 1.0, "percentile"].tolist() == [0.0, 0.0]
    assert_spread_agrees(engine, oracle_spread(frame))


def test_organisations_without_a_value_have_no_percentile_and_are_not_counted():
    frame = tidy([None, 4.0, 1.0, None, 3.0, 2.0])
    engine = run_benchmarked(frame)
    assert engine.loc[engine["value"].isna(), "percentile"].isna().all()
    # Four values: 1 2 3 4 -> 0, 33.3, 66.7, 100 (the two empty organisations take no rank).
    valued = engine.dropna(subset=["value"]).sort_values("value")
    assert valued["percentile"].round(DECIMALS).tolist() == [0.0, 33.333333, 66.666667, 100.0]
    # Rows without a value still carry their group's spread.
    assert engine["decile_50"].tolist() == [2.5] * 6
    assert_spread_agrees(engine, oracle_spread(frame))


def test_a_single_organisation_has_no_percentile_but_a_spread():
    frame = tidy([None, 7.5, None])
    engine = run_benchmarked(frame)
    assert engine["percentile"].isna().all()
    assert (engine[list(SPREAD_COLUMNS)] == 7.5).all(axis=None)
    assert_spread_agrees(engine, oracle_spread(frame))


def test_a_group_without_values_has_no_spread():
    frame = tidy([None, None])
    engine = run_benchmarked(frame)
    assert engine[["percentile", *SPREAD_COLUMNS]].isna().all(axis=None)
    assert_spread_agrees(engine, oracle_spread(frame))


def test_england_is_neither_ranked_nor_part_of_the_spread():
    frame = pd.concat([tidy([1.0, 2.0, 3.0]), tidy([100.0], org_level="england")], ignore_index=True)
    engine = run_benchmarked(frame)
    england = engine[engine["org_level"] == "england"].iloc[0]
    assert np.isnan(england["percentile"])
    assert engine.loc[engine["org_level"] == "pcn", "highest"].tolist() == [3.0] * 3
    assert_spread_agrees(engine, oracle_spread(frame))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_many_groups_with_ties_and_gaps_agree_with_the_oracle(seed):
    rng = np.random.default_rng(seed)
    parts = []
    for indicator in ("A01", "B02"):
        for level, size in (("practice", 57), ("pcn", 9), ("sub_icb", 2)):
            for period in ("2025-01-01", "2025-02-01"):
                for period_type in ("month", "rolling_12m"):
                    # Two decimals make ties common; about one value in eight is missing.
                    values = rng.gamma(2.0, 3.0, size).round(2).tolist()
                    values = [None if rng.random() < 0.125 else v for v in values]
                    parts.append(tidy(values, level, indicator, period, period_type))
    frame = pd.concat(parts, ignore_index=True)
    assert frame["value"].duplicated().any() and frame["value"].isna().any()
    assert_spread_agrees(run_benchmarked(frame), oracle_spread(frame))


# --------------------------------------------------------------------------- rolling 12 months


def monthly_series(code: str, numerators, denominators, first="2024-01", population=False,
                   multiplier=1000.0, skip=()) -> pd.DataFrame:
    """One organisation's monthly rows, as the engine's level step writes them; ``skip``: months left out."""
    months = [m for m in f.months_between(first, len(numerators)) if m not in skip]
    kept = [i for i, m in enumerate(f.months_between(first, len(numerators))) if m not in skip]
    n = len(months)
    frame = pd.DataFrame({
        "indicator_id": "X01", "month": pd.to_datetime([m + "-01" for m in months]),
        "multiplier": multiplier, "population_denominator": population, "org_level": "practice",
        "org_code": code, "org_name": f"Practice {code}",
        "numerator": pd.array([numerators[i] for i in kept], dtype="Float64").astype("float64"),
        "denominator": pd.array([denominators[i] for i in kept], dtype="Float64").astype("float64"),
        "n_practices": np.ones(n, dtype="int64"),
    })
    for parent in PARENT_COLUMNS:
        frame[parent] = pd.Series([None] * n, dtype="string")
    return frame


def run_rolling(monthly: pd.DataFrame) -> pd.DataFrame:
    """The engine's rolling 12-month rows for ``monthly``."""
    con = ibis.duckdb.connect()
    try:
        out = IndicatorEngine(con, load_indicators()).with_rolling(con.create_table("monthly_in", monthly))
        out = out.filter(out.period_type == "rolling_12m").to_pandas()
    finally:
        con.disconnect()
    return out.sort_values(["org_code", "period"]).reset_index(drop=True)


def oracle_rolling(monthly: pd.DataFrame) -> pd.DataFrame:
    """The oracle's complete 12-month windows: denominators summed, or averaged for populations."""
    parts = []
    for population, rows in monthly.groupby("population_denominator"):
        rolled = calculate_rolling_values(
            rows, period="month", series_columns=SERIES, denominator_method="mean" if population else "sum",
            multiplier="multiplier")
        parts.append(rolled.dropna(subset=["numerator_rolling_12m"]))
    out = pd.concat(parts, ignore_index=True).rename(columns={"month": "period"})
    return out.sort_values(["org_code", "period"]).reset_index(drop=True)


def assert_rolling_agrees(engine: pd.DataFrame, oracle: pd.DataFrame) -> None:
    """The same complete windows, with numerator, denominator and value equal to 6 decimal places."""
    keys = ["org_code", "period"]
    assert engine[keys].values.tolist() == oracle[keys].values.tolist()
    for got, want in (("numerator", "numerator_rolling_12m"), ("denominator", "denominator_rolling_12m"),
                      ("value", "value_rolling_12m")):
        np.testing.assert_allclose(engine[got].to_numpy(dtype=float), oracle[want].to_numpy(dtype=float),
                                   rtol=0, atol=10.0 ** -DECIMALS, err_msg=got)


def test_rolling_sums_and_means_agree_with_the_oracle():
    rng = np.random.default_rng(7)
    months = 20
    monthly = pd.concat([
        # Prescribing denominator: summed over the 12 months.
        monthly_series("A00001", rng.integers(0, 50, months).tolist(), rng.integers(50, 90, months).tolist()),
        # Population denominator: the mean list over the 12 months (STAR-PU of the mean list).
        monthly_series("A00002", rng.integers(0, 50, months).tolist(),
                       rng.integers(900, 1100, months).tolist(), population=True),
        # Eleven months only: no complete window.
        monthly_series("A00003", [5] * 11, [10] * 11),
    ], ignore_index=True)
    engine = run_rolling(monthly)
    assert engine.groupby("org_code").size().to_dict() == {"A00001": 9, "A00002": 9}
    assert_rolling_agrees(engine, oracle_rolling(monthly))


def test_a_missing_month_or_denominator_breaks_every_window_that_holds_it():
    months = 18
    monthly = pd.concat([
        # 2024-05 has no row at all.
        monthly_series("A00001", [3] * months, [10] * months, skip=("2024-05",)),
        # 2024-05 has a row but no denominator (no list size that month).
        monthly_series("A00002", [3] * months, [1000] * 4 + [None] + [1000] * 13, population=True),
    ], ignore_index=True)
    engine = run_rolling(monthly)
    # Windows ending 2024-05 .. 2025-04 hold May 2024; only 2025-05 and 2025-06 are complete.
    assert engine.groupby("org_code")["period"].min().dt.strftime("%Y-%m").to_dict() == {
        "A00001": "2025-05", "A00002": "2025-05"}
    assert_rolling_agrees(engine, oracle_rolling(monthly))


def test_a_month_with_an_unknown_numerator_gives_no_rolling_value():
    months = 13
    monthly = monthly_series("A00001", [4] * 3 + [None] + [4] * 9, [10] * months)
    engine = run_rolling(monthly)
    assert engine.empty, f"rolling values over a month without a numerator:\n{engine[['period', 'numerator']]}"
    assert_rolling_agrees(engine, oracle_rolling(monthly))


# --------------------------------------------------------------------------- end to end on a store


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> pd.DataFrame:
    """indicator_values from the whole engine on four practices over 14 months.

    Amoxicillin items vary by practice and month so that rolling sums and ranks differ; two
    practices share every count (ties); A00004 has no list size in one month (missing values).
    """
    d = tmp_path_factory.mktemp("spread")
    f.write_map(d / "map.csv")
    months = f.months_between("2024-11", 14)
    amox = {"A00001": 10, "A00002": 40, "A00003": 10, "A00004": 12}
    lists = {"A00001": (1000, 500), "A00002": (3000, 0), "A00003": (1000, 500), "A00004": (600, 600)}
    rx, ls = [], []
    for i, month in enumerate(months):
        for p in f.PRACTICES:
            bump = (i * 7 + int(p[-1]) * 3) % 5 if p != "A00003" else (i * 7 + 3) % 5  # A00003 ties A00001
            rx.append(f.epd_row(month, p, "0501013B0AAABAB", amox[p] + bump))
            rx.append(f.epd_row(month, p, "0501013K0AAAJAJ", 1 + i % 3))
            rx.append(f.epd_row(month, p, "0401010Z0AAAAAA", 2, quantity=28, adq=56))
            if not (p == "A00004" and month == months[5]):
                male, female = lists[p]
                ls += f.list_size_rows(month, p, {("MALE", "25_29"): male, ("FEMALE", "70_74"): female})
    f.write_epd(d / "epd.csv", rx)
    f.write_list_sizes(d / "ls.csv", ls)
    return f.run_engine(d)[0]


def test_built_table_spread_agrees_with_the_oracle(built):
    engine = built.sort_values([*GROUPS, "org_code"]).reset_index(drop=True)
    assert engine["percentile"].notna().any() and engine["value"].isna().any()
    oracle = oracle_spread(built.drop(columns=["percentile", *SPREAD_COLUMNS]))
    assert_spread_agrees(engine, oracle)


def test_built_table_rolling_values_agree_with_the_oracle(built):
    definitions = {i.id: i for i in load_indicators() if not i.is_supplied}
    month_rows = built[(built["period_type"] == "month") & built["indicator_id"].isin(definitions)].copy()
    month_rows["population_denominator"] = month_rows["indicator_id"].map(
        lambda i: definitions[i].denominator.is_population)
    month_rows = month_rows.rename(columns={"period": "month"})
    engine = built[built["period_type"] == "rolling_12m"]
    assert not engine.empty
    oracle = oracle_rolling(month_rows)
    keys = [*SERIES, "period"]
    merged = engine.merge(oracle, on=keys, how="outer", suffixes=("", "_oracle"), indicator=True)
    only = merged[merged["_merge"] != "both"]
    assert only.empty, f"complete 12-month windows differ:\n{only[[*keys, '_merge']].head()}"
    for got, want in (("numerator", "numerator_rolling_12m"), ("denominator", "denominator_rolling_12m"),
                      ("value", "value_rolling_12m")):
        np.testing.assert_allclose(merged[got].to_numpy(dtype=float), merged[want].to_numpy(dtype=float),
                                   rtol=0, atol=10.0 ** -DECIMALS, err_msg=got)
