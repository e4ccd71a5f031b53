"""National results stage: time and peak memory, beside the whole-table path it replaced.

Usage::

    python benchmarks/bench_results.py [--store outputs/store/moopt.duckdb] [--whole-table]

The store must hold a built ``indicator_values`` (run ``moopt build`` first;
the default national build gives the figures in the README). Each contender
runs in a fresh subprocess, so its peak resident memory is its own:

* ``results stage``: :func:`moopt.results.compute_results` with DuckDB held to
  2GB as in a build (``data.ingest_memory_limit``), one indicator at a time, every statistic (intervals, funnels and verdicts, peers, savings, SPC
  and trends of the run's level), written to the store's result tables;
* ``whole table`` (``--whole-table``): what the statistics step did before,
  reading all of ``indicator_values`` into pandas and adding intervals and the
  England comparison in one pass (a lower bound on the old step, which also
  added peers and wrote the table back).

Prints seconds, peak RSS and the ratios. With no store it says how to make one.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = """
import json, resource, sys, time
import duckdb
from moopt.indicators.definitions import load_indicators
from moopt.results import SeriesScope, compute_results
con = duckdb.connect(sys.argv[1])
# as in a build: DuckDB held to data.ingest_memory_limit (default 2GB), spilling beside the store
con.execute("SET memory_limit = '2GB'")
level = (con.execute("SELECT org_level FROM run_facts").fetchone() or ["sub_icb"])[0]
started = time.perf_counter()
report = compute_results(con, load_indicators(), SeriesScope(level))
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "rows": report["rows"]["indicator_results"],
                  "phases": report["phase_seconds"], "cpu": resource.getrusage(resource.RUSAGE_SELF).ru_utime,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

WHOLE_TABLE = """
import json, resource, sys, time
import duckdb
from moopt import stats
from moopt.indicators.definitions import load_indicators
con = duckdb.connect(sys.argv[1], read_only=True)
started = time.perf_counter()
table = con.execute("SELECT * FROM indicator_values").fetchdf()
indicators = load_indicators()
table["kind"] = table["indicator_id"].map({i.id: i.value_kind for i in indicators})
table["improvement_direction"] = table["indicator_id"].map({i.id: i.improvement_direction for i in indicators})
table = stats.calculate_intervals(table)
table = stats.calculate_comparison(table)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "rows": len(table),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(code: str, store: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(store)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("outputs/store/moopt.duckdb"))
    parser.add_argument("--whole-table", action="store_true", help="also measure the old whole-table path")
    args = parser.parse_args()
    if not args.store.exists():
        print(f"No store at {args.store}: run `moopt build` (the default national build for the README "
              "figures), then this script.")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        # Work on a copy, so the benchmark never changes the build's store.
        store = Path(scratch) / "moopt.duckdb"
        shutil.copy(args.store, store)
        started = time.perf_counter()
        new = run(RESULTS, store)
        print(f"results stage: {new['rows']:,} rows in {new['seconds']:.1f} s, peak RSS {new['peak_mb']:,.0f} MB "
              f"(wall with start-up {time.perf_counter() - started:.1f} s; process CPU {new['cpu']:.1f} s)", flush=True)
        print("  by phase: " + ", ".join(f"{k} {v:.1f} s" for k, v in new["phases"].items()), flush=True)
        if args.whole_table:
            old = run(WHOLE_TABLE, store)
            print(f"whole table (intervals + comparison only): {old['rows']:,} rows in {old['seconds']:.1f} s, "
                  f"peak RSS {old['peak_mb']:,.0f} MB")
            print(f"ratios, results stage / whole table: time {new['seconds'] / old['seconds']:.2f}, "
                  f"peak memory {new['peak_mb'] / old['peak_mb']:.2f}")
    print(f"(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
