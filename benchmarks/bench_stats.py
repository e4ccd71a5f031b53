"""Benchmark moopt.stats on a synthetic table the size of a national run.

Builds, with NumPy, an indicator table of 20 indicators x ~7,700 organisations
(practices, PCNs, sub-ICBs, ICBs, regions, England) x 24 months x 2 period
types (about 7.4 million rows), then times:

1. the per-row statistics: confidence intervals, comparison with England,
   funnel limits with the overdispersion adjustment (the three "main"
   steps, run ``--repeat`` times), then funnel limits without the
   adjustment, and funnel parameters and lines. Each step prints rows,
   wall-clock seconds (best and median of the runs), CPU seconds (all
   threads), rows per second and the best wall-clock seconds measured
   before the latest speed-up of these steps (see ``BEFORE``);
2. percentiles, deciles and quartiles as builds compute them: the indicator
   engine's ``IndicatorEngine.benchmarked`` step, on the same table in an
   in-memory DuckDB. A plain pandas computation of the same percentiles and
   deciles (groupby rank and groupby quantile) is timed too, their ratio is
   printed (unlike raw seconds, a ratio can be compared between runs on a
   busy machine) and the numbers are compared;
3. the per-series work for every sub-ICB monthly series (106 x 20): SPC,
   STL seasonal adjustment, GLM trend per year and the recent-trend marker;
   plus SPC for every monthly series of every level, to show the
   vectorised path at scale.

Run:  .venv/bin/python benchmarks/bench_stats.py            (national size)
      .venv/bin/python benchmarks/bench_stats.py --quick    (a tenth of the practices)
      .venv/bin/python benchmarks/bench_stats.py --per-row-only --repeat 5

Targets: the three main per-row steps together in about a second for the
national table; series work well under a minute.

The per-row steps work block by block and spread the blocks (and groups)
over up to ``moopt.stats._validate.WORKER_THREADS`` threads, at most one per
core: the thread count used is printed, and CPU seconds count every thread,
so CPU seconds above wall-clock seconds show the work running in parallel.
Each repeat drops the previous repeat's results before it starts, so that
the memory in use is that of one run, as in a real build.

The first run of the main steps also factorises the key columns (indicator,
level, kind, period...) and groups the rows, and touches fresh memory for
its results; later runs on the same table reuse those codes
(``moopt.stats._validate.factorize_column`` and ``group_codes``), as the
later steps of a real run do. Both are printed. Wall-clock time on a shared
machine varies from run to run with the other work on it; CPU seconds vary
less.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from contextlib import contextmanager

import ibis
import numpy as np
import pandas as pd

from moopt import stats
from moopt.indicators.engine import SPREAD_COLUMNS, IndicatorEngine
from moopt.stats._validate import worker_count

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


# Best wall-clock seconds per step on the national table on this 2-core
# machine with the code before the latest speed-up (single-threaded blocks;
# best of 5 runs, one run for the unadjusted funnel). The figures before the
# first speed-up were 0.69, 0.41, 3.73 and 11.7 seconds. (Percentiles and
# deciles, once a NumPy step here at 0.56 s, are the engine's work now.)
BEFORE = {
    "intervals": 0.28,
    "comparison": 0.10,
    "funnel": 1.00,
    "funnel_unadjusted": 5.46,
}
MAIN_STEPS = ("intervals", "comparison", "funnel")
LABELS = {
    "intervals": "intervals (Wilson / exact+Byar Poisson by kind)",
    "comparison": "comparison with England (95% and 99.8%)",
    "engine_spread": "percentiles, deciles, quartiles: engine on DuckDB",
    "funnel": "funnel limits + flags, overdispersion adjusted",
    "funnel_unadjusted": "funnel limits + flags, unadjusted, count kinds",
    "lines": "funnel parameters + lines (100 points per funnel)",
}
GROUP_COLUMNS = ["indicator_id", "org_level", "period", "period_type"]


def _clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: user + system, all threads)."""
    times = os.times()
    return time.perf_counter(), times.user + times.system


