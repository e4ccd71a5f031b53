"""Benchmark moopt.stats on a synthetic table the size of a national run.

Builds, with NumPy, an indicator table of 20 indicators x ~7,700 organisations
(practices, PCNs, sub-ICBs, ICBs, regions, England) x 24 months x 2 period
types (about 7.4 million rows), then times:

1. the per-row statistics: confidence intervals, comparison with England,
   percentiles and deciles, funnel limits (with and without the
   overdispersion adjustment);
2. the per-series work for every sub-ICB monthly series (106 x 20): SPC,
   STL seasonal adjustment, GLM trend per year and the recent-trend marker;
   plus SPC for every monthly series of every level, to show the
   vectorised path at scale.

Run:  .venv/bin/python benchmarks/bench_stats.py            (national size)
      .venv/bin/python benchmarks/bench_stats.py --quick    (a tenth of the practices)

Targets: per-row statistics about a second per step for millions of rows;
series work well under a minute.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import numpy as np
import pandas as pd

from moopt import stats

LEVEL_SIZES = {  # organisations per level and a typical registered list size
    "practice": (6_300, 9_500),
    "pcn": (1_250, 48_000),
    "sub_icb": (106, 540_000),
    "icb": (42, 1_360_000),
    "region": (7, 8_200_000),
    "england": (1, 57_000_000),
}
# (kind, multiplier, improvement direction, typical monthly value per patient or share)
INDICATOR_SPECS = (
    [("proportion", 100.0, "decrease", 0.25)] * 5
    + [("proportion", 100.0, "increase", 0.6)] * 4
    + [("rate", 1000.0, "decrease", 0.05)] * 6
    + [("ratio", 1.0, "decrease", 0.08)] * 2
    + [("none", 1.0, "neutral", 1.5)] * 3
)
MONTHS = 24
PERIOD_TYPES = ("month", "rolling_12m")


@contextmanager
def timed(label: str, rows: int | None, results: list):
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    rate = f"{rows / seconds:>14,.0f} rows/s" if rows else ""
    print(f"  {label:<52s}{seconds:8.2f} s {rate}")
    results.append((label, seconds))


def _strings(values: np.ndarray) -> pd.Series:
    """A str column built through category codes (fast for few distinct values)."""
    uniques, codes = np.unique(values, return_inverse=True)
    return pd.Categorical.from_codes(codes, list(uniques)).astype("str")


def build_table(practices: int, seed: int = 2024) -> pd.DataFrame:
    """A tidy indicator table with realistic sizes and overdispersion."""
    rng = np.random.default_rng(seed)
    sizes = dict(LEVEL_SIZES)
    sizes["practice"] = (practices, sizes["practice"][1])
    level_names = list(sizes)
    org_level = np.concatenate([np.full(count, i) for i, (count, _) in enumerate(sizes.values())])
    org_list = np.concatenate(
        [mean * rng.lognormal(-0.18, 0.6, count) for count, mean in sizes.values()]
    )
    n_orgs = len(org_level)
    n_ind = len(INDICATOR_SPECS)
    periods = pd.date_range("2023-01-01", periods=MONTHS, freq="MS").to_numpy()

    # Row order: indicator, organisation, period type, month.
    per_indicator = n_orgs * len(PERIOD_TYPES) * MONTHS
    rows = n_ind * per_indicator
    index = np.arange(rows)
    ind = index // per_indicator
    org = (index // (len(PERIOD_TYPES) * MONTHS)) % n_orgs
    ptype = (index // MONTHS) % len(PERIOD_TYPES)
    month = index % MONTHS

    kinds = np.array([s[0] for s in INDICATOR_SPECS], dtype=object)
    multipliers = np.array([s[1] for s in INDICATOR_SPECS])
    directions = np.array([s[2] for s in INDICATOR_SPECS], dtype=object)
    typical = np.array([s[3] for s in INDICATOR_SPECS])

    # Between-organisation variation (overdispersion) and winter seasonality.
    org_effect = rng.lognormal(0.0, 0.15, (n_ind, n_orgs))[ind, org]
    season = 1.0 + 0.15 * np.cos(2 * np.pi * month / 12)
    months_in = np.where(ptype == 1, 12.0, 1.0)
    list_size = org_list[org]
    kind_row = kinds[ind]
    numerator = np.empty(rows)
    denominator = np.empty(rows)

    prop = kind_row == "proportion"
    denominator[prop] = np.round(list_size[prop] * 0.02 * months_in[prop])
    share = np.clip(typical[ind[prop]] * org_effect[prop], 0.001, 0.999)
    numerator[prop] = rng.binomial(denominator[prop].astype(np.int64), share)

    rate = kind_row == "rate"
    denominator[rate] = list_size[rate]
    mean = list_size[rate] * typical[ind[rate]] * org_effect[rate] * season[rate] * months_in[rate]
    numerator[rate] = rng.poisson(mean / 20) * 1.0  # a rarer item: about 2.5 per 1,000 a month

    ratio = kind_row == "ratio"
    denominator[ratio] = list_size[ratio] * typical[ind[ratio]] * months_in[ratio]
    numerator[ratio] = rng.poisson(denominator[ratio] * org_effect[ratio] * season[ratio]) * 1.0

    none = kind_row == "none"
    denominator[none] = list_size[none]
    numerator[none] = (
        list_size[none] * typical[ind[none]] * org_effect[none] * months_in[none]
        * rng.gamma(50, 1 / 50, none.sum())
    )

    value = numerator / denominator * multipliers[ind]
    # England value per indicator, period type and month (the England row's value).
    england_row = org_level[org] == level_names.index("england")
    england = np.full((n_ind, len(PERIOD_TYPES), MONTHS), np.nan)
    england[ind[england_row], ptype[england_row], month[england_row]] = value[england_row]

    org_codes = np.array([f"O{i:05d}" for i in range(n_orgs)], dtype=object)
    return pd.DataFrame(
        {
            "indicator_id": pd.Categorical.from_codes(
                ind, [f"IND{i:02d}" for i in range(n_ind)]).astype("str"),
            "org_level": pd.Categorical.from_codes(org_level[org], level_names).astype("str"),
            "org_code": pd.Categorical.from_codes(org, org_codes).astype("str"),
            "period": periods[month],
            "period_type": pd.Categorical.from_codes(ptype, list(PERIOD_TYPES)).astype("str"),
            "numerator": numerator,
            "denominator": denominator,
            "value": value,
            "multiplier": multipliers[ind],
            "kind": _strings(kinds[ind]),
            "improvement_direction": _strings(directions[ind]),
            "england_value": england[ind, ptype, month],
        }
    )


def per_row_statistics(table: pd.DataFrame, results: list) -> None:
    rows = len(table)
    print(f"\nPer-row statistics on {rows:,} rows")
    with timed("intervals (Wilson / exact+Byar Poisson by kind)", rows, results):
        out = stats.calculate_intervals(table, kind="kind", multiplier="multiplier")
    with timed("comparison with England (95% and 99.8%)", rows, results):
        out = stats.calculate_comparison(out)
    with timed("percentiles and deciles (one sort)", rows, results):
        out = stats.assign_percentiles_and_deciles(out)
    with timed("funnel limits + flags, overdispersion adjusted", rows, results):
        funnel = stats.calculate_funnel_limits(out, kind="kind", multiplier="multiplier")
    counts = out[out["kind"] != "none"]  # ADQ/cost funnels exist only adjusted
    with timed("funnel limits + flags, unadjusted, count kinds only", len(counts), results):
        stats.calculate_funnel_limits(counts, kind="kind", multiplier="multiplier",
                                      overdispersion=False)
    with timed("funnel parameters + lines (100 points per funnel)", None, results):
        params = stats.calculate_funnel_parameters(table, kind="kind", multiplier="multiplier")
        stats.calculate_funnel_lines(params)
    per_row_total = sum(seconds for _, seconds in results[-6:-2])  # the four main steps
    print(f"  {'total (intervals+comparison+percentiles+funnels)':<52s}"
          f"{per_row_total:8.2f} s {rows / per_row_total:>14,.0f} rows/s")
    flagged = (funnel["funnel_flag_99_8"] != "inside").mean()
    significant = (out["england_comparison_99_8"].isin(["higher", "lower"])).mean()
    print(f"  share outside 99.8% adjusted funnel limits: {flagged:.1%}; "
          f"share 'significantly different' from England at 99.8%: {significant:.1%}")


def series_work(table: pd.DataFrame, results: list) -> None:
    monthly = table[table["period_type"] == "month"]
    sub_icb = monthly[monthly["org_level"] == "sub_icb"].reset_index(drop=True)
    n_series = sub_icb.groupby(["indicator_id", "org_code"]).ngroups
    print(f"\nSeries work on {n_series:,} sub-ICB monthly series ({len(sub_icb):,} rows)")
    start = time.perf_counter()
    with timed("SPC (XmR, four rules, point types)", len(sub_icb), results):
        spc = stats.calculate_spc(sub_icb)
        stats.calculate_spc_summary(spc)
    with timed("STL seasonal adjustment (period 12), per series", len(sub_icb), results):
        adjusted = stats.calculate_seasonal_adjustment(sub_icb)
    with timed("SPC on seasonally adjusted values", len(sub_icb), results):
        stats.calculate_spc(adjusted, value="seasonally_adjusted")
    with timed("GLM trend (quasi-Poisson, month terms, HAC)", len(sub_icb), results):
        trend = stats.calculate_trend_model(sub_icb)
    with timed("recent trend marker (last 5 points)", len(sub_icb), results):
        counts = sub_icb[sub_icb["kind"] != "none"]
        for kind in ("proportion", "rate", "ratio"):
            stats.calculate_recent_trend(counts[counts["kind"] == kind], kind=kind)
    total = time.perf_counter() - start
    print(f"  {'total series work':<52s}{total:8.2f} s")
    results.append(("series total", total))
    print(f"  median change per year across series: {trend['change_per_year'].median():+.1%}")

    print(f"\nSPC for every monthly series of every level ({len(monthly):,} rows)")
    with timed("SPC, all levels", len(monthly), results):
        stats.calculate_spc(monthly)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="630 practices instead of 6,300")
    args = parser.parse_args()
    practices = 630 if args.quick else LEVEL_SIZES["practice"][0]
    results: list = []
    start = time.perf_counter()
    table = build_table(practices)
    print(f"Built synthetic table: {len(table):,} rows, "
          f"{table.memory_usage(deep=True).sum() / 1e9:.2f} GB in "
          f"{time.perf_counter() - start:.1f} s")
    per_row_statistics(table, results)
    series_work(table, results)


if __name__ == "__main__":
    main()
