"""Benchmark: how engine time and notebook time grow with data and workers (docs/scaling.md).

Measures, on this machine:

* the indicator engine on DuckDB at 1x, 2x and 4x the small synthetic set, and on PySpark
  (local mode, ``local[2]``, driver memory 1g) at the factors given by ``--spark-factors``.
  A factor k copies every practice k times (new practice and PCN codes, the same sub-ICB
  locations, ICBs and regions), so prescribing rows, practices and PCNs grow k-fold and
  months stay 24;
* notebook throughput of a small build (``--orgs`` sub-ICB locations x 2 themes, plus their
  summaries and the England overview) with 1 and 2 local workers, and with a 2-worker Dask
  ``LocalCluster``, every notebook run (``--force``).

Prints one line per measurement and writes them as JSON (``--json``). Usage:

    python benchmarks/bench_scaling.py [--factors 1,2,4] [--spark-factors 1] [--orgs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import ibis

from moopt.indicators import load_indicators
from moopt.indicators.engine import IndicatorEngine
from moopt.pipeline import make_synthetic
from moopt.store import Store, ingest_files

END, START = datetime.date(2026, 9, 1), datetime.date(2024, 10, 1)
SCALED_TABLES = {  # table -> columns that get the copy's suffix
    "organisations": ("practice_code", "pcn_code"),
    "prescribing": ("practice_code",),
    "list_size": ("practice_code",),
    "practices_without_list_size": ("practice_code",),
}


def base_store(folder: Path) -> Path:
    """The small synthetic set (24 months), ingested with its supplied data."""
    data, store = folder / "synthetic", folder / "base.duckdb"
    if store.exists():
        return store
    make_synthetic(data, "small", 42, "2026-09", 24)
    with Store(store) as s:
        ingest_files(s, data / "organisations" / "gp-reg-pat-prac-map.csv", sorted((data / "epd").glob("*.csv")),
                     sorted((data / "list_sizes").glob("*.csv")), supplied=sorted((data / "supplied").glob("*.csv")),
                     indicators=load_indicators())
    return store


def scaled_store(base: Path, factor: int, target: Path) -> Path:
    """A copy of ``base`` whose practices (and PCNs) appear ``factor`` times under new codes."""
    shutil.copy(base, target)
    con = duckdb.connect(str(target))
    for table, columns in SCALED_TABLES.items():
        names = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
        copies = []
        for k in range(factor):
            cols = [f"{c} || '{k}' AS {c}" if (c in columns and k) else c for c in names]
            copies.append(f"SELECT {', '.join(cols)} FROM {table}")
        con.execute(f"CREATE TABLE _scaled AS {' UNION ALL '.join(copies)}")
        con.execute(f"DROP TABLE {table}")
        con.execute(f"ALTER TABLE _scaled RENAME TO {table}")
    con.execute("CHECKPOINT")
    con.close()
    return target


def rows_of(store: Path) -> int:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM prescribing").fetchall()[0][0]
    finally:
        con.close()


def time_duckdb(store: Path) -> float:
    con = duckdb.connect(str(store))
    try:
        started = time.perf_counter()
        IndicatorEngine(ibis.duckdb.from_connection(con), load_indicators()).run(end_month=END, start_month=START)
        return time.perf_counter() - started
    finally:
        con.close()


def time_spark(store: Path, work: Path) -> dict:
    from moopt.spark_engine import SparkSettings, run_engine_on_spark

    con = duckdb.connect(str(store))
    stages = {}
    started = time.perf_counter()

    def note(message: str) -> None:
        stages[message.split(" [")[0][:60]] = round(time.perf_counter() - started, 1)

    try:
        report = run_engine_on_spark(con, load_indicators(), SparkSettings(), work, END, START, progress=note)
        return {"seconds": report.seconds, "stages": stages}
    finally:
        con.close()


def time_notebooks(project: Path, orgs: int, workers: int, scheduler: str | None = None) -> dict:
    import pandas as pd

    from moopt.config import load_config
    from moopt.pipeline import build

    mapping = pd.read_csv(project / "outputs/data/synthetic/organisations/gp-reg-pat-prac-map.csv")
    codes = sorted(mapping["SUB_ICB_LOCATION_CODE"].unique())[:orgs]
    over = {"organisations": {"codes": codes}, "themes": ["antimicrobials", "safety"], "workers": workers}
    if scheduler:
        over["scheduler"] = scheduler
    config = load_config(project_dir=project, overrides=over)
    result = build(config, render_site=False, force=True)
    failed = [r for r in result.notebooks if r.status != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} notebook(s) failed: {failed[0].error}")
    seconds = result.seconds["notebooks"]
    return {"notebooks": len(result.notebooks), "seconds": seconds, "per_minute": len(result.notebooks) / seconds * 60}


def notebook_project(folder: Path) -> Path:
    """A project folder (the repository's notebooks and parameters) over the same synthetic set."""
    root = Path(__file__).resolve().parents[1]
    project = folder / "project"
    if not project.exists():
        for name in ("notebooks", "parameters"):
            shutil.copytree(root / name, project / name)
        shutil.copy(root / "_quarto.yml", project / "_quarto.yml")
        shutil.copytree(folder / "synthetic", project / "outputs" / "data" / "synthetic")
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default="1,2,4", help="DuckDB engine data factors")
    parser.add_argument("--spark-factors", default="1", help="PySpark engine data factors (empty: none)")
    parser.add_argument("--orgs", type=int, default=3, help="sub-ICB locations in the notebook build (0: skip)")
    parser.add_argument("--keep", help="folder to keep the data in (default: a temporary folder)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="moopt-bench-scaling-"))
    folder.mkdir(parents=True, exist_ok=True)
    figures: dict = {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0], "engine": [],
                     "notebooks": []}
    base = base_store(folder)
    factors = sorted({int(f) for f in args.factors.split(",") if f} | {int(f) for f in args.spark_factors.split(",") if f})
    for factor in factors:
        store = scaled_store(base, factor, folder / f"x{factor}.duckdb")
        rows = rows_of(store)
        if str(factor) in args.factors.split(","):
            seconds = time_duckdb(store)
            figures["engine"].append({"backend": "duckdb", "factor": factor, "rows": rows, "seconds": seconds})
            print(f"engine duckdb   x{factor}: {rows:>10,} prescribing rows  {seconds:7.1f} s", flush=True)
        if str(factor) in args.spark_factors.split(","):
            store = scaled_store(base, factor, folder / f"x{factor}-spark.duckdb")
            spark = time_spark(store, folder / f"spark-x{factor}")
            figures["engine"].append({"backend": "pyspark local[2]", "factor": factor, "rows": rows, **spark})
            print(f"engine pyspark  x{factor}: {rows:>10,} prescribing rows  {spark['seconds']:7.1f} s  "
                  f"(stages, cumulative: {spark['stages']})", flush=True)
    if args.orgs:
        project = notebook_project(folder)
        time_notebooks(project, args.orgs, 2)  # ingest and engine once; the runs below only run notebooks
        for workers in (1, 2):
            run = time_notebooks(project, args.orgs, workers)
            figures["notebooks"].append({"runner": f"local pool, {workers} worker(s)", **run})
            print(f"notebooks local x{workers}: {run['notebooks']} notebooks {run['seconds']:6.1f} s "
                  f"({run['per_minute']:.1f} per minute)", flush=True)
        try:
            import distributed
        except ImportError:
            distributed = None
        if distributed is not None:
            with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                          dashboard_address=None) as cluster:
                run = time_notebooks(project, args.orgs, 2, cluster.scheduler_address)
            figures["notebooks"].append({"runner": "Dask LocalCluster, 2 workers", **run})
            print(f"notebooks dask  x2: {run['notebooks']} notebooks {run['seconds']:6.1f} s "
                  f"({run['per_minute']:.1f} per minute)", flush=True)
    figures["load_average_at_end"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
