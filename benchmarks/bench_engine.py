"""Benchmark: ingest and the indicator engine on a synthetic data set.

Prints rows, seconds and rows per second for ingest (DuckDB validated load)
and for the engine (every indicator at every level and month), and compares
one indicator's practice x month sums against a plain pandas groupby over the
same rows, as a ratio. Usage:

    python benchmarks/bench_engine.py [--scale small|national] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import ibis

from moopt.indicators import load_indicators
from moopt.indicators.engine import IndicatorEngine
from moopt.pipeline import make_synthetic
from moopt.store import Store, ingest_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["small", "national"], default="small")
    parser.add_argument("--keep", help="folder to keep the data in (default: a temporary folder)")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="moopt-bench-"))
    data = folder / "synthetic"
    if not (data / "synthetic_manifest.json").exists():
        started = time.perf_counter()
        make_synthetic(data, args.scale, 42, "2026-09", 24)
        print(f"synthetic {args.scale} data generated in {time.perf_counter() - started:.1f} s")
    epd = sorted(str(p) for p in (data / "epd").glob("*.csv"))
    lists = sorted(str(p) for p in (data / "list_sizes").glob("*.csv"))
    megabytes = sum(Path(p).stat().st_size for p in epd + lists) / 1e6
    store_path = folder / "store.duckdb"
    store_path.unlink(missing_ok=True)

    started = time.perf_counter()
    with Store(store_path) as store:
        reports = ingest_files(store, data / "organisations" / "gp-reg-pat-prac-map.csv", epd, lists)
    seconds = time.perf_counter() - started
    rows = sum(r.rows_read for r in reports)
    print(f"ingest: {rows:,} rows, {megabytes:,.0f} MB in {seconds:.1f} s = "
          f"{rows / seconds:,.0f} rows/s, {megabytes / seconds:,.1f} MB/s")

    backend = ibis.duckdb.connect(str(store_path))
    indicators = [i for i in load_indicators() if not i.is_supplied]
    started = time.perf_counter()
    report = IndicatorEngine(backend, indicators).run()
    seconds = time.perf_counter() - started
    rx_rows = int(backend.table("prescribing").count().execute())
    print(f"engine: {len(indicators)} indicators over {rx_rows:,} prescribing rows -> {report.rows:,} values "
          f"in {seconds:.1f} s ({rx_rows / seconds:,.0f} input rows/s)")

    # Baseline: one indicator's practice x month numerator with pandas, from rows already in memory.
    frame = backend.raw_sql("SELECT practice_code, month, bnf_code, items FROM prescribing").df()
    started = time.perf_counter()
    mask = frame["bnf_code"].str.startswith(("0501013K0", "0501021", "050112"))
    baseline = frame[mask].groupby(["practice_code", "month"])["items"].sum()
    pandas_seconds = time.perf_counter() - started
    started = time.perf_counter()
    one = IndicatorEngine(backend, load_indicators(ids=["AMR02"]))
    backend.create_table("_bench", one.practice_month_long(), overwrite=True)
    engine_seconds = time.perf_counter() - started
    backend.drop_table("_bench", force=True)
    print(f"one indicator, practice x month: pandas (data already in memory) {pandas_seconds:.2f} s, "
          f"engine from the store {engine_seconds:.2f} s, ratio engine/pandas {engine_seconds / pandas_seconds:.2f}"
          f" ({len(baseline):,} practice-months)")
    backend.disconnect()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