def _run(function):
    wall, cpu = _clock()
    result = function()
    wall_end, cpu_end = _clock()
    return result, wall_end - wall, cpu_end - cpu


def _main_steps(table: pd.DataFrame) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Run the three main per-row steps in order; seconds per step and the outputs."""
    timings = {}
    out, *timings["intervals"] = _run(
        lambda: stats.calculate_intervals(table, kind="kind", multiplier="multiplier"))
    out, *timings["comparison"] = _run(lambda: stats.calculate_comparison(out))
    funnel, *timings["funnel"] = _run(
        lambda: stats.calculate_funnel_limits(out, kind="kind", multiplier="multiplier"))
    return timings, out, funnel


def _print_header() -> None:
    print(f"  {'step':<50s}{'rows':>11s}{'best s':>8s}{'median':>8s}{'cpu s':>7s}"
          f"{'rows/s':>13s}{'before s':>10s}{'speed-up':>9s}")


def _print_step(label: str, rows: int, walls: list[float], cpus: list[float],
                before: float | None) -> None:
    best, median = min(walls), statistics.median(walls)
    cpu = cpus[walls.index(best)]
    speed = f"{before / best:8.1f}x" if before else f"{'':9s}"
    print(f"  {label:<50s}{rows:>11,d}{best:8.2f}{median:8.2f}{cpu:7.2f}"
          f"{rows / best:>13,.0f}{f'{before:.2f}' if before else '':>10}{speed}")


def pandas_percentile_baseline(table: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Percentiles and per-row deciles the plain pandas way (groupby rank / quantile)."""
    grouped = table.groupby(GROUP_COLUMNS, sort=False)["value"]
    rank = grouped.rank(method="min")
    count = grouped.transform("count")
    percentile = np.where(count > 1, (rank - 1) / (count - 1) * 100, np.nan)
    deciles = grouped.quantile(np.arange(1, 10) / 10).unstack()
    deciles.columns = [f"decile_{d}" for d in range(10, 100, 10)]
    per_row = table[GROUP_COLUMNS].join(deciles, on=GROUP_COLUMNS)
    return percentile, per_row


def engine_spread(table: pd.DataFrame) -> tuple[pd.DataFrame, float, float]:
    """The engine's percentiles and spread of ``table``, in the table's row order; wall and CPU seconds.

    Only the engine's work inside DuckDB (materialising ``benchmarked``, as a
    build does in its store) is timed, not moving the table in and out.
    """
    keys = [*GROUP_COLUMNS, "org_code"]
    con = ibis.duckdb.connect()
    try:
        values = con.create_table("bench_values", table[[*keys, "value"]])
        _, wall, cpu = _run(lambda: con.create_table(
            "bench_benchmarked", IndicatorEngine.benchmarked(values)))
        out = con.table("bench_benchmarked").select(*keys, "percentile", *SPREAD_COLUMNS).to_pandas()
    finally:
        con.disconnect()
    return table[keys].merge(out, on=keys, how="left"), wall, cpu


def percentiles_in_the_engine(table: pd.DataFrame, results: list) -> None:
    """Time the engine's percentiles and spread, and check them against plain pandas."""
    print(f"\nPercentiles, deciles and quartiles in the indicator engine ({len(table):,} rows)")
    _print_header()
    out, wall, cpu = engine_spread(table)
    _print_step(LABELS["engine_spread"], len(table), [wall], [cpu], None)
    results.append((LABELS["engine_spread"], wall))
    # Plain pandas: same numbers, the straightforward way. England is a level of its own
    # that the engine neither ranks nor spreads, so the comparison leaves it out.
    (percentile, deciles), pandas_wall, _ = _run(lambda: pandas_percentile_baseline(table))
    ranked = (table["org_level"] != "england").to_numpy()
    same = np.allclose(percentile[ranked], out["percentile"].to_numpy(dtype=float)[ranked],
                       rtol=1e-12, equal_nan=True) and all(
        np.allclose(deciles[c].to_numpy()[ranked], out[c].to_numpy(dtype=float)[ranked],
                    rtol=1e-12, equal_nan=True)
        for c in deciles.columns if c.startswith("decile_"))
    print(f"  plain pandas percentiles + deciles (groupby rank, groupby quantile): "
          f"{pandas_wall:.2f} s; engine {wall:.2f} s: pandas / engine = {pandas_wall / wall:.1f}; "
          f"same numbers: {'yes' if same else 'NO'}")
    results.append(("pandas percentile baseline", pandas_wall))


def per_row_statistics(
    table: pd.DataFrame, results: list, repeat: int = 3, national: bool = True
) -> None:
    """Time the per-row steps; ``national`` False leaves out the (national) before figures."""
    before = BEFORE if national else dict.fromkeys(BEFORE)
    rows = len(table)
    print(f"\nPer-row statistics on {rows:,} rows: the three main steps run {repeat} time(s) "
          f"on up to {worker_count()} thread(s); seconds are wall-clock (best and median), "
          "cpu s is the best run's CPU time")
    walls = {step: [] for step in MAIN_STEPS}
    cpus = {step: [] for step in MAIN_STEPS}
    totals, cpu_totals = [], []
    out = funnel = None
    for _ in range(repeat):
        del out, funnel  # one run's results in memory at a time
        gc.collect()
        timings, out, funnel = _main_steps(table)
        for step, (wall, cpu) in timings.items():
            walls[step].append(wall)
            cpus[step].append(cpu)
        totals.append(sum(wall for wall, _ in timings.values()))
        cpu_totals.append(sum(cpu for _, cpu in timings.values()))
    _print_header()
    for step in MAIN_STEPS:
        _print_step(LABELS[step], rows, walls[step], cpus[step], before[step])
        results.append((LABELS[step], min(walls[step])))
    best_total, median_total = min(totals), statistics.median(totals)
    comparison = ""
    if national:
        before_total = sum(BEFORE[step] for step in MAIN_STEPS)
        comparison = f"{before_total:>10.2f}{before_total / best_total:8.1f}x"
    cpu_total = cpu_totals[totals.index(best_total)]
    print(f"  {'total of the three main steps':<50s}{rows:>11,d}{best_total:8.2f}"
          f"{median_total:8.2f}{cpu_total:7.2f}{rows / best_total:>13,.0f}{comparison}")
    print(f"  (first run, key columns factorised and grouped from scratch: {totals[0]:.2f} s, "
          f"cpu {cpu_totals[0]:.2f} s)")
    results.append(("per-row total", best_total))

    counts = out[out["kind"] != "none"]  # ADQ/cost funnels exist only adjusted
    _, wall, cpu = _run(lambda: stats.calculate_funnel_limits(
        counts, kind="kind", multiplier="multiplier", overdispersion=False))
    _print_step(LABELS["funnel_unadjusted"], len(counts), [wall], [cpu],
                before["funnel_unadjusted"])
    results.append((LABELS["funnel_unadjusted"], wall))
    params, wall, cpu = _run(
        lambda: stats.calculate_funnel_parameters(table, kind="kind", multiplier="multiplier"))
    _, wall_lines, cpu_lines = _run(lambda: stats.calculate_funnel_lines(params))
    _print_step(LABELS["lines"], rows, [wall + wall_lines], [cpu + cpu_lines], None)
    results.append((LABELS["lines"], wall + wall_lines))

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
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of the three main per-row steps (default 3)")
    parser.add_argument("--per-row-only", action="store_true",
                        help="skip the per-series work (SPC, STL, GLM)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    practices = 630 if args.quick else LEVEL_SIZES["practice"][0]
    results: list = []
    start = time.perf_counter()
    table = build_table(practices)
    print(f"Built synthetic table: {len(table):,} rows, "
          f"{table.memory_usage(deep=True).sum() / 1e9:.2f} GB in "
          f"{time.perf_counter() - start:.1f} s")
    per_row_statistics(table, results, repeat=args.repeat, national=not args.quick)
    percentiles_in_the_engine(table, results)
    if not args.per_row_only:
        series_work(table, results)


if __name__ == "__main__":
    main()
